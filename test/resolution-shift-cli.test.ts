// `diffuse train` with the resolution-aware schedule options (--shift-base, --input-scale,
// --beta-schedule sigmoid, --multiscale-base): tiny runs whose checkpoint stores the option, and `diffuse sample`
// and `diffuse info` read it back: the sampler gets the shifted sigma grid (the samples differ
// from the same weights read without the shift), edm2 trains with the shifted P_mean.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setNumThreads, tidy } from '../src/engine';
import { readCheckpointMeta } from '../src/training/checkpoint';
import { samplingSigmas } from '../src/training/build';
import { TrainConfig } from '../src/training/config';
import { runQuick } from './cli-run';

setNumThreads(1);

let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-shift-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const QUIET = ['--warmup-steps', '1', '--sample-every', '0', '--checkpoint-every', '0', '--sample-count', '4', '--sample-steps', '2'];
const TOY = ['--data', '8gaussians', '--model', 'mlp', '--hidden', '32', '--depth', '2', '--sigma-data', '1', '--batch-size', '64', ...QUIET];
const UNET = ['--data-limit', '32', '--batch-size', '8', '--model-channels', '8', '--groups', '4', '--channel-mult', '1,2', '--attention-resolutions', 'none', '--mid-attention', 'false', ...QUIET];
const EDM2 = [
  '--model',
  'edm2',
  '--data-limit',
  '32',
  '--batch-size',
  '8',
  '--model-channels',
  '8',
  '--channel-mult',
  '1,2',
  '--num-blocks',
  '1',
  '--attn-resolutions',
  'none',
  '--channels-per-head',
  '16',
  '--lr-ref-steps',
  '4',
  ...QUIET,
];

async function train(name: string, args: string[]): Promise<string> {
  const dir = path.join(root, name);
  const r = await runQuick(root, 'train', ...args, '--steps', '3', '--out', dir);
  assert.equal(r.code, 0, r.err);
  return dir;
}

/** A copy of the run folder whose stored config has `edit` applied (the same weights). */
function copyWith(dir: string, name: string, edit: Partial<TrainConfig>): string {
  const to = path.join(root, name);
  fs.cpSync(dir, to, { recursive: true });
  const file = path.join(to, 'checkpoint.json');
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { config: Record<string, unknown> };
  Object.assign(json.config, edit);
  fs.writeFileSync(file, JSON.stringify(json));
  return to;
}

async function samplePng(dir: string, out: string): Promise<Buffer> {
  const s = await runQuick(root, 'sample', dir, '--n', '4', '--steps', '3', '--seed', '5', '--out', out);
  assert.equal(s.code, 0, s.err);
  return fs.readFileSync(path.join(root, out));
}

const grid = (c: TrainConfig) => tidy(() => Array.from(samplingSigmas(c, 3).toFloat64Array()));

describe('the schedule options are stored in the checkpoint and honoured by diffuse sample', () => {
  for (const [name, args, edit, factor] of [
    ['unet-shift', [...UNET, '--shift-base', '16', '--beta-schedule', 'sigmoid'], { shiftBase: null }, 2],
    ['toy-scale', [...TOY, '--objective', 'v', '--input-scale', '0.5'], { inputScale: 1 }, 2],
  ] as const) {
    test(`${args.slice(-4).join(' ')}: the sampler's grid is the shifted one`, async () => {
      const dir = await train(name, [...args]);
      const meta = readCheckpointMeta(dir);
      const plainDir = copyWith(dir, `${name}-plain`, edit);
      const plain = readCheckpointMeta(plainDir).config;
      const [g, p] = [grid(meta.config), grid(plain)];
      g.forEach((s, i) => assert.ok(Math.abs(s - factor * p[i]) <= 1e-9 * s, `grid ${i}: ${s} vs ${factor} x ${p[i]}`));
      const a = await samplePng(dir, `${name}-a.png`);
      assert.deepEqual(await samplePng(dir, `${name}-b.png`), a, 'sampling is deterministic');
      assert.notDeepEqual(await samplePng(plainDir, `${name}-plain.png`), a, 'the stored option changes what diffuse sample draws');
      const info = await runQuick(root, 'info', dir);
      assert.match(info.out, /log-SNR shifted by -1\.3863/); // 2 ln(1/2)
    });
  }

  test('--model edm2 --shift-base 16 at 32 px: P_mean moves by ln 2; samples', async () => {
    const dir = await train('edm2-shift', [...EDM2, '--shift-base', '16']);
    assert.equal(readCheckpointMeta(dir).config.shiftBase, 16);
    await samplePng(dir, 'edm2.png');
    const info = await runQuick(root, 'info', dir);
    assert.match(info.out, new RegExp(`P_mean ${(-1.2 + Math.log(2)).toFixed(4)}`));
  });

  test('--multiscale-base 8 at 32 px trains, is stored and shown by info; 12 is refused, naming the option and the value', async () => {
    const dir = await train('multiscale', [...UNET, '--multiscale-base', '8']);
    assert.equal(readCheckpointMeta(dir).config.multiscaleBase, 8);
    assert.match((await runQuick(root, 'info', dir)).out, /multiscale loss from 8 px/);
    const r = await runQuick(root, 'train', ...UNET, '--multiscale-base', '12', '--out', path.join(root, 'bad-ms'));
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /multiscaleBase.*power of 2.*got 12/);
  });

  test('--shift-base on 2-D point data is refused, naming the flag', async () => {
    const r = await runQuick(root, 'train', ...TOY, '--shift-base', '32', '--out', path.join(root, 'bad'));
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /shiftBase.*2-D point data/);
  });
});
