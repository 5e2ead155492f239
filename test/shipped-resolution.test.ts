// The shipped resolution models (issue 14): the emoji cascade (models/emoji-cascade-base16, a
// 16 px base, and models/emoji-cascade-sr64, its 16 -> 64 super-resolution stage trained with
// noise-conditioning augmentation) and the nested model (models/emoji-matryoshka, 16/32/64 px).
// `diffuse sample --cascade` and `diffuse sample --resolution` draw from them. Fails (never
// skips) when a model is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCheckpointMeta } from '../src/training/checkpoint';
import { runQuick } from './cli-run';

const MODELS = path.resolve(__dirname, '../../models');
const [BASE, SR, MDM] = ['emoji-cascade-base16', 'emoji-cascade-sr64', 'emoji-matryoshka'].map((m) => path.join(MODELS, m));
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-shipped-res-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const width = (file: string) => fs.readFileSync(path.join(root, file)).readUInt32BE(16); // the PNG's IHDR width

test('the shipped emoji cascade: a 16 px base and an augmented 16 -> 64 stage; sample --cascade draws 64 px images and keeps the 16 px ones', async () => {
  for (const m of [BASE, SR]) assert.ok(fs.existsSync(path.join(m, 'checkpoint.json')), `the shipped model is missing: ${m}`);
  const [base, sr] = [readCheckpointMeta(BASE).config, readCheckpointMeta(SR).config];
  assert.deepEqual([base.data, base.imageSize, base.lowRes], ['emoji', 16, null]);
  assert.deepEqual([sr.data, sr.imageSize, sr.lowRes], ['emoji', 64, 16]);
  assert.ok(sr.augMax > 0, 'the shipped SR stage is the one trained with noise-conditioning augmentation');
  const r = await runQuick(
    root,
    'sample',
    '--cascade',
    `${BASE},${SR}`,
    '--aug-level',
    '0.2',
    '--n',
    '2',
    '--steps',
    '2',
    '--sampler',
    'dpmpp-2m',
    '--grid',
    'karras',
    '--save-low-res',
    '--out-dir',
    'cascade',
  );
  assert.equal(r.code, 0, r.err);
  const files = fs.readdirSync(path.join(root, 'cascade')).sort();
  const high = files.filter((f) => /^\d+\.png$/.test(f));
  assert.equal(high.length, 2, files.join(', '));
  assert.equal(width(path.join('cascade', high[0])), 64);
  const low = fs.readdirSync(path.join(root, 'cascade', '16px')).filter((f) => f.endsWith('.png'));
  assert.equal(low.length, 2, "the 16 px stage's images are saved too");
  assert.equal(width(path.join('cascade', '16px', low[0])), 16);
});

test('the shipped Matryoshka model: one network for 16, 32 and 64 px; sample --resolution picks the level', async () => {
  assert.ok(fs.existsSync(path.join(MDM, 'checkpoint.json')), `the shipped model is missing: ${MDM}`);
  const c = readCheckpointMeta(MDM).config;
  assert.deepEqual([c.data, c.imageSize, c.nested], ['emoji', 64, [16, 32, 64]]);
  for (const res of [16, 64]) {
    const r = await runQuick(root, 'sample', MDM, '--resolution', String(res), '--n', '1', '--steps', '2', '--sampler', 'dpmpp-2m', '--grid', 'karras', '--out-dir', `mdm${res}`);
    assert.equal(r.code, 0, r.err);
    assert.equal(width(path.join(`mdm${res}`, '000000.png')), res);
  }
});
