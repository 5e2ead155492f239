// Matryoshka diffusion (src/resolution/matryoshka.ts, src/models/nested-unet.ts) on tiny configs:
// the nested U-Net's shapes and its one-way inner -> outer path, the schedule shift per level
// against simple diffusion's formula, the nested loss against a hand computation, independent
// noise per level, progressive growth, sampling with several samplers, checkpoint round trip
// and exact resume, and the CLI (train --nested, sample --resolution).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { full } from '../src/engine/create';
import { avgPool2d } from '../src/engine/functional';
import { Generator } from '../src/engine/random';
import { setNumThreads } from '../src/engine/runtime';
import { keep, noGrad, tidy } from '../src/engine/scope';
import { Tensor } from '../src/engine/tensor';
import { resolutionShift, shiftDiscreteVP } from '../src/core/schedules';
import { NestedUNet } from '../src/models/nested-unet';
import { nestedUnetFlops, unetFlops } from '../src/models/flops';
import { activeLevels, nestedLayout, nestedLoss, NestedNetwork, NestedPrecond, pack, packedSize, pyramid, unpack } from '../src/resolution/matryoshka';
import { buildDenoiser, buildSchedule, generateSamples } from '../src/training/build';
import { loadModel } from '../src/training/checkpoint';
import { resolveTrainConfig, TrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';
import { runQuick } from './cli-run';

setNumThreads(1);
let root: string;
const saved = process.env.DIFFUSE_CACHE_DIR;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-mdm-'));
  process.env.DIFFUSE_CACHE_DIR = path.join(root, 'cache');
});
after(() => {
  if (saved === undefined) delete process.env.DIFFUSE_CACHE_DIR;
  else process.env.DIFFUSE_CACHE_DIR = saved;
  fs.rmSync(root, { recursive: true, force: true });
});

const CORE = { inChannels: 3, modelChannels: 8, groups: 4, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [], midAttention: false };
const maxAbsDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());

/** Random weights everywhere (the zero-initialized output convs would hide every path). */
function randomize(net: NestedUNet, seed = 1): void {
  const g = new Generator(seed);
  noGrad(() => {
    for (const p of net.parameters()) tidy(() => void p.copy_(g.randnLike(p).mul(0.2)));
  });
}

test('the nested U-Net: one output per level, and any prefix of the levels runs alone (progressive training)', () => {
  const net = new NestedUNet({ core: { ...CORE, imageSize: 8 }, resolutions: [8, 16, 32] }, { generator: new Generator(0) });
  randomize(net);
  tidy(() => {
    const g = new Generator(2);
    const xs = [8, 16, 32].map((r) => g.randn([2, 3, r, r]));
    const c = full([2], 10);
    const outs = net.forward(xs, c);
    assert.deepEqual(
      outs.map((o) => o.shape),
      [
        [2, 3, 8, 8],
        [2, 3, 16, 16],
        [2, 3, 32, 32],
      ],
    );
    const two = net.forward(xs.slice(0, 2), c);
    const one = net.forward(xs.slice(0, 1), c);
    assert.deepEqual(
      two.map((o) => o.shape[2]),
      [8, 16],
    );
    assert.deepEqual(
      one.map((o) => o.shape[2]),
      [8],
    );
    assert.throws(() => net.forward([xs[1]], c), /input 0 must have shape \[B, 3, 8, 8\]/);
    assert.throws(() => net.forward([], c), /expected 1\.\.3 inputs/);
  });
  net.dispose();
});

test('the inner features reach the outer output: perturbing the 8 px input changes the 32 px output', () => {
  const net = new NestedUNet({ core: { ...CORE, imageSize: 8 }, resolutions: [8, 16, 32] }, { generator: new Generator(0) });
  randomize(net);
  tidy(() => {
    const g = new Generator(3);
    const xs = [8, 16, 32].map((r) => g.randn([2, 3, r, r]));
    const c = full([2], 10);
    const a = net.forward(xs, c);
    const b = net.forward([xs[0].add(g.randnLike(xs[0])), xs[1], xs[2]], c);
    assert.ok(maxAbsDiff(a[2], b[2]) > 1e-3, 'the 32 px output must depend on the 8 px input');
    const d = net.forward([xs[0], xs[1], xs[2].add(g.randnLike(xs[2]))], c);
    assert.ok(maxAbsDiff(a[0], d[0]) > 1e-3, 'the 32 px features are added into the core too (MDM Fig. 2)');
  });
  net.dispose();
});

test('schedule shift per level: sigma_r = sigma (r / r_0), i.e. logSNR_r = logSNR + 2 ln(r_0 / r) (simple diffusion)', () => {
  const layout = nestedLayout(3, [16, 32, 64]);
  for (const [l, r] of layout.resolutions.entries()) {
    const expected = Math.exp(-(2 * Math.log(16 / r)) / 2);
    assert.ok(Math.abs(layout.scales[l] - expected) < 1e-12);
    assert.ok(Math.abs(layout.scales[l] - r / 16) < 1e-12);
  }
  // The discrete schedule each level trains on is the base one shifted by resolutionShift(16, r).
  const base = buildSchedule(resolveTrainConfig({ data: 'emoji', imageSize: 64, nested: [16, 32, 64], betaSchedule: 'cosine' }))!;
  const at64 = shiftDiscreteVP(base, resolutionShift({ base: 16, resolution: 64 }));
  for (const t of [0, 100, 500, 999]) {
    const lambda = (s: number) => -2 * Math.log(s);
    assert.ok(Math.abs(lambda(at64.sigmas[t]) - (lambda(base.sigmas[t]) + 2 * Math.log(16 / 64))) < 1e-9);
    assert.ok(Math.abs(at64.sigmas[t] / base.sigmas[t] - layout.scales[2]) < 1e-9);
  }
  // The nested model's sampling sigma is the smallest resolution's: the unshifted schedule (no shiftBase).
  const plain = buildSchedule(resolveTrainConfig({ data: 'emoji', imageSize: 16, betaSchedule: 'cosine' }))!;
  assert.deepEqual(Array.from(base.sigmas), Array.from(plain.sigmas));
});

/** A network that records its inputs and returns them (with c_skip 0, c_out 1, c_in 1: x0_hat = x). */
function spy(): NestedNetwork & { seen: Tensor[] } {
  const s = {
    seen: [] as Tensor[],
    forward: (xs: Tensor[]) => {
      s.seen.forEach((t) => t.dispose());
      s.seen = xs.map((x) => keep(x.clone()));
      return xs.map((x) => x.clone());
    },
  };
  return s;
}
const IDENTITY: NestedPrecond = {
  coefficients: (s) => ({ cSkip: s.mul(0), cOut: s.mul(0).add(1), cIn: s.mul(0).add(1), cNoise: s }),
  noiseLevel: (s) => s.clone(),
};

test('the nested loss is the weighted sum of the per-level terms (hand-checked), with independent noise per level', () => {
  const layout = nestedLayout(3, [16, 32, 64]);
  const net = spy();
  const sigma0 = 0.5;
  const sampleSigma = (b: number) => full([b], sigma0);
  const weights = [1, 0.5, 2];
  tidy(() => {
    const x0 = new Generator(7).randn([4, 3, 64, 64]).clamp(-1, 1);
    const x0s = pyramid(x0, layout.resolutions);
    assert.equal(maxAbsDiff(x0s[0], avgPool2d(x0, 4)), 0);
    const r = nestedLoss(net, IDENTITY, layout, x0s, { generator: new Generator(11), target: 'x0', sampleSigma, weights });
    // By hand: the same generator draws n^16, n^32, n^64 in order; x0_hat - x0 = sigma_r n^r.
    const g = new Generator(11);
    const n = x0s.map((x) => g.randnLike(x));
    let bySample = full([4], 0);
    n.forEach((nl, l) => {
      const term = nl
        .mul(sigma0 * layout.scales[l])
        .square()
        .mean([1, 2, 3]); // [B]
      assert.ok(Math.abs(term.mean().item() - r.terms[l].item()) < 1e-6);
      bySample = bySample.add(term.mul(weights[l]));
    });
    assert.ok(maxAbsDiff(bySample, r.perSample) < 1e-5);
    assert.ok(Math.abs(r.loss.item() - weights.reduce((s, w, l) => s + w * r.terms[l].item(), 0)) < 1e-5);
    // The network saw x^r = x0^r + sigma_r n^r: recover the noises and check they are not each other's pooling.
    const rec = net.seen.map((x, l) => x.sub(x0s[l]).div(sigma0 * layout.scales[l]));
    rec.forEach((nl, l) => assert.ok(maxAbsDiff(nl, n[l]) < 1e-4));
    const corr = (a: Tensor, b: Tensor) => {
      const [u, v] = [a.reshape([-1]), b.reshape([-1])];
      return u.mul(v).mean().item() / Math.sqrt(u.square().mean().item() * v.square().mean().item());
    };
    assert.ok(Math.abs(corr(rec[0], avgPool2d(rec[1], 2))) < 0.1);
    assert.ok(Math.abs(corr(rec[1], avgPool2d(rec[2], 2))) < 0.1);
    assert.ok(Math.abs(corr(rec[0], avgPool2d(rec[2], 4))) < 0.1);
  });
});

test('pack / unpack: y^r = x^r / k_r, and a prefix of the levels packs alone', () => {
  const layout = nestedLayout(3, [8, 16, 32]);
  tidy(() => {
    const g = new Generator(1);
    const xs = [8, 16, 32].map((r) => g.randn([2, 3, r, r]));
    const y = pack(xs, layout);
    assert.deepEqual(y.shape, [2, packedSize(layout)]);
    assert.ok(maxAbsDiff(y.narrow(1, 3 * 64, 3 * 256), xs[1].reshape([2, -1]).div(2)) < 1e-7);
    unpack(y, layout).forEach((x, l) => assert.ok(maxAbsDiff(x, xs[l]) < 1e-6));
    assert.equal(unpack(pack(xs.slice(0, 2), layout), layout).length, 2);
    assert.throws(() => unpack(g.randn([2, 5]), layout), /packed state has 192, 960, 4032 numbers per sample/);
  });
});

test('nestedUnetFlops: the core plus each outer level, by hand', () => {
  const net = new NestedUNet({
    core: { inChannels: 1, imageSize: 4, modelChannels: 2, groups: 1, channelMult: [1], numResBlocks: 1, attentionResolutions: [], midAttention: false },
    resolutions: [4, 8],
  });
  // The core alone is unetFlops' hand-checked one-level U-Net (test/resolution-cascade.test.ts): 15,968.
  assert.equal(nestedUnetFlops(net, 1), unetFlops(net.core, 4));
  assert.equal(unetFlops(net.core, 4), 15968);
  // The 8 px level (2 channels, 1 block): conv_in 1->2 2304; encoder res 2->2 2 x 4608 + emb 64; strided down conv at 4x4 1152;
  // to_inner 1x1 128; up conv at 8x8 4608; two decoder res 4->2: 9216 + 4608 + 1x1 skip 1024 + emb 64 each; out_conv 2->1 2304.
  assert.equal(nestedUnetFlops(net), 15968 + 2304 + 9280 + 1152 + 128 + 4608 + 2 * 14912 + 2304);
  net.dispose();
});

test('progressive growth: levels grow every nestedGrow steps', () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 99].map((k) => activeLevels(k, 2, 3)),
    [1, 1, 2, 2, 3, 3, 3],
  );
  assert.equal(activeLevels(0, 0, 3), 3);
  assert.throws(() => activeLevels(0, -1, 3), /grow must be a non-negative integer/);
});

const tiny = (over: Record<string, unknown>): TrainConfig =>
  resolveTrainConfig({
    data: 'emoji:google',
    imageSize: 16,
    nested: [8, 16],
    dataLimit: 32,
    batchSize: 4,
    model: { type: 'unet', modelChannels: 8, groups: 4, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [], midAttention: false },
    warmupSteps: 1,
    sampleEvery: 0,
    checkpointEvery: 0,
    sampleCount: 2,
    sampleSteps: 2,
    threads: 1,
    ...over,
  });
const snapshot = (ts: Tensor[]) => ts.map((t) => t.clone());
const changed = (a: Tensor[], b: Tensor[]) => a.some((t, i) => maxAbsDiff(t, b[i]) > 0);

test('progressive training: the outer level is frozen (not updated) before its growth step, trained after; resume is exact', async () => {
  const out = path.join(root, 'grow');
  const t = Trainer.create(tiny({ nestedGrow: 2, steps: 2, out }), { log: null });
  const net = t.net as NestedUNet;
  const [core0, outer0] = [snapshot(net.levelParameters(0)), snapshot(net.levelParameters(1))];
  await t.run();
  assert.ok(changed(core0, net.levelParameters(0)), 'the core trains from the start');
  assert.ok(!changed(outer0, net.levelParameters(1)), 'the outer level must stay as initialized before step 2');
  t.dispose();
  const r = Trainer.create(tiny({ nestedGrow: 2, steps: 4, out }), { log: null, resume: out });
  const rnet = r.net as NestedUNet;
  assert.ok(!changed(outer0, rnet.levelParameters(1)));
  const resumed = await r.run();
  assert.ok(changed(outer0, rnet.levelParameters(1)), 'the outer level trains once grown');
  const resumedWeights = snapshot(rnet.parameters());
  r.dispose();
  // The same 4 steps uninterrupted: the same losses and weights, bit for bit.
  const u = Trainer.create(tiny({ nestedGrow: 2, steps: 4, out: path.join(root, 'straight') }), { log: null });
  const straight = await u.run();
  assert.deepEqual(straight.losses.slice(2), resumed.losses.slice(2));
  assert.ok(!changed(resumedWeights, u.net.parameters()));
  // Each level's loss term per step: NaN before its growth, summing to the loss (weights 1), and restored exactly on resume.
  const levels = u.levelLosses!;
  assert.deepEqual(
    levels.map((h) => h.map(Number.isNaN)),
    [
      [false, false, false, false],
      [true, true, false, false],
    ],
  );
  for (let k = 0; k < 4; k++) assert.ok(Math.abs(levels[0][k] + (k < 2 ? 0 : levels[1][k]) - straight.losses[k]) < 1e-5, `step ${k + 1}: the terms sum to the loss`);
  assert.deepEqual(r.levelLosses, levels);
  u.dispose();
});

test('sampling at every nested resolution with several samplers; the checkpoint round trip gives the same denoiser', async () => {
  const out = path.join(root, 'run');
  const c = tiny({ steps: 2, out });
  const t = Trainer.create(c, { log: null });
  await t.run();
  const loaded = loadModel(out);
  tidy(() => {
    const y = new Generator(5).randn([2, 3 * (64 + 256)]);
    const s = full([2], 2.5);
    const a = buildDenoiser(t.config, t.emaNetwork())(y, s);
    const b = loaded.denoiser(y, s);
    assert.equal(maxAbsDiff(a, b), 0);
  });
  assert.equal(loaded.meta.network.type, 'nested');
  for (const sampler of ['ddpm', 'ddim', 'euler', 'heun', 'dpmpp-2m', 'euler-ancestral'])
    for (const r of [8, 16]) {
      const x = generateSamples(loaded.denoiser, loaded.meta.config, { shape: [3, r, r], n: 3, seed: 0, steps: 3, labels: [0, 1, 9], sampler, batchSize: 2 });
      assert.deepEqual(x.shape, [3, 3, r, r], sampler);
      const [lo, hi] = tidy(() => [x.min().item(), x.max().item()]);
      assert.ok(lo >= -1 - 1e-6 && hi <= 1 + 1e-6 && Number.isFinite(lo + hi), `${sampler} at ${r}: values in [${lo}, ${hi}]`);
      x.dispose();
    }
  assert.throws(() => generateSamples(loaded.denoiser, loaded.meta.config, { shape: [3, 4, 4], n: 1, seed: 0, steps: 2, labels: [0] }), /samples at 8, 16 px/);
  loaded.net.dispose();
  t.dispose();
});

test('CLI: train --nested 8,16 --nested-grow 1, then sample --resolution 8 and 16 (with guidance)', async () => {
  // prettier-ignore
  const TINY = ['--data', 'emoji:google', '--image-size', '16', '--data-limit', '32', '--batch-size', '4', '--model-channels', '8', '--groups', '4',
    '--channel-mult', '1,2', '--attention-resolutions', 'none', '--no-mid-attention', '--warmup-steps', '1', '--sample-every', '0', '--checkpoint-every', '0', '--threads', '1'];
  const run = path.join(root, 'cli');
  let r = await runQuick(root, 'train', ...TINY, '--nested', '8,16', '--nested-grow', '1', '--nested-weights', '1,0.5', '--steps', '2', '--out', run);
  assert.equal(r.code, 0, r.err);
  for (const [res, size] of [
    ['8', 8],
    ['16', 16],
  ] as const) {
    r = await runQuick(root, 'sample', run, '--n', '2', '--steps', '2', '--resolution', res, '--guidance', '2', '--sampler', 'dpmpp-2m', '--out-dir', `each${res}`);
    assert.equal(r.code, 0, r.err);
    const png = fs.readFileSync(path.join(root, `each${res}`, '000000.png'));
    assert.equal(png.readUInt32BE(16), size); // the IHDR width
  }
  // info: the nested network's cost and one loss line per resolution (the 16 px level grew at step 2, so it has 1 step)
  r = await runQuick(root, 'info', run);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /nested unet \(Matryoshka\).*; \d+\.\d{3} GFLOP per sample forward \(every level\)/);
  assert.match(r.out, /loss 8 px +first 100 steps [\d.]+, .*\(2 steps\)\nloss 16 px +first 100 steps [\d.]+, .*\(1 steps\)/);
  r = await runQuick(root, 'sample', run, '--n', '1', '--steps', '2', '--resolution', '32');
  assert.equal(r.code, 2);
  assert.match(r.err, /--resolution 32: expected one of this model's resolutions, 8, 16/);
  r = await runQuick(root, 'train', ...TINY, '--nested', '8,32', '--steps', '1', '--out', path.join(root, 'bad'));
  assert.equal(r.code, 2);
  assert.match(r.err, /nested.*twice the one before/);
  r = await runQuick(root, 'train', ...TINY, '--nested', '8,16', '--nested-weights', '1', '--steps', '1', '--out', path.join(root, 'bad'));
  assert.match(r.err, /nestedWeights.*expected 2 non-negative numbers/);
});
