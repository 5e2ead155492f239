// Data-parallel training over c10d (src/distributed/, native/dist.cc), on localhost with 2
// ranks x 1 thread: the collectives against known answers; 2 ranks with batch B take the
// steps of 1 process with batch 2B (the toy MLP and a tiny class-conditional U-Net, same
// weights to float tolerance); a 2-rank run resumed from its checkpoint matches an
// uninterrupted one bit for bit; a rank that dies or hangs stops the run with an error that
// names the op and the rank, within the timeout, and the last checkpoint stays whole.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadSafetensors, setNumThreads, Tensor, tidy } from '../src/engine';
import { distributedUnavailableReason, rendezvousFromEnv } from '../src/distributed';
import { decodeFloats, readCheckpointMeta } from '../src/training/checkpoint';
import { resolveTrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';

setNumThreads(1);
const MAIN = path.join(__dirname, '..', 'src', 'cli', 'main.js');
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-dist-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A TCP port nobody listens on now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

interface Run {
  child: ChildProcess;
  /** stdout and stderr so far. */
  out: () => string;
  done: Promise<number | null>;
}

function start(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const child = spawn(process.execPath, args, { env: { ...process.env, DIFFUSE_NUM_THREADS: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr.on('data', (d: Buffer) => (text += d.toString()));
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, out: () => text, done };
}

/** `diffuse train` with 2 ranks on this machine, 1 thread each. */
async function train2(port: number, ...args: string[]): Promise<{ code: number | null; out: string }> {
  const r = start([MAIN, 'train', '--nproc-per-node', '2', '--master-port', String(port), '--threads', '1', ...args]);
  const code = await r.done;
  return { code, out: r.out() };
}

const weights = (dir: string): Record<string, Tensor> => loadSafetensors(path.join(dir, readCheckpointMeta(dir).files.model!.file)).tensors;

/** The largest |a - b| over every tensor of two state dicts with the same names. */
function maxDiff(a: Record<string, Tensor>, b: Record<string, Tensor>): number {
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
  return tidy(() => Math.max(...Object.keys(a).map((k) => a[k].sub(b[k]).abs().max().item())));
}

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
  '--warmup-steps',
  '2',
  '--sample-every',
  '0',
  '--sample-count',
  '8',
  '--sample-steps',
  '2',
];

test('this addon has c10d Gloo process groups', () => {
  assert.equal(distributedUnavailableReason(), '');
  assert.equal(rendezvousFromEnv({}), null);
  assert.deepEqual(rendezvousFromEnv({ WORLD_SIZE: '2', RANK: '1', MASTER_ADDR: 'h', MASTER_PORT: '29500' }), {
    masterAddr: 'h',
    masterPort: 29500,
    rank: 1,
    worldSize: 2,
    localRank: 1,
    timeoutSeconds: 300,
  });
  assert.throws(() => rendezvousFromEnv({ WORLD_SIZE: '2', RANK: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' }), /RANK must be below WORLD_SIZE \(2\), got 2/);
  assert.throws(() => rendezvousFromEnv({ WORLD_SIZE: '2', RANK: '0', MASTER_ADDR: 'h', MASTER_PORT: 'x' }), /MASTER_PORT must be an integer >= 1, got "x"/);
});

test('collectives on 2 ranks: all-reduce (sum, avg), broadcast, all-gather, barrier, bucketed gradient average, shape check', async () => {
  const port = await freePort();
  const worker = path.join(__dirname, 'distributed-worker.js');
  const ranks = [0, 1].map((r) => start([worker], { WORLD_SIZE: '2', RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), DIFFUSE_DIST_TIMEOUT: '30' }));
  const codes = await Promise.all(ranks.map((r) => r.done));
  assert.deepEqual(codes, [0, 0], ranks.map((r) => r.out()).join('\n'));
  for (const [rank, run] of ranks.entries()) {
    const o = JSON.parse(run.out().trim().split('\n').pop()!) as Record<string, unknown>;
    assert.deepEqual(o.sum, [3, 30]);
    assert.deepEqual(o.avg, [1.5, 15]);
    assert.deepEqual(o.broadcast, [1, 1, 1]);
    assert.deepEqual(o.gathered, [
      [0, 5],
      [1, 7],
    ]);
    assert.deepEqual(o.grads, [
      [1.5, 3],
      [4.5, 6],
    ]);
    assert.equal(o.buckets, 2);
    assert.match(String(o.mismatch), new RegExp(`rank ${1 - rank}'s model \\(1 tensors, ${rank === 0 ? 2 : 3} elements\\) does not match rank ${rank}'s \\(1 tensors, ${rank === 0 ? 3 : 2} elements`));
    assert.match(String(o.destroyed), /destroyed/);
  }
});

test('2 ranks with batch B take the steps of 1 process with batch 2B (toy MLP), and resume from their checkpoint bit for bit', async () => {
  const port = await freePort();
  const dp = path.join(root, 'dp');
  const r = await train2(port, ...TOY, '--batch-size', '16', '--steps', '6', '--checkpoint-every', '3', '--out', dp);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /batch 16 x 2 ranks/);
  assert.equal((r.out.match(/^done at step 6/gm) ?? []).length, 1, 'rank 0 alone logs');

  const config = resolveTrainConfig({
    data: '8gaussians',
    model: { type: 'mlp', hidden: 32, depth: 2 },
    sigmaData: 1,
    warmupSteps: 2,
    sampleEvery: 0,
    sampleCount: 8,
    sampleSteps: 2,
    batchSize: 32,
    steps: 6,
    checkpointEvery: 0,
    out: path.join(root, 'one'),
  });
  const one = Trainer.create(config, { log: null });
  try {
    const losses = Array.from({ length: 6 }, () => one.trainStep());
    const meta = readCheckpointMeta(dp);
    const dpLosses = decodeFloats(meta.state!.losses);
    for (let i = 0; i < 6; i++) assert.ok(Math.abs(dpLosses[i] - losses[i]) <= 1e-5 * Math.abs(losses[i]), `step ${i + 1}: loss ${dpLosses[i]} (2 ranks) vs ${losses[i]} (1 process)`);
    const d = maxDiff(weights(dp), one.net.stateDict());
    assert.ok(d < 1e-5, `weights differ by ${d}`);
    process.stdout.write(`toy MLP: 2 ranks vs 1 process, largest weight difference ${d}\n`);
  } finally {
    one.dispose();
  }

  // 3 steps, then a resumed run to 6: the weights of the uninterrupted 2-rank run, bit for bit.
  const half = path.join(root, 'half');
  assert.equal((await train2(port, ...TOY, '--batch-size', '16', '--steps', '3', '--out', half)).code, 0);
  const resumed = await train2(port, '--resume', half, '--steps', '6');
  assert.equal(resumed.code, 0, resumed.out);
  assert.equal(maxDiff(weights(half), weights(dp)), 0);
  // Another world size does not resume it.
  const wrong = start([MAIN, 'train', '--resume', half, '--steps', '9']);
  assert.equal(await wrong.done, 2);
  assert.match(wrong.out(), /was trained by 2 ranks \(global batch 32\) and this run has 1: resume with the same world size/);
});

test('2 ranks of a tiny class-conditional U-Net (labels, label dropout) take the steps of 1 process with the global batch', async () => {
  const port = await freePort();
  const unet = [
    '--data-limit',
    '64',
    '--model',
    'unet',
    '--model-channels',
    '8',
    '--groups',
    '4',
    '--channel-mult',
    '1,2',
    '--attention-resolutions',
    '',
    '--mid-attention',
    'false',
    '--dropout',
    '0',
  ];
  const common = [...unet, '--label-dropout', '0.5', '--warmup-steps', '1', '--steps', '3', '--sample-every', '0', '--sample-count', '2', '--sample-steps', '2'];
  const dp = path.join(root, 'unet-dp');
  const r = await train2(port, ...common, '--batch-size', '4', '--out', dp);
  assert.equal(r.code, 0, r.out);
  const ref = path.join(root, 'unet-one');
  const one = start([MAIN, 'train', ...common, '--batch-size', '8', '--threads', '1', '--out', ref]);
  assert.equal(await one.done, 0, one.out());
  const d = maxDiff(weights(dp), weights(ref));
  assert.ok(d < 1e-5, `weights differ by ${d}`);
  process.stdout.write(`tiny U-Net: 2 ranks vs 1 process, largest weight difference ${d}\n`);
});

/** Starts a long 2-rank toy run and waits for its first checkpoint; returns the run and the ranks' pids. */
async function longRun(out: string, timeout: number): Promise<{ run: Run; pids: number[] }> {
  const port = await freePort();
  const run = start([
    MAIN,
    'train',
    '--nproc-per-node',
    '2',
    '--master-port',
    String(port),
    '--threads',
    '1',
    '--dist-timeout',
    String(timeout),
    ...TOY,
    '--batch-size',
    '16',
    '--steps',
    '1000000',
    '--checkpoint-every',
    '20',
    '--out',
    out,
  ]);
  const t0 = Date.now();
  while (!fs.existsSync(path.join(out, 'checkpoint.json'))) {
    assert.ok(Date.now() - t0 < 60_000, `no checkpoint after 60 s:\n${run.out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const pids = [...run.out().matchAll(/launch: rank (\d) of 2 .*pid (\d+)/g)].sort((a, b) => Number(a[1]) - Number(b[1])).map((m) => Number(m[2]));
  assert.equal(pids.length, 2, run.out());
  return { run, pids };
}

/** The run's checkpoint reads back whole: its JSON and every file it names. */
function checkpointWhole(out: string): void {
  const meta = readCheckpointMeta(out);
  assert.ok(meta.step >= 20 && meta.step % 20 === 0, `checkpoint step ${meta.step}`);
  for (const rec of Object.values(meta.files)) for (const t of Object.values(loadSafetensors(path.join(out, rec.file)).tensors)) t.dispose();
}

test('a rank that dies stops the run at once: the other names the op and its rank, the launcher exits non-zero, the checkpoint stays whole', async () => {
  const out = path.join(root, 'killed');
  const { run, pids } = await longRun(out, 20);
  const t0 = Date.now();
  process.kill(pids[1], 'SIGKILL');
  const code = await run.done;
  const seconds = (Date.now() - t0) / 1000;
  assert.notEqual(code, 0);
  assert.ok(seconds < 20, `took ${seconds} s`);
  assert.match(run.out(), /launch: rank 1 was killed by SIGKILL/);
  assert.match(run.out(), /diffuse train: error: (allReduce|allReduce of the gradients|barrier|broadcast) failed on rank 0 of 2 \(timeout 20 s\): .*another rank died, hung or left the run/);
  checkpointWhole(out);
});

test('a rank that hangs stops the run after the timeout with an error naming the op and the rank', async () => {
  const out = path.join(root, 'hung');
  const { run, pids } = await longRun(out, 6);
  const t0 = Date.now();
  process.kill(pids[1], 'SIGSTOP');
  const code = await run.done;
  const seconds = (Date.now() - t0) / 1000;
  assert.notEqual(code, 0);
  assert.ok(seconds < 6 + 5 + 5, `took ${seconds} s (timeout 6 s, grace 5 s)`);
  assert.match(run.out(), /failed on rank 0 of 2 \(timeout 6 s\)/);
  checkpointWhole(out);
});
