// SDXL's micro-conditioning (src/training/micro.ts, the U-Net's microConditioning, src/eval/border.ts):
// the crop and rescale augmentation against a position ramp (the reported offsets are the ones
// applied), its statistics and determinism, the embedding (zero at init, then it changes the output;
// missing or unexpected values are named), the border proxy on drawn images, and the CLI end to end
// (train --micro-cond with crops, resume bit-exact, sample with --micro and guidance, eval's border).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { arange, cat, full, ones, zeros } from '../src/engine/create';
import { Generator } from '../src/engine/random';
import { setNumThreads } from '../src/engine/runtime';
import { noGrad, tidy } from '../src/engine/scope';
import { Tensor } from '../src/engine/tensor';
import { UNet } from '../src/models/unet';
import { microAugment, microValues } from '../src/training/micro';
import { borderTouches, borderTouchRate } from '../src/eval/border';
import { resolveTrainConfig } from '../src/training/config';
import { loadModel } from '../src/training/checkpoint';
import { generateSamples } from '../src/training/build';
import { runQuick } from './cli-run';

setNumThreads(1);
let root: string;
const saved = process.env.DIFFUSE_CACHE_DIR;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-micro-'));
  process.env.DIFFUSE_CACHE_DIR = path.join(root, 'cache');
});
after(() => {
  if (saved === undefined) delete process.env.DIFFUSE_CACHE_DIR;
  else process.env.DIFFUSE_CACHE_DIR = saved;
  fs.rmSync(root, { recursive: true, force: true });
});
const maxAbsDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());

/** Images [B, 2, S, S]: channel 0 the column index, channel 1 the row index. */
function ramps(B: number, S: number): Tensor {
  return tidy(() => {
    const col = arange(0, S, 1, { dtype: 'float32' }).reshape([1, 1, 1, S]).expand([B, 1, S, S]);
    const row = arange(0, S, 1, { dtype: 'float32' }).reshape([1, 1, S, 1]).expand([B, 1, S, S]);
    return cat([col, row], 1).contiguous();
  });
}

test('microAugment: each crop is the enlarged image cut at the reported (top, left); uncropped images are untouched', () => {
  const S = 16;
  const x = ramps(64, S);
  const { x: y, micro } = microAugment(x, { cropZoom: 2, cropProb: 0.5, sizeMin: null, generator: new Generator(5) });
  const m = micro.toFloat64Array();
  const v = y.toFloat64Array();
  const at = (i: number, c: number, r: number, k: number) => v[((i * 2 + c) * S + r) * S + k];
  let cropped = 0;
  for (let i = 0; i < 64; i++) {
    const [h, w, top, left] = m.subarray(4 * i, 4 * i + 4);
    assert.deepEqual([h, w], [S, S], 'no rescale: the original size is S');
    // Bilinear enlargement by z (align_corners false): pixel j of the crop reads source (left + j + 0.5) / z - 0.5.
    const z = 5 / (at(i, 0, 8, 10) - at(i, 0, 8, 5)); // the ramp's slope is 1/z
    if (Math.abs(z - 1) < 1e-6) {
      assert.deepEqual([top, left], [0, 0]);
      continue;
    }
    cropped++;
    assert.ok(z > 1 && z <= 2 + 1e-6, `zoom ${z}`);
    assert.ok(Math.abs(at(i, 0, 8, 0) - Math.max(0, (left + 0.5) / z - 0.5)) < 1e-3, `image ${i}: left ${left}`);
    assert.ok(Math.abs(at(i, 1, 0, 8) - Math.max(0, (top + 0.5) / z - 0.5)) < 1e-3, `image ${i}: top ${top}`);
  }
  assert.ok(cropped > 16 && cropped < 48, `about half cropped, got ${cropped}`);
  // The same generator state gives the same batch.
  const again = microAugment(x, { cropZoom: 2, cropProb: 0.5, sizeMin: null, generator: new Generator(5) });
  assert.equal(maxAbsDiff(again.x, y), 0);
  assert.equal(maxAbsDiff(again.micro, micro), 0);
  for (const t of [x, y, micro, again.x, again.micro]) t.dispose();
});

test('microAugment: rescales report s in [sizeMin, S] and blur the image only when s < S; off is the identity', () => {
  const S = 16;
  const g = new Generator(2);
  const x = tidy(() => g.rand([200, 3, S, S]));
  const { x: y, micro } = microAugment(x, { cropZoom: 1, cropProb: 0.5, sizeMin: 4, generator: new Generator(9) });
  const m = micro.toFloat64Array();
  const sizes = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const s = m[4 * i];
    sizes.add(s);
    assert.ok(Number.isInteger(s) && s >= 4 && s <= S, `size ${s}`);
    assert.deepEqual([m[4 * i + 1], m[4 * i + 2], m[4 * i + 3]], [s, 0, 0]);
    const d = tidy(() => maxAbsDiff(y.narrow(0, i, 1), x.narrow(0, i, 1)));
    if (s === S) assert.equal(d, 0);
    else assert.ok(d > 0.05, `s = ${s} must change the image`);
  }
  assert.equal(sizes.size, S - 4 + 1, 'every size in 4..16 drawn');
  const off = microAugment(x, { cropZoom: 1, cropProb: 1, sizeMin: null, generator: new Generator(1) });
  assert.equal(maxAbsDiff(off.x, x), 0);
  assert.deepEqual([...off.micro.narrow(0, 0, 1).toFloat64Array()], [S, S, 0, 0]);
  assert.throws(() => microAugment(x, { cropZoom: 1, cropProb: 1, sizeMin: 17, generator: g }), /sizeMin must be an integer in \[1, 16\], got 17/);
  for (const t of [x, y, micro, off.x, off.micro]) t.dispose();
});

test('the micro embedding: zero-initialized (no change at init), then (h, w, top, left) changes the output; mistakes are named', () => {
  const cfg = { inChannels: 3, imageSize: 8, modelChannels: 8, groups: 4, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [], midAttention: false };
  const net = new UNet({ ...cfg, microConditioning: true }, { generator: new Generator(0) });
  const plain = new UNet(cfg, { generator: new Generator(0) });
  const g = new Generator(4);
  noGrad(() => {
    for (const p of [...plain.parameters()]) tidy(() => void p.copy_(g.randnLike(p).mul(0.2)));
    // The same weights in both; the micro layers stay as initialized (map_micro1 is zero).
    const named = Object.fromEntries(plain.namedParameters());
    for (const [n, p] of net.namedParameters()) if (named[n]) p.copy_(named[n]);
  });
  const x = tidy(() => g.randn([2, 3, 8, 8]));
  const c = full([2], 10);
  const full8 = microValues(2, 8);
  const crop = microValues(2, 8, [8, 8, 3, 1]);
  const out = (m: Tensor) => noGrad(() => net.forward(x, c, undefined, undefined, undefined, undefined, m));
  const [a, b, p] = [out(full8), out(crop), noGrad(() => plain.forward(x, c))];
  assert.equal(maxAbsDiff(a, p), 0, 'zero-initialized: the network starts as the one without micro-conditioning');
  assert.equal(maxAbsDiff(a, b), 0);
  noGrad(() => {
    for (const q of net.map_micro1!.parameters()) tidy(() => void q.copy_(g.randnLike(q).mul(0.2)));
  });
  const [a2, b2] = [out(full8), out(crop)];
  assert.ok(maxAbsDiff(a2, b2) > 1e-4, 'the crop offsets reach the output');
  assert.throws(() => noGrad(() => net.forward(x, c)), /microConditioning\): pass them, \[B, 4\] floats \(h, w, top, left\)/);
  assert.throws(() => noGrad(() => plain.forward(x, c, undefined, undefined, undefined, undefined, full8)), /microConditioning is off/);
  assert.throws(() => noGrad(() => net.forward(x, c, undefined, undefined, undefined, undefined, ones([2, 3]))), /micro must have shape \[2, 4\]/);
  assert.throws(() => microValues(2, 8, [8, 8, -1, 0]), /4 non-negative numbers/);
  for (const t of [x, c, full8, crop, a, b, p, a2, b2]) t.dispose();
  net.dispose();
  plain.dispose();
});

test('borderTouchRate: white images with a centred square do not touch, squares cut by the frame do; uint8 and [-1, 1] agree', () => {
  const S = 32;
  const img = (x0: number, y0: number, size: number) =>
    tidy(() => {
      const t = full([1, 3, S, S], 255);
      const sq = zeros([1, 3, size, size]);
      return t.narrow(2, y0, size).narrow(3, x0, size).copy_(sq) && t;
    });
  const batch = tidy(() => cat([img(8, 8, 16), img(0, 8, 16), img(20, 20, 12), img(10, 10, 4)], 0));
  assert.deepEqual(borderTouches(batch), [false, true, true, false]);
  assert.equal(borderTouchRate(batch), 0.5);
  const f = tidy(() => batch.div(127.5).sub(1));
  assert.deepEqual(borderTouches(f), [false, true, true, false]);
  assert.throws(() => borderTouches(batch, { ring: 16 }), /ring must be an integer in \[1, 15\], got 16/);
  batch.dispose();
  f.dispose();
});

// prettier-ignore
const TINY = ['--data', 'emoji:google', '--image-size', '16', '--data-limit', '24', '--batch-size', '4', '--model-channels', '8', '--groups', '4', '--channel-mult', '1,2',
  '--attention-resolutions', 'none', '--no-mid-attention', '--warmup-steps', '1', '--sample-every', '0', '--checkpoint-every', '0', '--threads', '1'];

test('CLI: train --micro-cond with crops and rescales, resume bit-exact, sample with --micro and guidance, eval reports border', async () => {
  const quick = (...a: string[]) => runQuick(root, ...a);
  let r = await quick('train', ...TINY, '--micro-cond', 'true', '--crop-zoom', '1.5', '--size-min', '8', '--lr-schedule', 'constant', '--steps', '4', '--out', 'micro');
  assert.equal(r.code, 0, r.err);
  // Resume: 2 steps, then 2 more, gives the same weights as 4 straight (the zero-initialized micro layer moves from step 3 on).
  r = await quick('train', ...TINY, '--micro-cond', 'true', '--crop-zoom', '1.5', '--size-min', '8', '--lr-schedule', 'constant', '--steps', '2', '--out', 'half');
  assert.equal(r.code, 0, r.err);
  r = await quick('train', '--resume', 'half', '--steps', '4');
  assert.equal(r.code, 0, r.err);
  const weights = (d: string) => fs.readdirSync(path.join(root, d)).find((f) => f.startsWith('model-'))!;
  assert.ok(fs.readFileSync(path.join(root, 'micro', weights('micro'))).equals(fs.readFileSync(path.join(root, 'half', weights('half')))), 'resumed weights equal the straight run');
  const spec = JSON.parse(fs.readFileSync(path.join(root, 'micro', 'checkpoint.json'), 'utf8'));
  assert.equal(spec.network.config.microConditioning, true);
  // Sampling: the default (16, 16, 0, 0) and an explicit crop differ; with guidance too.
  r = await quick('sample', 'micro', '--n', '2', '--steps', '3', '--sampler', 'dpmpp-2m', '--out-dir', 'full');
  assert.equal(r.code, 0, r.err);
  r = await quick('sample', 'micro', '--n', '2', '--steps', '3', '--sampler', 'dpmpp-2m', '--micro', '16,16,0,0', '--out-dir', 'full2');
  assert.equal(r.code, 0, r.err);
  r = await quick('sample', 'micro', '--n', '2', '--steps', '3', '--sampler', 'dpmpp-2m', '--micro', '16,16,6,6', '--out-dir', 'crop');
  assert.equal(r.code, 0, r.err);
  r = await quick('sample', 'micro', '--n', '2', '--steps', '3', '--sampler', 'dpmpp-2m', '--micro', '16,16,6,6', '--guidance', '2', '--out-dir', 'guided');
  assert.equal(r.code, 0, r.err);
  const png = (d: string) => fs.readFileSync(path.join(root, d, '000000.png'));
  assert.ok(png('full').equals(png('full2')), 'the default is 16,16,0,0');
  assert.ok(!png('crop').equals(png('guided')));
  // The offsets reach the samples (in float: four steps move the zero-initialized layer too little to show in uint8).
  const m = loadModel(path.join(root, 'micro'));
  const gen = (micro?: number[]) => generateSamples(m.denoiser, m.meta.config, { shape: m.meta.sampleShape, n: 2, seed: 0, steps: 3, sampler: 'dpmpp-2m', labels: [0, 1], micro });
  const [a, b, c] = [gen(), gen([16, 16, 0, 0]), gen([16, 16, 6, 6])];
  assert.equal(maxAbsDiff(a, b), 0, 'the default is 16,16,0,0');
  assert.ok(maxAbsDiff(a, c) > 0, 'the crop offsets reach the samples');
  [a, b, c].forEach((t) => t.dispose());
  m.net.dispose();
  r = await quick('sample', 'micro', '--n', '1', '--steps', '2', '--micro', '16,16,0');
  assert.equal(r.code, 2);
  assert.match(r.err, /--micro: expected H,W,TOP,LEFT, four non-negative numbers in pixels, got "16,16,0"/);
  // A model without micro-conditioning refuses --micro; crops work without it (the control run).
  r = await quick('train', ...TINY, '--crop-zoom', '1.5', '--steps', '1', '--out', 'control');
  assert.equal(r.code, 0, r.err);
  r = await quick('sample', 'control', '--n', '1', '--steps', '2', '--micro', '16,16,0,0');
  assert.equal(r.code, 2);
  assert.match(r.err, /--micro 16,16,0,0: this model was not trained with micro-conditioning/);
  r = await quick('train', ...TINY, '--size-min', '32', '--steps', '1', '--out', 'bad');
  assert.equal(r.code, 2);
  assert.match(r.err, /size-min.*must be at most imageSize \(16\), got 32/);
  r = await quick('eval', 'micro', '--n', '8', '--steps', '2', '--sampler', 'dpmpp-2m', '--out', 'ev');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /border \d/);
  // The floor: the emoji test split itself (Noto's emoji keep a margin: few touch the frame; Twemoji's often fill it).
  r = await quick('eval', '--baseline', 'test', '--data', 'emoji:google', '--n', '64', '--threads', '1', '--out', 'floor');
  assert.equal(r.code, 0, r.err);
  const floor = JSON.parse(
    fs.readFileSync(
      path.join(
        root,
        'floor',
        fs.readdirSync(path.join(root, 'floor')).find((f) => f.endsWith('.json'))!,
      ),
      'utf8',
    ),
  );
  assert.ok(floor.metrics.border.value > 0 && floor.metrics.border.value < 0.2, `border of Noto's emoji ${floor.metrics.border.value}`);
});

test('the micro config needs a U-Net without lowRes or nested', () => {
  assert.throws(() => resolveTrainConfig({ microCond: true, lowRes: 8, imageSize: 16 }), /micro-conditioning and its crops do not combine with lowRes/);
  assert.throws(() => resolveTrainConfig({ cropZoom: 1.5, nested: [8, 16], imageSize: 16 }), /do not combine with nested/);
});
