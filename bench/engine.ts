/**
 * The engine against PyTorch eager on the same machine, in one run: the same three
 * workloads on the same libtorch, here through the addon and there through Python
 * (Debian's python3-torch, driven as a child process by bench/engine_peer.py).
 *
 *   (a) conv: a training step of two 3x3 convolutions (batch 32, 32 -> 64 -> 64
 *       channels at 32 x 32, SiLU), mean-square loss;
 *   (b) mlp: a training step of the 2-D toy denoiser's size (batch 256,
 *       2 -> 256 -> 256 -> 256 -> 2, SiLU), mean-square loss;
 *   (c) small: the per-op cost, a.add(b) on 16-element tensors, 100k times. Each
 *       result is disposed at once (PyTorch frees it at once by refcounting); a
 *       second, informational row runs the same ops in a tidy() per 1000.
 *
 * A training step is the same on both sides: forward, loss, backward, then a manual
 * SGD update `p += -lr * p.grad` under no-grad and `p.grad = null` (no optimizer
 * object); ours runs in a tidy() so nothing leaks. Parameters and data come from the
 * same seeded generator streams, so both sides compute the same numbers (the final
 * losses are printed side by side as a check). Both sides use the same thread count
 * (ours: os.availableParallelism() unless DIFFUSE_NUM_THREADS says otherwise).
 *
 * Repeats alternate between the two sides (ours then theirs, then theirs then ours,
 * ...) so that a noisy stretch hits both; the table reports medians over repeats and
 * the spread. The last line is `engine/pytorch throughput ratio: R`, R the smallest
 * of the three ratios (ours over PyTorch's throughput; >= 1 means no slower).
 *
 * Run: npx tsc -p tsconfig.json && npm run bench:engine
 * Env: BENCH_REPEATS (default 11).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { arange, F, Generator, getNumThreads, mallocPolicy, memory, noGrad, Tensor, tidy, torchVersion, zeros } from '../src/engine';
import { median, Peer, Reply } from './peer';

const PYTHON = '/usr/bin/python3'; // Debian's, with python3-torch (a pyenv python3 on PATH may lack torch)
const SMALL_OPS = 100_000;

// ---- the workloads (mirrored op for op in engine_peer.py) ----
interface Model {
  params: Tensor[];
  lr: number;
  loss(): Tensor;
}

const randn = (g: Generator, shape: number[], scale = 1): Tensor => tidy(() => (scale === 1 ? g.randn(shape) : g.randn(shape).mul(scale)));

function convModel(): Model {
  const g = new Generator(1);
  const x = randn(g, [32, 32, 32, 32]);
  const y = randn(g, [32, 64, 32, 32]);
  const params = [randn(g, [64, 32, 3, 3], 1 / Math.sqrt(32 * 9)), zeros([64]), randn(g, [64, 64, 3, 3], 1 / Math.sqrt(64 * 9)), zeros([64])];
  params.forEach((p) => p.requiresGrad_());
  return {
    params,
    lr: 1e-2,
    loss: () => {
      const [w1, b1, w2, b2] = params;
      let h = F.conv2d(x, w1, { bias: b1, padding: 1 }).silu();
      h = F.conv2d(h, w2, { bias: b2, padding: 1 }).silu();
      return F.mseLoss(h, y);
    },
  };
}

function mlpModel(): Model {
  const sizes = [2, 256, 256, 256, 2];
  const g = new Generator(2);
  const x = randn(g, [256, 2]);
  const y = randn(g, [256, 2]);
  const params: Tensor[] = [];
  for (let i = 0; i + 1 < sizes.length; i++) params.push(randn(g, [sizes[i + 1], sizes[i]], 1 / Math.sqrt(sizes[i])), zeros([sizes[i + 1]]));
  params.forEach((p) => p.requiresGrad_());
  const n = params.length / 2;
  return {
    params,
    lr: 1e-2,
    loss: () => {
      let h = x;
      for (let i = 0; i < n; i++) {
        h = F.linear(h, params[2 * i], params[2 * i + 1]);
        if (i < n - 1) h = h.silu();
      }
      return F.mseLoss(h, y);
    },
  };
}

function trainStep(m: Model): void {
  tidy(() => {
    m.loss().backward();
    noGrad(() => {
      for (const p of m.params) p.add_(p.grad!, -m.lr);
    });
    for (const p of m.params) p.grad = null;
  });
}

type Workload = 'conv' | 'mlp' | 'small' | 'smallTidy';

class Ours {
  readonly models = { conv: convModel(), mlp: mlpModel() };
  readonly a = arange(0, 16, 1, { dtype: 'float32' });
  readonly b = tidy(() => arange(0, 16, 1, { dtype: 'float32' }).flip(0));

  /** Seconds for n steps (conv, mlp) or n ops (small: each result disposed; smallTidy: a tidy per 1000). */
  run(w: Workload, n: number): number {
    const { a, b } = this;
    const t0 = performance.now();
    if (w === 'small') {
      for (let i = 0; i < n; i++) a.add(b).dispose();
    } else if (w === 'smallTidy') {
      for (let i = 0; i < n; i += 1000)
        tidy(() => {
          for (let k = 0; k < 1000; k++) a.add(b);
        });
    } else {
      const m = this.models[w];
      for (let i = 0; i < n; i++) trainStep(m);
    }
    return (performance.now() - t0) / 1000;
  }

  loss(w: 'conv' | 'mlp'): number {
    return noGrad(() => tidy(() => this.models[w].loss().item()));
  }
}

// ---- the peer: PyTorch eager in a child process (bench/peer.ts), one JSON line per request ----
async function startPeer(threads: number): Promise<{ peer: Peer; hello: Reply }> {
  const script = [path.resolve(__dirname, 'engine_peer.py'), path.resolve(__dirname, '../../bench/engine_peer.py')].find((p) => fs.existsSync(p));
  if (!script) throw new Error('bench/engine_peer.py not found');
  if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} not found: the peer needs Debian's python3 with python3-torch (npm run setup installs it)`);
  return Peer.start(PYTHON, script, ['--threads', String(threads)]);
}

/** Seconds the peer took for n iterations of workload w. */
async function peerRun(peer: Peer, w: Workload, n: number): Promise<number> {
  return (await peer.request({ cmd: 'run', workload: w === 'smallTidy' ? 'small' : w, n })).seconds as number;
}

// ---- statistics and printing ----
const fmt = (x: number): string => (x >= 1e4 ? x.toExponential(3) : x >= 100 ? x.toFixed(0) : x.toFixed(2));

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    return m ? m[1].trim() : (os.cpus()[0]?.model ?? 'unknown');
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

async function main(): Promise<void> {
  const t00 = performance.now();
  const repeats = Number(process.env.BENCH_REPEATS ?? 11);
  if (!Number.isSafeInteger(repeats) || repeats < 1) throw new RangeError(`BENCH_REPEATS must be a positive integer, got ${process.env.BENCH_REPEATS}`);
  const threads = getNumThreads();
  const load0 = os.loadavg();
  const { peer, hello } = await startPeer(threads);
  if (hello.threads !== threads) throw new Error(`the peer runs ${String(hello.threads)} threads, ours ${threads}`);

  console.log('Engine vs PyTorch eager: same machine, same libtorch, same workloads, alternating repeats');
  console.log(`date:     ${new Date().toISOString()}`);
  console.log(`machine:  ${cpuModel()}, ${os.cpus().length} logical CPUs (${os.availableParallelism()} available), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.platform()} ${os.release()}`);
  console.log(`threads:  ours ${threads}, pytorch ${String(hello.threads)} (torch.set_num_threads)`);
  console.log(`malloc:   ours ${mallocPolicy()}; pytorch glibc's policy (and any MALLOC_* settings both sides inherit)`);
  console.log(`versions: ours libtorch ${torchVersion()} via the addon on Node ${process.versions.node}; peer torch ${String(hello.torch)} on Python ${String(hello.python)}`);
  console.log(`load average at start: ${load0.map((l) => l.toFixed(2)).join(' ')}`);

  const ours = new Ours();
  const before = memory().tensors;
  // Warm up (kernels, allocators, JIT: 3 conv and 30 mlp steps, as the peer does), and
  // size a repeat at ~0.75 s of our time from the last warm-up steps (at least 2 conv
  // and 20 mlp steps).
  ours.run('conv', 1);
  ours.run('mlp', 10);
  const size = (w: 'conv' | 'mlp', probe: number) => Math.max(probe, Math.round((0.75 * probe) / ours.run(w, probe)));
  const n: Record<Workload, number> = { conv: size('conv', 2), mlp: size('mlp', 20), small: SMALL_OPS, smallTidy: SMALL_OPS };
  ours.run('small', 10_000);
  ours.run('smallTidy', 10_000);
  await peer.request({ cmd: 'warmup' });
  const workloads: Workload[] = ['conv', 'mlp', 'small', 'smallTidy'];
  const secs = { ours: {} as Record<Workload, number[]>, peer: {} as Record<Workload, number[]> };
  for (const w of workloads) {
    secs.ours[w] = [];
    secs.peer[w] = [];
  }

  for (let r = 0; r < repeats; r++) {
    for (const w of workloads) {
      if (w === 'smallTidy') {
        secs.ours[w].push(ours.run(w, n[w])); // informational: compared with the peer's small-op repeats
        continue;
      }
      if (r % 2 === 0) {
        secs.ours[w].push(ours.run(w, n[w]));
        secs.peer[w].push(await peerRun(peer, w, n[w]));
      } else {
        secs.peer[w].push(await peerRun(peer, w, n[w]));
        secs.ours[w].push(ours.run(w, n[w]));
      }
    }
  }
  secs.peer.smallTidy = secs.peer.small;
  const losses = {
    conv: [ours.loss('conv'), (await peer.request({ cmd: 'loss', workload: 'conv' })).loss as number],
    mlp: [ours.loss('mlp'), (await peer.request({ cmd: 'loss', workload: 'mlp' })).loss as number],
  };
  await peer.close();
  const leaked = memory().tensors - before;

  const rows: { label: string; unit: string; w: Workload; inR: boolean }[] = [
    { label: `(a) conv step  b32 32->64->64 3x3 @32x32, ${n.conv} steps/rep`, unit: 'steps/s', w: 'conv', inR: true },
    { label: `(b) mlp step   b256 2-256-256-256-2, ${n.mlp} steps/rep`, unit: 'steps/s', w: 'mlp', inR: true },
    { label: `(c) small op   a.add(b) 16 floats, dispose each, ${n.small / 1000}k/rep`, unit: 'ops/s', w: 'small', inR: true },
    { label: `    small op   same, tidy() per 1000 (info, not in R)`, unit: 'ops/s', w: 'smallTidy', inR: false },
  ];
  console.log(`\nmedians over ${repeats} alternating repeats; under each median, the min-max of the repeats;`);
  console.log('ours/pytorch = median ours / median pytorch (R is the least of (a)-(c)); paired = the ratios of back-to-back repeats, median [min-max]');
  const header = ['workload'.padEnd(58), 'ours'.padStart(24), 'pytorch'.padStart(24), 'ours/pytorch'.padStart(13), 'paired'.padStart(22)];
  console.log(header.join(' '));
  let R = Infinity;
  for (const row of rows) {
    const thr = (s: number[]) => s.map((x) => n[row.w] / x);
    const o = thr(secs.ours[row.w]);
    const p = thr(secs.peer[row.w]);
    const ratio = median(o) / median(p);
    const paired = o.map((x, i) => x / p[i]);
    if (row.inR) R = Math.min(R, ratio);
    const cell = (xs: number[]) => `${fmt(median(xs))} ${row.unit}`.padStart(24);
    console.log(
      [row.label.padEnd(58), cell(o), cell(p), ratio.toFixed(3).padStart(13), `${median(paired).toFixed(2)} [${Math.min(...paired).toFixed(2)}-${Math.max(...paired).toFixed(2)}]`.padStart(22)].join(
        ' ',
      ),
    );
    const spread = (xs: number[]) => `${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}`;
    console.log(`${''.padEnd(58)} ${spread(o).padStart(24)} ${spread(p).padStart(24)}`);
  }
  const us = (s: number[]) => ((median(s) / SMALL_OPS) * 1e6).toFixed(3);
  console.log(`\nper small op: ours ${us(secs.ours.small)} us (dispose each), ${us(secs.ours.smallTidy)} us (tidy per 1000); pytorch ${us(secs.peer.small)} us`);
  console.log(
    `same numbers on both sides (loss after all steps): conv ours ${losses.conv[0].toPrecision(6)} pytorch ${losses.conv[1].toPrecision(6)}; mlp ours ${losses.mlp[0].toPrecision(6)} pytorch ${losses.mlp[1].toPrecision(6)}`,
  );
  console.log(`live tensors after the runs: ${leaked >= 0 ? '+' : ''}${leaked} (tidy and dispose leave none)`);
  console.log(
    `load average at end: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}; total ${((performance.now() - t00) / 1000).toFixed(0)} s`,
  );
  console.log(`engine/pytorch throughput ratio: ${R.toFixed(3)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
