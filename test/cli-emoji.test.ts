// `diffuse train --data emoji:google` end to end on a tiny U-Net at 16 x 16: a checkpoint
// with the 9 categories as classes, then `diffuse sample --class` by category name reads it;
// bad emoji data values and sizes fail with exit code 2 and the option named.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeImage } from '../src/data/image-codec';
import { EMOJI_CATEGORIES } from '../src/data/emoji';
import { runQuick } from './cli-run';

let root: string;
const saved = process.env.DIFFUSE_CACHE_DIR;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-cli-emoji-'));
  process.env.DIFFUSE_CACHE_DIR = path.join(root, 'cache');
});
after(() => {
  if (saved === undefined) delete process.env.DIFFUSE_CACHE_DIR;
  else process.env.DIFFUSE_CACHE_DIR = saved;
  fs.rmSync(root, { recursive: true, force: true });
});
const quick = (...args: string[]) => runQuick(root, ...args);

// prettier-ignore
const TINY = [
  '--batch-size', '8', '--model-channels', '8', '--groups', '4', '--channel-mult', '1,2', '--attention-resolutions', 'none',
  '--no-mid-attention', '--warmup-steps', '2', '--sample-every', '0', '--checkpoint-every', '0', '--threads', '1',
];

test('train --data emoji:google --image-size 16, then sample a category by name', async () => {
  const run = path.join(root, 'run');
  let r = await quick('train', '--data', 'emoji:google', '--image-size', '16', '--steps', '2', ...TINY, '--out', run);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /class-conditional \(9 classes, label dropout 0.1\)/);
  const ckpt = JSON.parse(fs.readFileSync(path.join(run, 'checkpoint.json'), 'utf8')) as { step: number };
  assert.equal(ckpt.step, 2);
  r = await quick('info', run);
  assert.equal(r.code, 0, r.err);
  assert.ok(r.out.includes(`9 classes: ${EMOJI_CATEGORIES.slice(0, 2).join(', ')}`), r.out);
  r = await quick('sample', run, '--n', '2', '--steps', '2', '--class', 'Flags', '--out-dir', 'each');
  assert.equal(r.code, 0, r.err);
  const img = decodeImage(fs.readFileSync(path.join(root, 'each', '000000.png')), 'sample');
  assert.deepEqual([img.width, img.height], [16, 16]);
  // an RGB sample: not every pixel gray
  let colored = 0;
  for (let p = 0; p < 16 * 16; p++) if (img.rgba[4 * p] !== img.rgba[4 * p + 1] || img.rgba[4 * p + 1] !== img.rgba[4 * p + 2]) colored++;
  assert.ok(colored > 0);
});

test('bad emoji values: exit 2, the option and the value named', async () => {
  for (const [args, re] of [
    [['--data', 'emoji:apple'], /expected 'emoji', 'emoji:google' or 'emoji:twitter', got "emoji:apple"/],
    [['--data', 'emoji', '--image-size', '48'], /imageSize.*16, 32 or 64, got 48/],
  ] as [string[], RegExp][]) {
    const r = await quick('train', ...args, '--steps', '1', ...TINY, '--out', path.join(root, 'bad'));
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, re);
  }
});
