// Optimizers, clipping, schedules and the classic EMA.
//
// Trajectories: SGD (momentum, dampening, Nesterov, weight decay, clipping), Adam (L2 decay,
// AMSGrad, maximize) and AdamW (with a cosine schedule) against PyTorch 1.13 on a small MLP,
// 20 steps, from test/fixtures/optim.json (written by scripts/fixtures/optim.py). Some runs
// drop one parameter's gradient every few steps (per-parameter step counts then differ), and
// one parameter never has a gradient (it must not move).
// Tolerances, on every parameter after every step, |actual - expected| <= tol * max(1, |expected|):
//   float64  1e-12: the same libtorch computes the same ops on both sides; what remains is at
//            most summation order in the forward/backward (observed: 0, bit for bit).
//   float32  1e-6: a few float32 ulps for the same reason (observed: 0, bit for bit).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, DType, F, Generator, loadSafetensors, memory, saveSafetensors, tensor, Tensor, tidy, zeros } from '../src/engine';
import { native } from '../src/engine/native';
import {
  Adam,
  AdamOptions,
  AdamW,
  clipGradNorm,
  clipNorm,
  constantSchedule,
  cosineSchedule,
  EMA,
  emaBeta,
  edm2Schedule,
  linearWarmupSchedule,
  NamedParam,
  Optimizer,
  ParamGroups,
  PowerFunctionEMA,
  SGD,
  SGDOptions,
} from '../src/optim';

interface TensorJson {
  shape: number[];
  values: number[];
}
interface Run {
  name: string;
  optimizer: 'SGD' | 'Adam' | 'AdamW';
  options: Record<string, unknown>;
  dtype: 'float64' | 'float32';
  steps: number;
  drop?: { param: string; every: number };
  clip?: number;
  maximize?: boolean;
  schedule?: { lr: number; totalSteps: number; warmupSteps: number; minLr: number };
  lrs: number[];
  losses: number[];
  params: Record<string, number[]>[];
}
interface ClipCase {
  dtype: 'float64' | 'float32';
  maxNorm: number;
  normType: number | 'Infinity';
  totalNorm: number;
  grads: Record<string, number[]>;
}
const FIXTURE = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../test/fixtures/optim.json'), 'utf8')) as {
  problem: { x: TensorJson; y: TensorJson; names: string[]; params: Record<string, TensorJson> };
  runs: Run[];
  clip: ClipCase[];
};
const P = FIXTURE.problem;
const TOL: Record<string, number> = { float64: 1e-12, float32: 1e-6 };

const fromJson = (t: TensorJson, dtype: DType) => tensor(Float64Array.from(t.values), { shape: t.shape, dtype });

/** The fixture's MLP: fresh parameters (as named params), data, and the loss. */
function problem(dtype: DType) {
  const x = fromJson(P.x, dtype);
  const y = fromJson(P.y, dtype);
  const named: NamedParam[] = P.names.map((name) => ({ name, param: fromJson(P.params[name], dtype).requiresGrad_() }));
  const p = Object.fromEntries(named.map((n) => [n.name, n.param]));
  const loss = () => F.mseLoss(F.linear(F.linear(x, p.w1, p.b1).tanh(), p.w2, p.b2), y);
  const free = () => dispose([x, y, ...named.map((n) => n.param)]);
  return { x, y, named, p, loss, free };
}

function makeOptimizer(run: Run, named: NamedParam[]): Optimizer {
  if (run.optimizer === 'SGD') return new SGD(named, run.options as unknown as SGDOptions);
  const opts = run.options as AdamOptions;
  return run.optimizer === 'AdamW' ? new AdamW(named, opts) : new Adam(named, opts);
}

function maxError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length);
  let err = 0;
  for (let i = 0; i < actual.length; i++) err = Math.max(err, Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i])));
  return err;
}

for (const run of FIXTURE.runs) {
  test(`${run.name} (${run.dtype}) follows PyTorch's trajectory`, () => {
    const before = memory();
    const { named, p, loss, free } = problem(run.dtype);
    const opt = makeOptimizer(run, named);
    const schedule = run.schedule ? cosineSchedule(run.schedule) : constantSchedule(run.options.lr as number);
    let worst = 0;
    for (let step = 0; step < run.steps; step++) {
      opt.lr = schedule(step);
      assert.ok(Math.abs(opt.lr - run.lrs[step]) <= 1e-15 * run.lrs[step], `lr at step ${step}: ${opt.lr} vs ${run.lrs[step]}`);
      opt.zeroGrad();
      const l = tidy(() => {
        const v = loss();
        (run.maximize ? v.neg() : v).backward();
        return v.item();
      });
      assert.ok(Math.abs(l - run.losses[step]) <= TOL[run.dtype] * Math.max(1, Math.abs(run.losses[step])), `loss at step ${step}`);
      if (run.drop && step % run.drop.every === run.drop.every - 1) p[run.drop.param].grad = null;
      if (run.clip !== undefined) clipGradNorm(named, run.clip);
      opt.step();
      for (const name of P.names) {
        const err = maxError(p[name].toFloat64Array(), run.params[step][name]);
        worst = Math.max(worst, err);
        assert.ok(err <= TOL[run.dtype], `${name} after step ${step + 1}: error ${err}`);
      }
    }
    // Per-parameter step counts: the unused parameter was never updated, a dropped one less often.
    const counts = Object.fromEntries(P.names.map((n, i) => [n, opt.stepCount(i)]));
    assert.equal(counts.unused, 0);
    assert.deepEqual(
      p.unused.toFloat64Array(),
      Float64Array.from(P.params.unused.values).map((v) => (run.dtype === 'float32' ? Math.fround(v) : v)),
    );
    if (run.drop) assert.equal(counts[run.drop.param], run.steps - Math.floor(run.steps / run.drop.every));
    opt.zeroGrad();
    opt.dispose();
    free();
    assert.deepEqual(memory(), before);
    if (process.env.DIFFUSE_TEST_VERBOSE) console.log(`${run.name} ${run.dtype}: max relative error ${worst}`);
  });
}

test('clipGradNorm equals torch.nn.utils.clip_grad_norm_ (norm 2, 1, inf; clipping or not)', () => {
  for (const c of FIXTURE.clip) {
    const { named, p, loss, free } = problem(c.dtype);
    tidy(() => loss().backward());
    const normType = c.normType === 'Infinity' ? Infinity : c.normType;
    const total = clipGradNorm(named, c.maxNorm, { normType });
    const tol = TOL[c.dtype];
    assert.ok(Math.abs(total - c.totalNorm) <= tol * c.totalNorm, `${c.dtype} p=${normType}: total ${total} vs ${c.totalNorm}`);
    for (const name of P.names) {
      const g = p[name].grad;
      if (!(name in c.grads)) {
        assert.equal(g, null);
        continue;
      }
      const err = maxError(g!.toFloat64Array(), c.grads[name]);
      g!.dispose();
      assert.ok(err <= tol, `${c.dtype} p=${normType} maxNorm=${c.maxNorm}: ${name} error ${err}`);
    }
    free();
  }
});

test('clipNorm scales a list of gradient tensors the same way', () => {
  const { named, p, loss, free } = problem('float64');
  tidy(() => loss().backward());
  const grads = P.names.filter((n) => n !== 'unused').map((n) => p[n].grad!.clone());
  const a = clipNorm(grads, 0.05);
  const b = clipGradNorm(named, 0.05);
  assert.equal(a, b);
  grads.forEach((g, i) => assert.deepEqual(g.toFloat64Array(), p[P.names[i]].grad!.toFloat64Array()));
  assert.equal(clipNorm([], 1), 0);
  dispose(grads);
  free();
});

test('optimizer state goes through a safetensors checkpoint and training resumes identically', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-optim-'));
  try {
    const a = problem('float64');
    const b = problem('float64');
    const optA = new Adam(a.named, { lr: 0.01, amsgrad: true, weightDecay: 0.01 });
    const optB = new Adam(b.named, { lr: 0.5, amsgrad: true, weightDecay: 0.01 }); // lr comes from the checkpoint
    const train = (o: Optimizer, pr: typeof a, n: number) => {
      for (let i = 0; i < n; i++) {
        o.zeroGrad();
        tidy(() => pr.loss().backward());
        o.step();
      }
    };
    train(optA, a, 7);
    const state = optA.stateDict();
    assert.deepEqual(Object.keys(state.tensors).slice(0, 4), ['state.w1.exp_avg', 'state.w1.exp_avg_sq', 'state.w1.max_exp_avg_sq', 'state.w1.step']);
    assert.equal(state.tensors['state.w1.step'].item(), 7);
    assert.equal(state.tensors['state.unused.step'].item(), 0);
    assert.equal(state.metadata['optim.type'], 'Adam');
    assert.equal(JSON.parse(state.metadata['optim.options']).lr, 0.01);
    const file = path.join(dir, 'optim.safetensors');
    saveSafetensors(file, state.tensors, state.metadata);
    dispose(state.tensors);
    // The model weights travel separately; copy them, then the optimizer state.
    b.named.forEach((n, i) => n.param.detach().copy_(a.named[i].param));
    const loaded = loadSafetensors(file);
    optB.loadStateDict(loaded);
    dispose(loaded.tensors);
    assert.equal(optB.lr, 0.01);
    assert.equal(optB.stepCount(0), 7);
    train(optA, a, 5);
    train(optB, b, 5);
    for (const name of P.names) assert.deepEqual(b.p[name].toFloat64Array(), a.p[name].toFloat64Array(), name);
    // Another kind of optimizer, or a missing tensor, is refused before anything changes.
    const sgd = new SGD(b.named, { lr: 0.1, momentum: 0.9 });
    const st = optA.stateDict();
    assert.throws(() => sgd.loadStateDict(st), /SGD\.loadStateDict: the state is from Adam, not SGD/);
    st.tensors['state.b2.max_exp_avg_sq'].dispose();
    delete st.tensors['state.b2.max_exp_avg_sq'];
    const w1Before = tidy(() => optB.stateDict().tensors['state.w1.exp_avg'].toFloat64Array());
    assert.throws(() => optB.loadStateDict({ tensors: st.tensors, metadata: {} }), /the state has no tensor state\.b2\.max_exp_avg_sq/);
    assert.deepEqual(
      tidy(() => optB.stateDict().tensors['state.w1.exp_avg'].toFloat64Array()),
      w1Before,
    );
    dispose(st.tensors);
    [optA, optB, sgd].forEach((o) => o.dispose());
    a.free();
    b.free();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the native kernels also take explicit gradient lists (null entries skipped)', () => {
  const a = problem('float64');
  const b = problem('float64');
  const optA = new Adam(a.named, { lr: 0.01 });
  tidy(() => a.loss().backward());
  tidy(() => b.loss().backward());
  const grads = P.names.map((n) => b.p[n].grad);
  optA.step();
  // The same update through the list form: b's own optimizer state, grads passed explicitly.
  const handles = b.named.map((n) => n.param.handle);
  const m = native.zerosLikeList(handles);
  const v = native.zerosLikeList(handles);
  const steps = new Float64Array(handles.length);
  b.named.forEach((n) => (n.param.grad = null));
  native.adamStep(
    handles,
    grads.map((g) => g?.handle ?? null),
    m,
    v,
    null,
    steps,
    0.01,
    0.9,
    0.999,
    1e-8,
    0,
    false,
    false,
    false,
  );
  for (const name of P.names) assert.deepEqual(b.p[name].toFloat64Array(), a.p[name].toFloat64Array(), name);
  assert.deepEqual([...steps], [1, 1, 1, 1, 0]);
  assert.throws(
    () =>
      native.adamStep(
        handles,
        grads.slice(1).map((g) => g?.handle ?? null),
        m,
        v,
        null,
        steps,
        0.01,
        0.9,
        0.999,
        1e-8,
        0,
        false,
        false,
        false,
      ),
    /adamStep: gradients: 4 given for 5 parameters/,
  );
  dispose([...m, ...v].map((h) => new Tensor(h)));
  dispose(grads.filter((g): g is Tensor => g !== null));
  optA.dispose();
  a.free();
  b.free();
});

test('options are checked, with errors that name the option and the value', () => {
  const w = zeros([2]).requiresGrad_();
  assert.throws(() => new Adam([w], { lr: -1 }), /Adam: lr must be a finite number >= 0, got -1/);
  assert.throws(() => new Adam([w], { betas: [1, 0.999] }), /Adam: betas\[0\] must be in \[0, 1\), got 1/);
  assert.throws(() => new AdamW([w], { betas: [0.9, -0.1] }), /AdamW: betas\[1\] must be in \[0, 1\), got -0\.1/);
  assert.throws(() => new Adam([w], { eps: 0 }), /Adam: eps must be a finite number > 0, got 0/);
  assert.throws(() => new Adam([w], { weightDecay: NaN }), /Adam: weightDecay must be a finite number >= 0, got NaN/);
  assert.throws(() => new SGD([w], {} as SGDOptions), /SGD: lr must be a finite number >= 0, got undefined/);
  assert.throws(() => new SGD([w], { lr: 0.1, momentum: -0.5 }), /SGD: momentum must be a finite number >= 0, got -0\.5/);
  assert.throws(() => new SGD([w], { lr: 0.1, nesterov: true }), /SGD: nesterov momentum needs momentum > 0 and dampening 0/);
  assert.throws(() => new Adam([]), /Adam: got an empty parameter list/);
  assert.throws(() => new Adam([w, w]), /Adam: parameter 1 is the same tensor as 0/);
  assert.throws(() => new Adam([zeros([2], { dtype: 'int64' })]), /Adam: parameter 0 must be floating-point, got int64/);
  assert.throws(
    () =>
      new Adam([
        { name: 'a', param: w },
        { name: 'a', param: zeros([1]) },
      ]),
    /the parameter name "a" appears twice/,
  );
  const opt = new Adam([w]);
  assert.throws(() => (opt.lr = Infinity), /Adam: lr must be a finite number >= 0, got Infinity/);
  assert.equal(new AdamW([w]).weightDecay, 1e-2);
  assert.throws(() => clipGradNorm([w], -1), /clipGradNorm: maxNorm must be a number >= 0, got -1/);
  opt.dispose();
  assert.throws(() => opt.step(), /Adam: used after dispose\(\)/);
  dispose(w);
});

test('a gradient with non-finite norm: scaled as PyTorch does, or an error when asked', () => {
  const w = tensor([1, 2], { dtype: 'float64' }).requiresGrad_();
  const g = tensor([Infinity, 1], { dtype: 'float64' });
  w.grad = g;
  assert.throws(() => clipGradNorm([w], 1, { errorIfNonfinite: true }), /non-finite/);
  assert.equal(clipGradNorm([w], 1), Infinity);
  dispose([g, w]);
});

// ---- schedules: closed forms derived here from each formula ----
test('learning-rate schedules follow their formulas', () => {
  const near = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-15 * Math.max(1, Math.abs(b)), `${a} vs ${b}`);
  near(constantSchedule(2e-4)(12345), 2e-4);

  const warm = linearWarmupSchedule({ lr: 1e-3, warmupSteps: 100 });
  near(warm(0), 0);
  near(warm(25), 2.5e-4);
  near(warm(100), 1e-3);
  near(warm(1e6), 1e-3);
  near(linearWarmupSchedule({ lr: 1e-3, warmupSteps: 0 })(0), 1e-3);

  // Cosine: lr at the end of warm-up, the mean of lr and minLr half-way, minLr at the end;
  // a quarter of the way, (1 + cos(pi/4)) / 2 = (2 + sqrt 2) / 4 of the range remains.
  const cos = cosineSchedule({ lr: 1e-3, totalSteps: 1100, warmupSteps: 100, minLr: 1e-5 });
  near(cos(50), 5e-4);
  near(cos(100), 1e-3);
  near(cos(350), 1e-5 + (1e-3 - 1e-5) * ((2 + Math.SQRT2) / 4));
  near(cos(600), (1e-3 + 1e-5) / 2);
  near(cos(1100), 1e-5);
  near(cos(5000), 1e-5);
  for (let s = 101; s < 1100; s += 97) assert.ok(cos(s) < cos(s - 1), 'decreasing after warm-up');

  // EDM2: refLr until t_ref (after the warm-up), then refLr / sqrt(t / t_ref): half at 4 t_ref, a tenth at 100 t_ref.
  const edm2 = edm2Schedule({ refLr: 0.012, refBatches: 70_000, rampupImages: 10e6, batchSize: 2048 });
  near(edm2(0), 0);
  near(edm2(5e6 / 2048), 0.006); // half-way through the 10M-image warm-up
  near(edm2(70_000), 0.012);
  near(edm2(280_000), 0.006);
  near(edm2(7_000_000), 0.0012);
  near(edm2Schedule({ batchSize: 1, rampupImages: 0, refBatches: 0 })(1e9), 100e-4); // EDM2's default ref_lr, no decay

  assert.throws(() => cos(-1), /cosineSchedule: step must be a finite number >= 0, got -1/);
  assert.throws(() => cosineSchedule({ lr: 1, totalSteps: 10, warmupSteps: 10 }), /totalSteps must be a finite number > warmupSteps = 10, got 10/);
  assert.throws(() => cosineSchedule({ lr: 1e-3, totalSteps: 10, minLr: 1 }), /minLr must be a finite number in \[0, lr = 0\.001\], got 1/);
  assert.throws(() => edm2Schedule({ batchSize: 0 }), /edm2Schedule: batchSize must be a finite number > 0, got 0/);
});

// ---- classic EMA ----
test('emaBeta: the weight of an update halves every half-life', () => {
  assert.equal(emaBeta(512, 512), 0.5);
  const beta = emaBeta(500_000, 512);
  assert.ok(Math.abs(beta ** (500_000 / 512) - 0.5) < 1e-12);
  assert.throws(() => emaBeta(0, 1), /emaBeta: halfLifeImages must be a number > 0, got 0/);
});

test('EMA: after one half-life a step change is half-way; it converges; it equals a hand-rolled loop', () => {
  const p = zeros([3], { dtype: 'float64' });
  const halfLife = 64 * 100;
  const ema = new EMA([p], { halfLifeImages: halfLife, batchSize: 64 });
  p.fill_(1);
  for (let i = 0; i < 100; i++) ema.update();
  assert.ok(ema.averages[0].toFloat64Array().every((v) => Math.abs(v - 0.5) < 1e-12));
  for (let i = 0; i < 5000; i++) ema.update();
  assert.ok(ema.averages[0].toFloat64Array().every((v) => Math.abs(v - 1) < 1e-12));
  assert.equal(ema.nimg, 5100 * 64);
  ema.dispose();

  // Random parameters each step, decay and ramp-up betas, against a plain loop.
  const g = new Generator(1);
  for (const opts of [{ decay: 0.9 }, { halfLifeImages: 2000, batchSize: 100, rampupRatio: 0.5 }]) {
    const q = g.randn([5], { dtype: 'float64' });
    const e = new EMA([q], opts);
    const ref = q.toFloat64Array();
    let nimg = 0;
    for (let i = 0; i < 50; i++) {
      q.copy_(tidy(() => g.randn([5], { dtype: 'float64' })));
      let beta = 0.9;
      if (!('decay' in opts)) {
        nimg += 100;
        beta = 0.5 ** (100 / Math.min(2000, nimg * 0.5)); // EDM: half-life <= rampupRatio * images seen
      }
      assert.ok(Math.abs(e.beta - beta) < 1e-15, `beta at update ${i}`);
      e.update();
      const v = q.toFloat64Array();
      for (let k = 0; k < 5; k++) ref[k] = beta * ref[k] + (1 - beta) * v[k];
    }
    assert.ok(maxError(e.averages[0].toFloat64Array(), ref) < 1e-13);
    // copyTo writes the average into the parameters; the state round-trips.
    const s = e.stateDict();
    const e2 = new EMA([q], opts);
    e2.loadStateDict(s);
    dispose(s.tensors);
    e.copyTo();
    assert.deepEqual(q.toFloat64Array(), e2.averages[0].toFloat64Array());
    assert.equal(e2.updates, 50);
    [e, e2].forEach((x) => x.dispose());
    q.dispose();
  }
  p.dispose();
  assert.throws(() => new EMA([zeros([1])], { decay: 0.9, halfLifeImages: 10 }), /EMA: give exactly one of decay and halfLifeImages/);
  assert.throws(() => new EMA([zeros([1])], { halfLifeImages: 10 }), /EMA: batchSize must be a finite number > 0 with halfLifeImages, got undefined/);
  assert.throws(() => new EMA([zeros([1])], { decay: 1 }), /EMA: decay must be in \[0, 1\), got 1/);
});

// ---- per-parameter overhead: a step is O(1) native calls ----
function countNativeCalls(fn: () => void): number {
  const table = native as unknown as Record<string, unknown>;
  const saved = { ...table };
  let calls = 0;
  for (const [k, v] of Object.entries(saved)) if (typeof v === 'function') table[k] = (...args: unknown[]) => (calls++, (v as (...a: unknown[]) => unknown)(...args));
  try {
    fn();
  } finally {
    Object.assign(table, saved);
  }
  return calls;
}

test('step, zeroGrad, clipping and averaging cost the same number of native calls for 4 or 256 parameters', () => {
  const counts = [4, 256].map((n) =>
    tidy(() => {
      const params = Array.from({ length: n }, (_, i) => zeros([(i % 5) + 1]).requiresGrad_());
      const makeGrads = () => tidy(() => params.reduce((acc, q) => acc.add(q.square().sum()), zeros([])).backward());
      const adam = new Adam(params);
      const sgd = new SGD(params, { lr: 0.1, momentum: 0.9 });
      const ema = new EMA(params, { decay: 0.99 });
      const phema = new PowerFunctionEMA(params);
      makeGrads();
      const c = {
        adam: countNativeCalls(() => adam.step()),
        sgd: countNativeCalls(() => sgd.step()),
        clip: countNativeCalls(() => clipGradNorm(params, 1)),
        ema: countNativeCalls(() => ema.update()),
        phema: countNativeCalls(() => phema.update()),
        zeroGrad: countNativeCalls(() => adam.zeroGrad()),
      };
      [adam, sgd, ema, phema].forEach((o) => o.dispose());
      return c;
    }),
  );
  assert.deepEqual(counts[1], counts[0]);
  assert.deepEqual(counts[0], { adam: 1, sgd: 1, clip: 1, ema: 1, phema: 2, zeroGrad: 1 });
});

test('1,000 training steps (Adam, clipping, EMA, post-hoc EMA) leave memory flat', () => {
  const g = new Generator(0);
  const named: NamedParam[] = [
    { name: 'w1', param: g.randn([32, 8]).mul_(0.3).requiresGrad_() },
    { name: 'b1', param: zeros([32]).requiresGrad_() },
    { name: 'w2', param: g.randn([4, 32]).mul_(0.3).requiresGrad_() },
  ];
  const [w1, b1, w2] = named.map((n) => n.param);
  const x = g.randn([64, 8]);
  const y = g.randn([64, 4]);
  const opt = new AdamW(named, { lr: 1e-3 });
  const schedule = cosineSchedule({ lr: 1e-3, totalSteps: 1000, warmupSteps: 100 });
  const ema = new EMA(named, { halfLifeImages: 5000, batchSize: 64, rampupRatio: 0.05 });
  const phema = new PowerFunctionEMA(named);
  const step = (i: number) => {
    opt.lr = schedule(i);
    tidy(() => F.mseLoss(F.linear(F.linear(x, w1, b1).silu(), w2), y).backward());
    clipGradNorm(named, 1);
    opt.step();
    opt.zeroGrad();
    ema.update();
    phema.update();
  };
  for (let i = 0; i < 10; i++) step(i);
  const before = memory();
  const t0 = performance.now();
  for (let i = 10; i < 1000; i++) step(i);
  const ms = (performance.now() - t0) / 990;
  assert.deepEqual(memory(), before);
  if (process.env.DIFFUSE_TEST_VERBOSE) console.log(`train step (3 params, Adam + clip + EMA + 2 phema): ${ms.toFixed(3)} ms`);
  const held = memory().tensors;
  [opt, ema, phema].forEach((o) => o.dispose());
  // Adam's two buffers, the EMA and two post-hoc averages: five tensors per parameter.
  assert.equal(held - memory().tensors, 5 * named.length);
  dispose([x, y, w1, b1, w2]);
});

test('optimizer state survives the tidy() scope it was made in', () => {
  const w = zeros([2]).requiresGrad_();
  const opt = tidy(() => new Adam([w]));
  const g = tensor([1, 1]);
  w.grad = g;
  opt.step();
  assert.equal(opt.stepCount(), 1);
  opt.dispose();
  dispose([g, w]);
});

test("ParamGroups: each group steps as its own Adam at lr x lrMult (PyTorch's param_groups), bit for bit; its state round-trips and loads a plain Adam's", () => {
  const before = memory().tensors;
  const [a, b, c] = [problem('float64'), problem('float64'), problem('float64')];
  const pairs = (pr: typeof a, names: string[]) => pr.named.filter((n) => names.includes(n.name)).map((n) => [n.name, n.param] as const);
  const [first, rest] = [P.names.slice(0, 2), P.names.slice(2)];
  const make = (pr: typeof a, lr: number) =>
    new ParamGroups(
      [
        { params: pairs(pr, first), lrMult: 1 },
        { params: pairs(pr, rest), lrMult: 10 },
      ],
      (p, rate) => new Adam(p, { lr: rate, amsgrad: true }),
      lr,
    );
  const grouped = make(a, 0.01);
  const separate = [new Adam(pairs(b, first), { lr: 0.01, amsgrad: true }), new Adam(pairs(b, rest), { lr: 0.1, amsgrad: true })];
  const train = (pr: typeof a, opts: Optimizer[], n: number) => {
    for (let i = 0; i < n; i++) {
      opts.forEach((o) => o.zeroGrad());
      tidy(() => pr.loss().backward());
      opts.forEach((o) => o.step());
    }
  };
  train(a, [grouped], 4);
  train(b, separate, 4);
  for (const name of P.names) assert.deepEqual(a.p[name].toFloat64Array(), b.p[name].toFloat64Array(), name);
  assert.equal(grouped.stepCount(3), 4);
  const saved = grouped.stateDict();
  assert.deepEqual(JSON.parse(saved.metadata['optim.options']).lrMults, [1, 10]);
  dispose(saved.tensors);
  // Resume: a fresh ParamGroups (another base lr: it comes from the state) continues as the first.
  const resumed = make(c, 0.5);
  const state = grouped.stateDict();
  tidy(() => c.named.forEach((n, i) => n.param.detach().copy_(a.named[i].param)));
  resumed.loadStateDict(state);
  dispose(state.tensors);
  assert.equal(resumed.lr, 0.01);
  train(a, [grouped], 3);
  train(c, [resumed], 3);
  for (const name of P.names) assert.deepEqual(c.p[name].toFloat64Array(), a.p[name].toFloat64Array(), name);
  // The state of a plain Adam over the same parameters loads (a run that gains groups resumes).
  const plain = new Adam(b.named, { lr: 0.01, amsgrad: true });
  train(b, [plain], 1);
  const ps = plain.stateDict();
  resumed.loadStateDict(ps);
  dispose(ps.tensors);
  assert.equal(resumed.stepCount(0), 1);
  assert.throws(() => new ParamGroups([{ params: pairs(c, first), lrMult: 0 }], (p, r) => new Adam(p, { lr: r }), 0.01), /ParamGroups: groups\[0\]\.lrMult must be a number > 0, got 0/);
  [grouped, resumed, plain, ...separate].forEach((o) => {
    o.zeroGrad(); // frees the last gradients
    o.dispose();
  });
  [a, b, c].forEach((pr) => pr.free());
  assert.equal(memory().tensors, before);
});
