// The `diffuse` command end to end, as a user runs it (a child process): --help on every
// command, clear errors with exit code 2 for wrong commands, flags and values, train ->
// info -> sample -> resume on a tiny U-Net over a slice of Fashion-MNIST, Ctrl-C writing
// a checkpoint (exit 130), a corrupt checkpoint failing with exit 1 and the file named.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeImage } from '../src/data/image-codec';
import { runQuick, runSpawned } from './cli-run';

const MAIN = path.join(__dirname, '..', 'src', 'cli', 'main.js');
const ENV = { ...process.env, DIFFUSE_NUM_THREADS: '1' };
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-cli-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** The command as a user runs it: a child process. */
const diffuse = (...args: string[]) => runSpawned(root, ...args);

/** The same main() in this process (for the many quick checks), with stdout and stderr captured. */
const quick = (...args: string[]) => runQuick(root, ...args);

// flag, value pairs (kept as laid out)
// prettier-ignore
const TINY = [
  '--data-limit', '256', '--batch-size', '8', '--model-channels', '8', '--groups', '4', '--channel-mult', '1,2', '--attention-resolutions', 'none',
  '--no-mid-attention', '--warmup-steps', '2', '--sample-every', '10', '--sample-count', '10', '--sample-steps', '4', '--checkpoint-every', '10',
];
const TOY = [
  '--data',
  '8gaussians',
  '--model',
  'mlp',
  '--hidden',
  '32',
  '--depth',
  '2',
  '--sigma-data',
  '1',
  '--batch-size',
  '32',
  '--warmup-steps',
  '2',
  '--sample-every',
  '0',
  '--checkpoint-every',
  '0',
];

describe('help and usage errors', () => {
  test('--help on every command', async () => {
    for (const [args, re] of [
      [['--help'], /Usage: diffuse <command>[\s\S]*train[\s\S]*sample[\s\S]*info/],
      [['help', 'sample'], /Usage: diffuse sample/],
      [['train', '--help'], /Usage: diffuse train[\s\S]*--batch-size VALUE[\s\S]*--model-channels[\s\S]*--hidden/],
      [['sample', '-h'], /Usage: diffuse sample[\s\S]*--out-dir/],
      [['info', '--help'], /Usage: diffuse info CHECKPOINT/],
      [['export', '--help'], /Usage: diffuse export/],
    ] as [string[], RegExp][]) {
      const r = args[0] === '--help' ? diffuse(...args) : await quick(...args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      assert.match(r.out, re);
    }
  });
  test('wrong commands, flags and values: exit 2 and a message naming them', async () => {
    for (const [args, re] of [
      [['trian'], /unknown command "trian"/],
      [['train', '--stpes', '3'], /unknown option --stpes \(did you mean --steps\?\)/],
      [['train', '--steps', '-3'], /--steps: expected an integer >= 1, got -3/],
      [['train', '--lr'], /--lr needs a value/],
      [['train', '--objective', 'vp'], /--objective: expected 'eps' or 'x0' or 'v' or 'edm' or 'edm2' \('ddpm' = 'eps'\), got "vp"/],
      [['train', 'extra'], /unexpected argument "extra"/],
      [['train', '--config', 'nope.json'], /--config nope.json: file not found/],
      [['sample', '--n', 'many'], /--n: expected an integer in \[1, 100000\], got "many"/],
      [['sample', 'a', 'b'], /expected at most one CHECKPOINT/],
      [['info'], /expected one CHECKPOINT folder, got none/],
    ] as [string[], RegExp][]) {
      const r = args[0] === 'trian' ? diffuse(...args) : await quick(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.err}`);
      assert.match(r.err, re);
    }
  });
  test('a config file: its keys are checked, and flags override it', async () => {
    const file = path.join(root, 'bad.json');
    fs.writeFileSync(file, JSON.stringify({ steps: 10, batchsize: 3 }));
    let r = await quick('train', '--config', file);
    assert.equal(r.code, 2);
    assert.match(r.err, /bad.json: batchsize: unknown option \(did you mean batchSize\?\)/);
    const good = path.join(root, 'good.json');
    fs.writeFileSync(good, JSON.stringify({ steps: 10, lr: 0.01, model: { type: 'mlp', hidden: 16 } }));
    r = await quick('train', '--config', good, '--lr', '0.02', '--print-config');
    assert.equal(r.code, 0, r.err);
    const c = JSON.parse(r.out);
    assert.equal(c.steps, 10);
    assert.equal(c.lr, 0.02);
    assert.deepEqual(c.model, { type: 'mlp', hidden: 16 });
  });
  test('train --profile: a per-op table of a few steps, and nothing written', async () => {
    const out = path.join(root, 'profiled');
    const r = await quick('train', ...TINY, '--steps', '10', '--threads', '1', '--out', out, '--profile');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /3 training steps after 1 warm-up step: [\d.]+ ms per step/);
    assert.match(r.out, /aten::mkldnn_convolution\s+op\s+\d+/);
    assert.match(r.out, /aten::convolution_backward\s+op\s+\d+/);
    assert.match(r.out, /outside ATen \(JS, N-API, handles\)/);
    assert.equal(fs.existsSync(out), false, 'profiling writes no run folder');
  });
});

describe('train -> info -> sample -> resume (tiny U-Net, 256 Fashion-MNIST images)', () => {
  let run: string;
  before(() => (run = path.join(root, 'run')));

  test('train 20 steps', async () => {
    const r = diffuse('train', ...TINY, '--steps', '20', '--out', run);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /class-conditional \(10 classes, label dropout 0.1\)/);
    assert.match(r.err, /done at step 20/);
    for (const f of ['checkpoint.json', 'loss.png', 'samples-000010.png', 'samples-000020.png', 'model-00000020.safetensors', 'ema-00000020.safetensors', 'optimizer-00000020.safetensors'])
      assert.ok(fs.existsSync(path.join(run, f)), f);
    const grid = decodeImage(fs.readFileSync(path.join(run, 'samples-000020.png')), 'grid');
    assert.equal(grid.width, 10 * (64 + 2) + 2, 'one column per class, 32 x 32 images at 2x');
    const again = await quick('train', ...TINY, '--steps', '20', '--out', run);
    assert.equal(again.code, 2);
    assert.match(again.err, /already holds a checkpoint; continue it with --resume/);
  });

  test('info', async () => {
    const r = diffuse('info', run);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /step 20 of 20/);
    assert.match(r.out, /unet, [\d,]+ parameters/);
    assert.match(r.out, /10 classes: T-shirt\/top, Trouser/);
    assert.match(r.out, /model-00000020.safetensors {2}[\d.]+ KB \(model\)/);
    const j = JSON.parse((await quick('info', run, '--json')).out);
    assert.equal(j.step, 20);
  });

  test('sample: a grid, one PNG per sample, a class by name, bad classes', async () => {
    let r = diffuse('sample', run, '--n', '6', '--steps', '3', '--out', 'grid.png', '--ncol', '3');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote grid.png: 6 samples from .* \(step 20, ema weights\), 3 steps, seed 0/);
    const g = decodeImage(fs.readFileSync(path.join(root, 'grid.png')), 'grid.png');
    assert.deepEqual([g.width, g.height], [3 * 34 + 2, 2 * 34 + 2]);
    r = await quick('sample', run, '--n', '3', '--steps', '2', '--seed', '7', '--class', 'sneaker', '--out-dir', 'each');
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fs.readdirSync(path.join(root, 'each')).sort(), ['000007.png', '000008.png', '000009.png']);
    r = await quick('sample', run, '--class', 'hat');
    assert.equal(r.code, 2);
    assert.match(r.err, /--class hat: not a class of this model; classes: 0 T-shirt\/top, 1 Trouser/);
    r = await quick('sample', run, '--steps', '1001');
    assert.equal(r.code, 2);
    assert.match(r.err, /--steps: expected an integer in \[1, 1000\], got "1001"/);
  });

  test('resume to 25 steps; only resumable options may change, repeated values may be given', async () => {
    let r = await quick('train', '--resume', run, '--lr', '0.1');
    assert.equal(r.code, 2);
    assert.match(r.err, /--lr: "0.1" cannot change when resuming the run in .*: its lr is 0.001 \(only --steps, .* can change\)/);
    r = await quick('train', '--resume', run, '--model-channels', '16');
    assert.equal(r.code, 2);
    assert.match(r.err, /--model-channels: "\d+" cannot change when resuming the run in .*: its modelChannels is 8 /);
    // The original command's own values may be repeated: only a change is refused.
    r = diffuse('train', '--resume', run, ...TINY, '--steps', '25', '--sample-every', '0');
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /done at step 25/);
    assert.equal(JSON.parse(fs.readFileSync(path.join(run, 'checkpoint.json'), 'utf8')).step, 25);
  });

  test('a corrupt checkpoint: exit 1, the file named', async () => {
    const bad = path.join(root, 'bad');
    fs.cpSync(run, bad, { recursive: true });
    const ema = path.join(bad, 'ema-00000025.safetensors');
    fs.truncateSync(ema, 64);
    const r = await quick('sample', bad, '--n', '1', '--steps', '1');
    assert.equal(r.code, 1);
    assert.ok(r.err.includes(`${ema}: has 64 bytes but checkpoint.json records`), r.err);
    const e = await quick('info', path.join(root, 'nothing-here'));
    assert.equal(e.code, 1);
    assert.match(e.err, /nothing-here\/checkpoint.json: not found: no such checkpoint folder/);
  });
});

describe('Ctrl-C', () => {
  test('writes a checkpoint and exits with 130', async () => {
    const out = path.join(root, 'sigint');
    const child = spawn(process.execPath, [MAIN, 'train', ...TOY, '--steps', '1000000', '--out', out], { env: ENV, cwd: root });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((resolve) => {
      const poll = setInterval(() => {
        if (err.includes(`out ${out}`)) {
          clearInterval(poll);
          setTimeout(() => child.kill('SIGINT'), 300);
        }
      }, 20);
      child.on('exit', (c) => {
        clearInterval(poll);
        resolve(c);
      });
    });
    assert.equal(code, 130, err);
    assert.match(err, /Ctrl-C: stopping after step \d+, writing a checkpoint/);
    const step = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint.json'), 'utf8')).step;
    assert.ok(step > 0, `step ${step}`);
    assert.match(err, new RegExp(`interrupted at step ${step}`));
  });
});

describe('the shipped model', () => {
  test('diffuse sample uses it with no CHECKPOINT', async () => {
    const r = await quick('sample', '--n', '2', '--steps', '2', '--class', 'Trouser', '--out', 'shipped.png');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /models\/fashion-mnist \(step \d+, ema weights\)/);
    assert.ok(fs.existsSync(path.join(root, 'shipped.png')));
  });
});
