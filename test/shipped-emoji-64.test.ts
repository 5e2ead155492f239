// The shipped 64 px emoji model (models/emoji-64, issue 13): `diffuse sample models/emoji-64`
// draws 64 x 64 RGB images of the requested categories with its stored shifted schedule. Fails
// (never skips) when the model is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCheckpointMeta } from '../src/training/checkpoint';
import { logSnrShift } from '../src/training/build';
import { runQuick } from './cli-run';

const MODEL = path.resolve(__dirname, '../../models/emoji-64');
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-emoji64-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('models/emoji-64 is the shifted 64 px class-conditional emoji U-Net, and diffuse sample draws from it', async () => {
  assert.ok(fs.existsSync(path.join(MODEL, 'checkpoint.json')), `the shipped model is missing: ${MODEL}`);
  const { config } = readCheckpointMeta(MODEL);
  assert.equal(config.data, 'emoji');
  assert.equal(config.imageSize, 64);
  assert.equal(config.shiftBase, 16);
  assert.ok(Math.abs(logSnrShift(config) - 2 * Math.log(16 / 64)) < 1e-12);
  const out = path.join(root, 'grid.png');
  const r = await runQuick(root, 'sample', MODEL, '--n', '2', '--steps', '2', '--sampler', 'dpmpp-2m', '--grid', 'karras', '--out', out);
  assert.equal(r.code, 0, r.err);
  const png = fs.readFileSync(out);
  assert.ok(png.readUInt32BE(16) >= 2 * 64 && png.readUInt32BE(20) >= 64, `grid ${png.readUInt32BE(16)} x ${png.readUInt32BE(20)} holds two 64 px images`);
});
