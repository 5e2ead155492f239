// `diffuse train --low-res` and `diffuse sample|eval --cascade` end to end on tiny emoji models
// (a 16 px base, a 16 -> 32 SR stage and a 32 -> 64 one, two steps each): every stage's images at
// their sizes, per-stage sampler, steps and guidance ('/'), the same final images with --out-dir
// and any batch size, an --aug-level sweep measured, and the mistakes named.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeImage } from '../src/data/image-codec';
import { runQuick } from './cli-run';

let root: string;
const saved = process.env.DIFFUSE_CACHE_DIR;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-cascade-cli-'));
  process.env.DIFFUSE_CACHE_DIR = path.join(root, 'cache');
});
after(() => {
  if (saved === undefined) delete process.env.DIFFUSE_CACHE_DIR;
  else process.env.DIFFUSE_CACHE_DIR = saved;
  fs.rmSync(root, { recursive: true, force: true });
});
const quick = (...args: string[]) => runQuick(root, ...args);
const size = (file: string) => {
  const img = decodeImage(fs.readFileSync(path.join(root, file)), file);
  return [img.width, img.height];
};

// prettier-ignore
const TINY = [
  '--data', 'emoji:google', '--data-limit', '24', '--steps', '2', '--batch-size', '4', '--model-channels', '8', '--groups', '4', '--channel-mult', '1,2',
  '--attention-resolutions', 'none', '--no-mid-attention', '--warmup-steps', '1', '--sample-every', '0', '--checkpoint-every', '0', '--threads', '1',
];

test('train a base and two SR stages, then sample and eval the cascade', async () => {
  let r = await quick('train', ...TINY, '--image-size', '16', '--out', 'base');
  assert.equal(r.code, 0, r.err);
  r = await quick('train', ...TINY, '--image-size', '32', '--low-res', '16', '--aug-max', '0.5', '--aug-blur', '--out', 'sr32');
  assert.equal(r.code, 0, r.err);
  r = await quick('train', ...TINY, '--image-size', '64', '--low-res', '32', '--aug-max', '0.3', '--out', 'sr64');
  assert.equal(r.code, 0, r.err);
  const ckpt = JSON.parse(fs.readFileSync(path.join(root, 'sr32', 'checkpoint.json'), 'utf8')) as {
    config: { lowRes: number; augMax: number; augBlur: boolean };
    network: { config: { condChannels: number } };
  };
  assert.deepEqual([ckpt.config.lowRes, ckpt.config.augMax, ckpt.config.augBlur, ckpt.network.config.condChannels], [16, 0.5, true, 3]);
  r = await quick('info', 'sr32');
  assert.match(r.out, /super-resolution from 16 px \(the low-res image concatenated; augmentation s ~ U\[0, 0.5\], blur/);
  assert.match(r.out, /[\d.]+ GFLOP per image forward/);

  // 16 -> 32 -> 64, a sampler and steps per stage, CFG on the base only, every stage saved
  // prettier-ignore
  r = await quick('sample', '--cascade', 'base,sr32,sr64', '--n', '3', '--steps', '3/2/2', '--sampler', 'ddpm/dpmpp-2m/euler', '--guidance', '2//', '--aug-level', '0.1/0.2', '--save-low-res', '--out', 'c.png', '--ncol', '3');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /16 px: base .*ddpm.*3 steps, cfg w = 2; 32 px: sr32 .*dpmpp-2m.* 2 steps; 64 px: sr64 .*euler/);
  const [w, h] = size('c.png'); // one row of three 64 px images
  assert.ok(w >= 3 * 64 && h >= 64 && h < 2 * 64, `grid ${w} x ${h}`);
  assert.ok(fs.existsSync(path.join(root, 'c-16px.png')) && fs.existsSync(path.join(root, 'c-32px.png')));
  const [pw, ph] = size('c-panel.png'); // three rows (16, 32, 64 px, all shown at 64) of three columns
  assert.ok(pw >= 3 * 64 && ph >= 3 * 64 && ph < 4 * 64, `panel ${pw} x ${ph}`);

  // one PNG per sample: the final images at 64 px and the base's at 16 px; the same images in any batching
  r = await quick('sample', '--cascade', 'base,sr32,sr64', '--n', '3', '--steps', '2', '--aug-level', '0.2', '--save-low-res', '--out-dir', 'each', '--batch-size', '2');
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(size('each/000002.png'), [64, 64]);
  assert.deepEqual(size('each/16px/000002.png'), [16, 16]);
  assert.deepEqual(size('each/32px/000000.png'), [32, 32]);
  r = await quick('sample', '--cascade', 'base,sr32,sr64', '--n', '3', '--steps', '2', '--aug-level', '0.2', '--out-dir', 'each3', '--batch-size', '3');
  assert.equal(r.code, 0, r.err);
  for (const f of ['000000.png', '000002.png']) assert.deepEqual(fs.readFileSync(path.join(root, 'each3', f)), fs.readFileSync(path.join(root, 'each', f)), f);

  // a float16 export of an SR stage is a stage too (as shipped models are)
  r = await quick('export', 'sr32', 'sr32-f16');
  assert.equal(r.code, 0, r.err);
  r = await quick('sample', '--cascade', 'base,sr32-f16', '--n', '2', '--steps', '2', '--aug-level', '0.2', '--out-dir', 'f16');
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(size('f16/000001.png'), [32, 32]);

  // eval: a sweep over s, measured at 64 px
  r = await quick('eval', '--cascade', 'base,sr32,sr64', '--n', '8', '--steps', '2', '--aug-level', '0,0.4', '--threads', '1', '--out', 'ev');
  assert.equal(r.code, 0, r.err);
  const json = fs.readdirSync(path.join(root, 'ev')).find((f) => f.endsWith('.json'))!;
  const report = JSON.parse(fs.readFileSync(path.join(root, 'ev', json), 'utf8')) as { rows: { augLevels: number[]; metrics: { fd: { value: number } } }[]; cascade: { size: number }[] };
  assert.deepEqual(
    report.rows.map((x) => x.augLevels),
    [
      [0, 0],
      [0.4, 0.4],
    ],
  );
  assert.ok(report.rows.every((x) => Number.isFinite(x.metrics.fd.value)));
  assert.deepEqual(
    report.cascade.map((s) => s.size),
    [16, 32, 64],
  );
  assert.ok(fs.readdirSync(path.join(root, 'ev')).some((f) => f.endsWith('_fd.png')));
});

test('cascade mistakes are named', async () => {
  const cases: [string[], RegExp][] = [
    [['train', '--aug-max', '0.2', '--steps', '1'], /--aug-max: augments the low-res condition .* set lowRes too/],
    [['train', '--data', 'emoji', '--image-size', '32', '--low-res', '12', '--steps', '1'], /--low-res: must divide imageSize \(32\) by an integer > 1, got 12/],
    [['sample', '--aug-level', '0.2'], /--aug-level goes with --cascade/],
    [['sample', '--cascade', 'onlyone'], /--cascade: expected BASE,SR/],
    [['eval', '--aug-level', '0.1'], /--aug-level goes with --cascade/],
  ];
  for (const [args, re] of cases) {
    const r = await quick(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, re);
  }
});
