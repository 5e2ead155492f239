// Cascaded diffusion (issue 14): the noise-conditioning augmentation against its formula (mean
// and variance of the corrupted condition, for a fixed s and for s ~ U[0, augMax]); the blur
// against an explicit 3 x 3 convolution; the super-resolution U-Net's conditioning path (the
// low-res image and s both change the output); an exact Gaussian super-resolution denoiser, whose
// samples are known, run through every sampler and every guidance method with the condition in
// cond; the cascade end to end, independent of the batching; and a trained SR stage's checkpoint
// read back to the same denoiser.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { full, Generator, keep, noGrad, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import * as F from '../src/engine/functional';
import { Conditioning, Denoiser, expandSigma } from '../src/core/denoiser';
import { karrasSigmas } from '../src/core/schedules';
import { UNet } from '../src/models/unet';
import { unetFlops } from '../src/models/flops';
import { SAMPLERS } from '../src/sampling';
import { sampleInBatches } from '../src/sampling/generate';
import { seededNoise } from '../src/sampling/noise';
import { autoguidance, classifierFreeGuidance, classifierGuidance, ClassLogProb } from '../src/guidance';
import { augCoefficients, downsample, gaussianBlur3, noiseAugment, samplingCondition, trainingCondition } from '../src/resolution/super-res';
import { CascadeStage, sampleCascade } from '../src/resolution/cascade';
import { resolveTrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';
import { loadModel } from '../src/training/checkpoint';
import { buildDenoiser } from '../src/training/build';

setNumThreads(1);

const vals = (t: Tensor): number[] => Array.from(t.toFloat64Array());
const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
const variance = (a: number[]) => {
  const m = mean(a);
  return a.reduce((s, v) => s + (v - m) ** 2, 0) / a.length;
};
const close = (a: number, b: number, tol: number, what = '') => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tol ${tol})`);

describe('noise-conditioning augmentation (CDM Sec. 4.2)', () => {
  test('z_s = cos(pi s/2) x + sin(pi s/2) eps: mean and variance at a fixed s match the formula', () =>
    tidy(() => {
      const c = 0.4;
      const x = full([64, 3, 16, 16], c);
      for (const s of [0, 0.1, 0.3, 0.6]) {
        const z = vals(noiseAugment(x, full([64], s), new Generator(1)));
        const [a, sg] = [Math.cos((Math.PI * s) / 2), Math.sin((Math.PI * s) / 2)];
        const se = sg / Math.sqrt(z.length); // standard error of the mean
        close(mean(z), a * c, 5 * se + 1e-7, `mean at s = ${s}`);
        close(variance(z), sg ** 2, 5 * sg ** 2 * Math.sqrt(2 / z.length) + 1e-12, `variance at s = ${s}`);
      }
      const { alpha, sigma } = augCoefficients(tensor([0, 1]));
      assert.deepEqual(
        vals(alpha).map((v) => Math.round(v * 1e6) / 1e6 + 0),
        [1, 0],
      );
      assert.deepEqual(
        vals(sigma).map((v) => Math.round(v * 1e6) / 1e6 + 0),
        [0, 1],
      );
    }));

  test('training: s ~ U[0, augMax]; each sample is corrupted at its own returned level; the pooled moments match E[alpha], E[alpha^2]', () =>
    tidy(() => {
      const [c, aMax, B] = [0.5, 0.5, 512];
      const x = full([B, 3, 32, 32], c);
      const { lowRes, augLevel } = trainingCondition(x, 16, { augMax: aMax, blur: false, generator: new Generator(3) });
      assert.deepEqual(lowRes.shape, [B, 3, 16, 16]);
      const s = vals(augLevel);
      assert.ok(
        s.every((v) => v >= 0 && v <= aMax),
        'inside the bounded range',
      );
      close(mean(s), aMax / 2, (5 * aMax) / Math.sqrt(12 * B), 'E s = augMax / 2');
      // per sample: mean over its 768 pixels = cos(pi s_b / 2) c within 5 standard errors
      const perSample = vals(lowRes.reshape([B, -1]).mean([1]));
      perSample.forEach((m, b) => close(m, Math.cos((Math.PI * s[b]) / 2) * c, (5 * Math.sin((Math.PI * s[b]) / 2)) / Math.sqrt(768) + 1e-6, `sample ${b}`));
      // pooled over s ~ U[0, a]: E alpha = 2 sin(pi a/2) / (pi a), E alpha^2 = 1/2 + sin(pi a) / (2 pi a)
      const Ea = (2 * Math.sin((Math.PI * aMax) / 2)) / (Math.PI * aMax);
      const Ea2 = 0.5 + Math.sin(Math.PI * aMax) / (2 * Math.PI * aMax);
      const z = vals(lowRes);
      close(mean(z), c * Ea, 0.01, 'pooled mean c E[alpha]');
      close(variance(z), 1 - Ea2 + c * c * (Ea2 - Ea * Ea), 0.01, 'pooled variance E[sigma^2] + c^2 Var(alpha)');
    }));

  test('augMax 0: the condition is the average-pooled image itself and s = 0', () =>
    tidy(() => {
      const x = new Generator(5).randn([4, 3, 32, 32]);
      const { lowRes, augLevel } = trainingCondition(x, 8, { augMax: 0, blur: false, generator: new Generator(0) });
      assert.deepEqual(vals(lowRes), vals(F.avgPool2d(x, 4)));
      assert.deepEqual(vals(augLevel), [0, 0, 0, 0]);
      // a hand computation: the mean of one 4 x 4 block
      const block = vals(x.select(0, 1).select(0, 2).narrow(0, 4, 4).narrow(1, 8, 4));
      close(vals(lowRes.select(0, 1).select(0, 2))[1 * 8 + 2], mean(block), 1e-6, 'block (1, 2)');
      assert.throws(() => downsample(x, 5), /size must divide the image side 32/);
    }));

  test('the 3 x 3 blur is the Gaussian kernel convolution inside, keeps constants, and its std per sample', () =>
    tidy(() => {
      const x = new Generator(2).randn([2, 3, 9, 9]);
      const stds = [0.4, 0.6];
      const out = gaussianBlur3(x, tensor(stds));
      stds.forEach((sd, b) => {
        const g = [Math.exp(-1 / (2 * sd * sd)), 1, Math.exp(-1 / (2 * sd * sd))];
        const norm = g[0] + g[1] + g[2];
        const k1 = g.map((v) => v / norm);
        const k = tensor(k1.flatMap((a) => k1.map((bb) => a * bb))).reshape([1, 1, 3, 3]);
        const ref = F.conv2d(x.select(0, b).unsqueeze(1), k); // [3, 1, 7, 7]: no padding
        const inner = out.select(0, b).narrow(1, 1, 7).narrow(2, 1, 7).unsqueeze(1);
        vals(inner.sub(ref).abs()).forEach((d) => assert.ok(d < 1e-5, `|blur - conv| = ${d}`));
      });
      assert.deepEqual(
        vals(gaussianBlur3(full([1, 1, 5, 5], 0.3), tensor([0.5]))).map((v) => Math.round(v * 1e6) / 1e6),
        new Array(25).fill(0.3),
      );
      // blur on: about half the conditions of a batch are blurred (BLUR_PROBABILITY), with augMax 0 the rest are the pooled images
      const y = new Generator(9).randn([64, 1, 16, 16]);
      const { lowRes } = trainingCondition(y, 8, { augMax: 0, blur: true, generator: new Generator(4) });
      const pooled = F.avgPool2d(y, 2);
      const same = vals(lowRes.sub(pooled).abs().reshape([64, -1]).max([1])).filter((d) => d === 0).length;
      assert.ok(same > 16 && same < 48, `${same} of 64 unblurred`);
    }));
});

// ---- an exact super-resolution denoiser ---------------------------------------------------

const TAU = 0.1;
const DELTA = 0.3;

/** The nearest upsampling of cond.lowRes to x's size; throws without it, so every call is checked to carry the condition. */
function upsampled(x: Tensor, cond: Conditioning | undefined, who: string): Tensor {
  if (!cond?.lowRes || !cond.augLevel) throw new TypeError(`${who}: called without cond.lowRes and cond.augLevel`);
  return F.interpolate(cond.lowRes, { size: [x.dim(2), x.dim(3)], mode: 'nearest' });
}

/**
 * The exact denoiser of x ~ N(mu, TAU^2 I), mu = up(lowRes) + offset: D = (TAU^2 x + sigma^2 mu) / (TAU^2 + sigma^2).
 * With classLabels, class 0 adds +DELTA and class 1 -DELTA (class 2 is the null class: no shift).
 */
function gaussianSR(offset = 0): Denoiser {
  return (x, sigma, cond) =>
    tidy(() => {
      let mu = upsampled(x, cond, 'gaussianSR').add(offset);
      const labels = cond?.classLabels;
      if (labels) mu = mu.add(expandSigma(labels.eq(0).float().sub(labels.eq(1).float()).mul(DELTA), x));
      const s2 = expandSigma(sigma, x).square();
      return x
        .mul(TAU * TAU)
        .add(mu.mul(s2))
        .div(s2.add(TAU * TAU));
    });
}

/** The exact class log-posterior's x-dependence for classifier guidance toward +-DELTA/s per unit scale: grad = g_y TAU^2 / (TAU^2 + sigma^2), g_y = +-DELTA / TAU^2. */
const logProb: ClassLogProb = (x, sigma, labels) =>
  tidy(() => {
    const g = labels
      .eq(0)
      .float()
      .sub(labels.eq(1).float())
      .mul(DELTA / (TAU * TAU)); // [N]
    const shrink = sigma
      .square()
      .add(TAU * TAU)
      .reciprocal()
      .mul(TAU * TAU); // [N]
    return x
      .reshape([x.dim(0), -1])
      .sum([1])
      .mul(g)
      .mul(shrink);
  });

/** Samples [n, 3, 8, 8] of D on a Karras grid, sample i conditioned on lowRes[i] (at s = 0), in batches of 3. */
function sampleSR(D: Denoiser, sampler: string, lowRes: Tensor, labels: number[] | null): Tensor {
  const n = lowRes.dim(0);
  const sigmas = karrasSigmas(sampler === 'consistency' ? 4 : 40, { sigmaMax: 20 });
  try {
    return sampleInBatches(D, sigmas, {
      shape: [3, 8, 8],
      n,
      seed: 11,
      labels,
      sampler,
      batchSize: 3,
      condAt: (start, size) => samplingCondition(lowRes.narrow(0, start, size), 0, seededNoise(0, size)),
    });
  } finally {
    sigmas.dispose();
  }
}

/** Each sample's residual x - up(lowRes) - shift_i: mean ~ 0, and (unless shrunk) variance ~ TAU^2. */
function checkSamples(x: Tensor, lowRes: Tensor, shifts: number[], what: string, { std = true } = {}): void {
  tidy(() => {
    const r = x.sub(F.interpolate(lowRes, { size: [8, 8], mode: 'nearest' }));
    shifts.forEach((sh, i) => {
      const ri = vals(r.select(0, i));
      close(mean(ri), sh, (5 * TAU) / Math.sqrt(ri.length) + 0.01, `${what}: sample ${i}'s mean residual`);
      if (std) close(Math.sqrt(variance(ri)), TAU, 0.3 * TAU, `${what}: sample ${i}'s std`);
    });
  });
}

describe('every sampler and guidance method on a super-resolution stage (the condition travels in cond)', () => {
  const n = 7;
  let lowRes: Tensor;
  before(() => (lowRes = keep(new Generator(21).rand([n, 3, 4, 4]).mul(1.6).sub(0.8)))); // a different image per sample: a mix-up across the batch shows
  after(() => lowRes.dispose());
  const labels = Array.from({ length: n }, (_, i) => i % 2);
  const sign = labels.map((y) => (y === 0 ? 1 : -1));

  for (const sampler of Object.keys(SAMPLERS))
    test(`${sampler}: samples N(up(lowRes), tau^2) sample by sample`, () => {
      const x = sampleSR(gaussianSR(), sampler, lowRes, null);
      try {
        checkSamples(
          x,
          lowRes,
          new Array<number>(n).fill(0),
          sampler,
          { std: sampler !== 'consistency' }, // consistency sampling of an exact D ends at E[x0 | x]: the mean, not the spread
        );
      } finally {
        x.dispose();
      }
    });

  test('classifier-free guidance, batched and not: D_u + w (D_c - D_u) is the exact denoiser of N(up + w delta_y, tau^2)', () => {
    for (const batched of [true, false]) {
      const G = classifierFreeGuidance(gaussianSR(), { scale: 2, nullClass: 2, batched });
      const x = sampleSR(G, 'dpmpp-2m', lowRes, labels);
      try {
        checkSamples(
          x,
          lowRes,
          sign.map((sg) => 2 * DELTA * sg),
          `cfg batched ${batched}`,
        );
      } finally {
        x.dispose();
      }
    }
  });

  test('autoguidance: guide + w (main - guide) with a guide shifted by -0.2 moves the class-conditional mean by 0.2 (w - 1)', () => {
    const G = autoguidance(gaussianSR(), gaussianSR(-0.2), { scale: 2.5 });
    const x = sampleSR(G, 'heun', lowRes, labels);
    try {
      checkSamples(
        x,
        lowRes,
        sign.map((sg) => DELTA * sg + 0.2 * 1.5),
        'autoguidance',
      );
    } finally {
      x.dispose();
    }
  });

  test('classifier guidance with the exact posterior, unconditional D (the label is dropped, the low-res image kept): mean up + s tau^2 g_y', () => {
    const G = classifierGuidance(gaussianSR(), logProb, { scale: 0.5 });
    const x = sampleSR(G, 'euler', lowRes, labels);
    try {
      checkSamples(
        x,
        lowRes,
        sign.map((sg) => 0.5 * DELTA * sg),
        'classifier guidance',
      );
    } finally {
      x.dispose();
    }
  });
});

describe('the super-resolution U-Net', () => {
  const tiny = { inChannels: 3, imageSize: 16, modelChannels: 8, groups: 4, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [], midAttention: false, numClasses: 4 };

  test('the low-res image and its level s both reach the output; without them it fails naming cond', () =>
    tidy(() => {
      const net = new UNet({ ...tiny, condChannels: 3, augEmbedding: true }, { generator: new Generator(0) });
      // the last conv of every block is zero-initialized (the embedding reaches nothing yet): random weights everywhere
      noGrad(() => net.parameters().forEach((p, i) => p.copy_(new Generator(i).randnLike(p).mul(0.2))));
      assert.equal(net.conv_in.weight.dim(1), 6, 'conv_in sees x and the upsampled condition');
      const gen = new Generator(2);
      const x = gen.randn([2, 3, 16, 16]);
      const t = tensor([10, 500]);
      const low = gen.randn([2, 3, 8, 8]);
      const s = tensor([0.1, 0.1]);
      const base = net.forward(x, t, undefined, undefined, low, s);
      const dl = base
        .sub(net.forward(x, t, undefined, undefined, low.add(0.5), s))
        .abs()
        .max()
        .item();
      const ds = base
        .sub(net.forward(x, t, undefined, undefined, low, tensor([0.4, 0.4])))
        .abs()
        .max()
        .item();
      assert.ok(dl > 1e-4, `changing the low-res image changes the output (${dl})`);
      assert.ok(ds > 1e-4, `changing s changes the output (${ds})`);
      // sample 0's low-res image does not touch sample 1's output
      const other = net.forward(
        x,
        t,
        undefined,
        undefined,
        tidy(() => low.add(tensor([1, 0]).reshape([2, 1, 1, 1]))),
        s,
      );
      assert.deepEqual(vals(other.select(0, 1)), vals(base.select(0, 1)));
      assert.throws(() => net.forward(x, t, undefined, undefined, undefined, s), /super-resolution stage: pass the low-resolution image \(cond.lowRes\)/);
      assert.throws(() => net.forward(x, t, undefined, undefined, low), /embeds the augmentation level/);
      assert.throws(() => net.forward(x, t, undefined, undefined, gen.randn([2, 1, 8, 8]), s), /lowRes must have shape \[2, 3, h, w\]/);
      const plain = new UNet(tiny, { generator: new Generator(0) });
      assert.throws(() => plain.forward(x, t, undefined, undefined, low), /takes none \(condChannels is 0\)/);
      assert.equal(JSON.stringify(plain.config).includes('condChannels'), false, 'off: absent from the config, as every earlier checkpoint');
      net.dispose();
      plain.dispose();
    }));
});

describe('unetFlops: the cost of a forward pass (training compute = images x 3 x it)', () => {
  test('a one-level U-Net by hand; condChannels adds conv_in input channels only', () => {
    const cfg = { inChannels: 1, imageSize: 4, modelChannels: 2, groups: 1, channelMult: [1], numResBlocks: 1, attentionResolutions: [], midAttention: false };
    const net = new UNet(cfg);
    // conv_in 1->2 and out_conv 2->1 (3x3 at 4x4): 576 each; map_layer0 2->8: 32, map_layer1 8->8: 128;
    // res 2->2: conv1 + conv2 1152 each + emb_proj 8->4 64 = 2368, once in the encoder and twice in the middle;
    // decoder res 4->2 (skip concatenated): conv1 2304 + conv2 1152 + 1x1 skip 256 + emb 64 = 3776, twice
    assert.equal(unetFlops(net, 4), 576 + 576 + 32 + 128 + 3 * 2368 + 2 * 3776);
    const sr = new UNet({ ...cfg, condChannels: 1 });
    assert.equal(unetFlops(sr, 4) - unetFlops(net, 4), 1152 - 576, 'conv_in 2->2 instead of 1->2');
    assert.equal(unetFlops(net, 8), unetFlops(net, 4) * 4 - 3 * (32 + 128 + 5 * 64), 'convs scale with the pixels, the embeddings do not');
    net.dispose();
    sr.dispose();
  });
});

describe('a trained super-resolution stage and the cascade', () => {
  let root: string;
  before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-cascade-'))));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const TINY = {
    data: 'emoji',
    dataLimit: 32,
    batchSize: 4,
    steps: 2,
    warmupSteps: 1,
    model: { type: 'unet', modelChannels: 8, groups: 4, channelMult: [1, 2], attentionResolutions: [], midAttention: false },
    sampleEvery: 0,
    checkpointEvery: 0,
    sampleCount: 3,
    sampleSteps: 2,
    threads: 1,
  };

  test('train 16 -> 32 with augmentation: the checkpoint reads back to the same denoiser, and its preview panel is written', async () => {
    const out = path.join(root, 'sr');
    const t = Trainer.create(resolveTrainConfig({ ...TINY, imageSize: 32, lowRes: 16, augMax: 0.5, augBlur: true, out }), { log: null });
    const r = await t.run();
    assert.equal(r.status, 'done');
    assert.ok(r.losses.every(Number.isFinite));
    assert.ok(fs.existsSync(path.join(out, 'samples-000002.png')));
    const trained = t.emaNetwork();
    const { meta, net, denoiser } = loadModel(out);
    try {
      assert.equal(meta.config.lowRes, 16);
      assert.deepEqual(meta.network, { type: 'unet', config: { ...(meta.network.config as object), condChannels: 3, augEmbedding: true } });
      tidy(() => {
        const gen = new Generator(7);
        const x = gen.randn([2, 3, 32, 32]);
        const cond = { classLabels: tensor([0, 9], { dtype: 'int64' }), lowRes: gen.randn([2, 3, 16, 16]), augLevel: tensor([0.2, 0.3]) };
        const sigma = tensor([0.5, 3]);
        const fromCkpt = vals(denoiser(x, sigma, cond));
        assert.deepEqual(fromCkpt, vals(buildDenoiser(t.config, trained)(x, sigma, cond)), 'the checkpoint denoiser = the trainer EMA denoiser');
        assert.notDeepEqual(fromCkpt, vals(denoiser(x, sigma, { ...cond, lowRes: cond.lowRes.neg() })), 'and it reads the low-res image');
      });
    } finally {
      net.dispose();
      t.dispose();
    }
  });

  test('the cascade: exact Gaussian stages 4 -> 8, every stage returned, the same images in any batching, s reaches stage 1', () => {
    const base: Denoiser = (x, sigma) =>
      tidy(() => {
        const s2 = expandSigma(sigma, x).square();
        return x
          .mul(TAU * TAU)
          .add(s2.mul(0.2))
          .div(s2.add(TAU * TAU)); // N(0.2, tau^2)
      });
    const seen: number[] = [];
    const sr = gaussianSR();
    const recording: Denoiser = (x, sigma, cond) => {
      seen.push(...vals(cond!.augLevel!));
      return sr(x, sigma, cond);
    };
    const stages = (D: Denoiser): CascadeStage[] => [
      { denoiser: base, config: resolveTrainConfig({ objective: 'edm', imageSize: 4 }), shape: [3, 4, 4], classConditional: false, sampling: { sampler: 'heun', steps: 12 } },
      { denoiser: D, config: resolveTrainConfig({ objective: 'edm', imageSize: 8, lowRes: 4 }), shape: [3, 8, 8], classConditional: false, sampling: { sampler: 'dpmpp-2m', steps: 20 } },
    ];
    const [low, high] = sampleCascade(stages(recording), { n: 5, seed: 3, labels: null, augLevels: 0.25, batchSize: 2 });
    try {
      assert.deepEqual(
        [low.shape, high.shape],
        [
          [5, 3, 4, 4],
          [5, 3, 8, 8],
        ],
      );
      assert.ok(seen.length > 0 && seen.every((s) => s === 0.25));
      close(mean(vals(low)), 0.2, 0.02, 'the base samples N(0.2, tau^2)');
      // stage 1 sees z_s = alpha low + sigma eps; its samples are N(up(z_s), tau^2): E[high - alpha up(low)] = 0 on average
      tidy(() => {
        const a = Math.cos(Math.PI * 0.125);
        const resid = vals(high.sub(F.interpolate(low, { size: [8, 8], mode: 'nearest' }).mul(a)));
        close(mean(resid), 0, 0.05, 'the SR samples sit on the corrupted low-res images');
      });
      const [low1, high1] = sampleCascade(stages(sr), { n: 5, seed: 3, labels: null, augLevels: 0.25, batchSize: 5 });
      assert.deepEqual(vals(low1), vals(low), 'base: batch size does not matter');
      assert.deepEqual(vals(high1), vals(high), 'SR stage: batch size does not matter');
      const [, high0] = sampleCascade(stages(sr), { n: 5, seed: 3, labels: null, augLevels: 0, batchSize: 5 });
      assert.notDeepEqual(vals(high0), vals(high), 's changes the SR stage');
      [low1, high1, high0].forEach((t) => t.dispose());
      assert.throws(() => sampleCascade([stages(sr)[1]], { n: 1, seed: 0, labels: null, augLevels: [] }), /stage 0 must be a base model/);
      assert.throws(() => sampleCascade(stages(sr), { n: 1, seed: 0, labels: null, augLevels: [0.1, 0.2] }), /2 levels for 1 super-resolution stage/);
    } finally {
      low.dispose();
      high.dispose();
    }
  });
});
