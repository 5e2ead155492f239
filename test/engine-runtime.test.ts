// Threads, worker_threads, grad modes, autocast and devices.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  autocast,
  cuda,
  dispose,
  enableGrad,
  F,
  Generator,
  getNumThreads,
  isAutocastEnabled,
  isGradEnabled,
  mallocPolicy,
  memory,
  noGrad,
  ones,
  profile,
  setNumThreads,
  tensor,
  tidy,
  torchConfig,
  torchVersion,
  zeros,
} from '../src/engine';

const engine = path.resolve(__dirname, '../src/engine');

test('keeps freed tensor memory for the next step on glibc, unless DIFFUSE_MALLOC=default or MALLOC_* say otherwise', () => {
  if (process.env.DIFFUSE_MALLOC === undefined && !Object.keys(process.env).some((k) => k.startsWith('MALLOC_') || k === 'GLIBC_TUNABLES'))
    assert.match(mallocPolicy(), /^diffuse: no mmap \(every block from the heap\), trim threshold 1 GiB$/);
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MALLOC_') && k !== 'GLIBC_TUNABLES' && k !== 'DIFFUSE_MALLOC'));
  const run = (env: Record<string, string>) =>
    execFileSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(engine)}).mallocPolicy())`], { env: { ...clean, ...env }, encoding: 'utf8' }).trim();
  assert.equal(run({}), 'diffuse: no mmap (every block from the heap), trim threshold 1 GiB');
  assert.equal(run({ DIFFUSE_MALLOC: 'default' }), 'glibc defaults (DIFFUSE_MALLOC=default)');
  assert.equal(run({ MALLOC_TRIM_THRESHOLD_: '1000000' }), "the environment's (MALLOC_TRIM_THRESHOLD_ is set)");
});

test('uses every available core by default, and DIFFUSE_NUM_THREADS overrides it', () => {
  assert.equal(getNumThreads(), os.availableParallelism());
  const run = (env: Record<string, string>) =>
    execFileSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(engine)}).getNumThreads())`], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
      .toString()
      .trim();
  assert.equal(run({ DIFFUSE_NUM_THREADS: '1' }), '1');
  assert.throws(() => run({ DIFFUSE_NUM_THREADS: 'many' }), /DIFFUSE_NUM_THREADS must be a positive integer/);
  setNumThreads(1);
  assert.equal(getNumThreads(), 1);
  setNumThreads(os.availableParallelism());
  assert.throws(() => setNumThreads(0), /positive integer/);
});

test('libtorch reports its version and an OpenMP build with the OpenBLAS backend', () => {
  assert.match(torchVersion(), /^\d+\.\d+/);
  assert.match(torchConfig(), /OpenMP/);
});

test('the engine loads and trains in a worker_thread without blocking the event loop', async () => {
  const code = `
    const { parentPort } = require('node:worker_threads');
    const e = require(${JSON.stringify(engine)});
    const g = new e.Generator(1);
    const w = g.randn([8, 3, 3, 3]).requiresGrad_();
    const x = g.randn([16, 3, 16, 16]);
    let loss = 0;
    for (let i = 0; i < 60; i++) {
      loss = e.tidy(() => {
        const l = e.F.conv2d(x, w, { padding: 1 }).square().mean();
        const [gw] = e.grad(l, w);
        e.noGrad(() => w.add_(gw, -0.1));
        return l.item();
      });
    }
    parentPort.postMessage({ loss, threads: e.getNumThreads(), w: Array.from(w.toFloat64Array()) });
  `;
  const before = memory().tensors;
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const result = await new Promise<{ loss: number; threads: number; w: number[] }>((resolve, reject) => {
    const worker = new Worker(code, { eval: true });
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  clearInterval(timer);
  assert.ok(ticks > 5, `the main event loop kept running (${ticks} ticks)`);
  assert.equal(result.threads, os.availableParallelism(), 'the worker sets its own thread pool');
  // The same computation on the main thread gives the same weights.
  const g = new Generator(1);
  const w = g.randn([8, 3, 3, 3]).requiresGrad_();
  const x = g.randn([16, 3, 16, 16]);
  for (let i = 0; i < 60; i++)
    tidy(() => {
      const l = F.conv2d(x, w, { padding: 1 }).square().mean();
      l.backward();
      noGrad(() => w.add_(w.grad!, -0.1));
      w.grad = null;
    });
  const ours = Array.from(w.toFloat64Array());
  ours.forEach((v, i) => assert.ok(Math.abs(v - result.w[i]) < 1e-5, `weight ${i}: ${v} vs ${result.w[i]}`));
  w.dispose();
  x.dispose();
  // The worker's tensors were released when its environment was torn down.
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(memory().tensors, before);
});

test('noGrad and enableGrad scope the autograd graph', () => {
  const x = ones([2]).requiresGrad_();
  assert.equal(isGradEnabled(), true);
  const y = noGrad(() => {
    assert.equal(isGradEnabled(), false);
    const inner = enableGrad(() => x.mul(2));
    assert.equal(inner.requiresGrad, true);
    return x.mul(2);
  });
  assert.equal(y.requiresGrad, false);
  assert.equal(isGradEnabled(), true);
  assert.throws(
    () =>
      noGrad(() => {
        throw new Error('inside');
      }),
    /inside/,
  );
  assert.equal(isGradEnabled(), true, 'restored after a throw');
});

test('CPU autocast runs matmul and conv in bfloat16, close to float32, and restores state', () => {
  tidy(() => {
    const g = new Generator(3);
    const x = g.randn([4, 3, 8, 8]);
    const w = g.randn([5, 3, 3, 3]);
    const a = g.randn([16, 32]);
    const b = g.randn([8, 32]);
    const ref = F.conv2d(x, w, { padding: 1 });
    const lin = F.linear(a, b);
    const [conv16, lin16] = autocast(() => {
      assert.equal(isAutocastEnabled(), true);
      return [F.conv2d(x, w, { padding: 1 }), F.linear(a, b)];
    });
    assert.equal(isAutocastEnabled(), false);
    assert.equal(conv16.dtype, 'bfloat16');
    assert.equal(lin16.dtype, 'bfloat16');
    const rel = (p: typeof ref, q: typeof ref) => p.float().sub(q).norm().div(q.norm()).item();
    assert.ok(rel(conv16, ref) < 1e-2, `conv relative error ${rel(conv16, ref)}`);
    assert.ok(rel(lin16, lin) < 1e-2, `linear relative error ${rel(lin16, lin)}`);
    // Nested autocast with enabled: false turns it off inside only.
    autocast(() => {
      const inner = autocast(() => F.linear(a, b), { enabled: false });
      assert.equal(inner.dtype, 'float32');
      assert.equal(isAutocastEnabled(), true);
    });
  });
});

test('tensors move between devices and dtypes', () => {
  tidy(() => {
    const t = tensor([1.5, -2.25, 3]);
    assert.equal(t.device, 'cpu');
    assert.deepEqual(t.to({ dtype: 'float64' }).toArray(), [1.5, -2.25, 3]);
    assert.deepEqual(t.bfloat16().float().toArray(), [1.5, -2.25, 3]);
    assert.deepEqual(t.half().toArray(), [1.5, -2.25, 3]);
    assert.deepEqual(t.to('int64').toArray(), [1, -2, 3]);
    if (cuda.isAvailable()) {
      const c = t.to({ device: 'cuda:0', dtype: 'bfloat16' });
      assert.equal(c.device, 'cuda:0');
      assert.deepEqual(c.cpu().float().toArray(), [1.5, -2.25, 3]);
      // Seeded samples are the same on every device.
      assert.deepEqual(new Generator(5).randn([4], { device: 'cuda' }).cpu().toArray(), new Generator(5).randn([4]).toArray());
    }
  });
});

test('profile counts and times each ATen op and backward function', () => {
  const g = new Generator(0);
  const x = g.randn([2, 3, 8, 8]);
  const w = g.randn([4, 3, 3, 3]).requiresGrad_();
  const { result, report } = profile(() =>
    tidy(() => {
      let y = x;
      for (let i = 0; i < 3; i++) y = F.conv2d(x, w, { padding: 1 }).add(y.mean());
      y.square().sum().backward();
      return 42;
    }),
  );
  assert.equal(result, 42);
  const row = (name: string, kind = 'op') => report.ops.find((o) => o.name === name && o.kind === kind);
  assert.equal(row('aten::conv2d')?.calls, 3);
  assert.ok((row('aten::add')?.calls ?? 0) >= 3);
  assert.ok(row('ConvolutionBackward0', 'backward'), `backward rows: ${report.ops.filter((o) => o.kind === 'backward').map((o) => o.name)}`);
  const conv = row('aten::conv2d')!;
  assert.ok(conv.totalMs >= conv.selfMs && conv.selfMs >= 0 && conv.topMs <= conv.totalMs + 1e-9);
  // Self times partition the time inside ATen: their sum is the outermost ops' total.
  const self = report.ops.reduce((s, o) => s + o.selfMs, 0);
  assert.ok(Math.abs(self - report.insideMs) < 1e-6 * Math.max(1, self), `${self} vs ${report.insideMs}`);
  assert.ok(report.insideMs <= report.wallMs && report.outsideMs >= 0);
  assert.match(report.format({ top: 3 }), /aten::\w+[\s\S]*outside ATen[\s\S]*wall/);
  w.grad?.dispose();
  dispose([x, w]);
});

test('profile stops the profiler when fn throws, and does not nest', () => {
  assert.throws(
    () =>
      profile(() => {
        throw new Error('boom');
      }),
    /boom/,
  );
  assert.throws(() => profile(() => profile(() => 1)), /already running/);
  const { report } = profile(() =>
    tidy(() => {
      zeros([2]).add(1);
    }),
  );
  assert.equal(report.ops.find((o) => o.name === 'aten::add')?.calls, 1);
});
