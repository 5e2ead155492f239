// Every op family against values computed by PyTorch 1.13 (test/fixtures/engine_ops.json,
// written by scripts/fixtures/engine_ops.py: `npm run fixtures`), forward and backward,
// followed by closed-form checks that need no fixture.
//
// Each fixture case names an op of the table below, its input tensors and parameters, the
// expected output(s), and for differentiable ops the gradients of sum_i (out_i * r_i).sum()
// with respect to the float inputs (r_i fixed random tensors stored in the case).
//
// Tolerances, per dtype, elementwise: |actual - expected| <= atol * max(1, max|expected|) + rtol * |expected|
//   float64            rtol 1e-9, atol 1e-11  (same libtorch on both sides: differences are summation order)
//   float32            rtol 1e-5, atol 1e-6
//   float16, bfloat16  rtol 1e-3, atol 1e-3
//   integers and bool  exact
// Gradients use the same tolerances as the dtype of the input they belong to.
// Output dtypes and shapes must match exactly (type promotion is part of what is tested).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arange, cat, DType, eye, F, full, fullLike, Generator, grad, linspace, memory, ones, stack, tensor, Tensor, tidy, where, zeros, zerosLike } from '../src/engine';

// ------------------------------------------------------------------ fixtures
interface Fx {
  dtype: DType;
  shape: number[];
  values: number[];
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the fixture's parameters: JSON whose fields depend on the op
type Params = Record<string, any>;
/** Tensor methods called by the name a fixture gives. */
type Methods = Record<string, (...args: unknown[]) => Tensor>;

interface Case {
  name: string;
  op: string;
  inputs: Record<string, Fx>;
  params: Params;
  output: Fx | Fx[];
  r?: Fx | (Fx | null)[];
  grads?: Record<string, Fx | null>;
}

const FIXTURE = path.resolve(__dirname, '../../test/fixtures/engine_ops.json');
const CASES: Case[] = JSON.parse(fs.readFileSync(FIXTURE, 'utf8'));

const TOL: Record<string, { rtol: number; atol: number }> = {
  float64: { rtol: 1e-9, atol: 1e-11 },
  float32: { rtol: 1e-5, atol: 1e-6 },
  float16: { rtol: 1e-3, atol: 1e-3 },
  bfloat16: { rtol: 1e-2, atol: 1e-2 },
};

/** Cases known not to match PyTorch, with the reason (they run as todo tests). */
const KNOWN: Record<string, string> = {};

const build = (f: Fx): Tensor => tensor(f.values, { dtype: f.dtype, shape: f.shape });
const values = (t: Tensor): number[] => Array.from(t.data() as ArrayLike<number | bigint>, Number);

function assertClose(what: string, actual: Tensor, expected: Fx): void {
  assert.equal(actual.dtype, expected.dtype, `${what}: dtype ${actual.dtype}, PyTorch gives ${expected.dtype}`);
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape [${actual.shape}], PyTorch gives [${expected.shape}]`);
  const a = values(actual);
  const e = expected.values;
  const tol = TOL[expected.dtype];
  if (!tol) {
    for (let i = 0; i < e.length; i++) if (a[i] !== e[i]) assert.fail(`${what}: element ${i} is ${a[i]}, PyTorch gives ${e[i]} (exact dtype ${expected.dtype})`);
    return;
  }
  const scale = Math.max(1, ...e.map(Math.abs));
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < e.length; i++) {
    const err = Math.abs(a[i] - e[i]);
    const allowed = tol.atol * scale + tol.rtol * Math.abs(e[i]);
    if (!(err <= allowed) && (worst < 0 || err - allowed > worstExcess)) {
      worst = i;
      worstExcess = err - allowed;
    }
  }
  if (worst >= 0)
    assert.fail(`${what}: element ${worst} is ${a[worst]}, PyTorch gives ${e[worst]} (|diff| ${Math.abs(a[worst] - e[worst]).toExponential(2)}, ${expected.dtype} rtol ${tol.rtol} atol ${tol.atol})`);
}

// ------------------------------------------------------------------ the ops, by the names the fixtures use
type Ins = Record<string, Tensor>;
type Op = (I: Ins, P: Params) => Tensor | Tensor[];
const dt = (d?: string | null) => (d ? { dtype: d as DType } : undefined);
const orUndef = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);
const method =
  (name: string): Op =>
  (I) =>
    (I.x as unknown as Methods)[name]();
const binary =
  (name: string): Op =>
  (I, P) =>
    (I.x as unknown as Methods)[name](I.y ?? P.other);
const reduce =
  (name: 'sum' | 'mean' | 'max' | 'min' | 'prod' | 'logsumexp' | 'all' | 'any'): Op =>
  (I, P) =>
    I.x[name](orUndef(P.dims), P.keepdim ?? false);

const OPS: Record<string, Op> = {
  // creation and random streams
  zeros: (_, P) => zeros(P.shape, dt(P.dtype)),
  ones: (_, P) => ones(P.shape, dt(P.dtype)),
  full: (_, P) => full(P.shape, P.value, dt(P.dtype)),
  arange: (_, P) => arange(P.start, P.end, P.step, dt(P.dtype)),
  linspace: (_, P) => linspace(P.start, P.end, P.steps, dt(P.dtype)),
  eye: (_, P) => eye(P.n, P.m ?? P.n, dt(P.dtype)),
  randn: (_, P) => new Generator(P.seed).randn(P.shape, dt(P.dtype)),
  rand: (_, P) => new Generator(P.seed).rand(P.shape, dt(P.dtype)),
  randint: (_, P) => new Generator(P.seed).randint(P.low, P.high, P.shape, dt(P.dtype)),
  randperm: (_, P) => new Generator(P.seed).randperm(P.n),
  bernoulli: (_, P) => new Generator(P.seed).bernoulli(zeros(P.shape, dt(P.dtype)), P.p),
  randomSequence: (_, P) => {
    const g = new Generator(P.seed);
    return [g.randn([3]), g.rand([4], { dtype: 'float64' }), g.randint(0, 100, [5]), g.randn([17], { dtype: 'float64' }), g.randperm(6), g.randn([1])];
  },

  // shape
  reshape: (I, P) => I.x.reshape(P.shape),
  view: (I, P) => I.x.view(P.shape),
  permute: (I, P) => I.x.permute(P.dims),
  permuteReshape: (I, P) => I.x.permute(P.dims).reshape(P.shape),
  transpose: (I, P) => (P.d0 === undefined ? I.x.transpose() : I.x.transpose(P.d0, P.d1)),
  expand: (I, P) => I.x.expand(P.shape),
  cat: (I, P) =>
    cat(
      Object.keys(I)
        .sort()
        .map((k) => I[k]),
      P.dim,
    ),
  stack: (I, P) =>
    stack(
      Object.keys(I)
        .sort()
        .map((k) => I[k]),
      P.dim,
    ),
  split: (I, P) => I.x.split(P.size, P.dim),
  chunk: (I, P) => I.x.chunk(P.chunks, P.dim),
  unbind: (I, P) => I.x.unbind(P.dim),
  narrow: (I, P) => I.x.narrow(P.dim, P.start, P.length),
  slice: (I, P) => I.x.slice(P.dim, P.start, P.end, P.step),
  select: (I, P) => I.x.select(P.dim, P.index),
  indexSelect: (I, P) => I.x.indexSelect(P.dim, I.index),
  gather: (I, P) => I.x.gather(P.dim, I.index),
  scatterAdd: (I, P) => I.x.scatterAdd(P.dim, I.index, I.src),
  maskedFill: (I, P) => I.x.maskedFill(I.mask, P.value),
  squeeze: (I, P) => I.x.squeeze(P.dim),
  unsqueeze: (I, P) => I.x.unsqueeze(P.dim),
  flatten: (I, P) => I.x.flatten(P.start ?? 0, P.end ?? -1),
  repeat: (I, P) => I.x.repeat(P.reps),
  flip: (I, P) => I.x.flip(P.dims),
  roll: (I, P) => I.x.roll(P.shifts, P.dims),
  triu: (I, P) => I.x.triu(P.k),
  tril: (I, P) => I.x.tril(P.k),
  contiguous: (I) => I.x.transpose(0, 1).contiguous(),
  pad: (I, P) => I.x.pad(P.pads, P.mode, P.value ?? 0),

  // elementwise
  ...Object.fromEntries(
    [
      'neg',
      'abs',
      'exp',
      'log',
      'sqrt',
      'rsqrt',
      'sin',
      'cos',
      'tanh',
      'sigmoid',
      'silu',
      'relu',
      'square',
      'reciprocal',
      'sign',
      'floor',
      'ceil',
      'round',
      'log1p',
      'expm1',
      'log2',
      'erf',
      'erfinv',
      'softplus',
      'logicalNot',
    ].map((n) => [n, method(n)]),
  ),
  ...Object.fromEntries(['sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'remainder', 'atan2', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logicalAnd', 'logicalOr'].map((n) => [n, binary(n)])),
  add: (I, P) => I.x.add(I.y ?? P.other, P.alpha),
  rsub: (I, P) => I.x.rsub(P.other),
  rdiv: (I, P) => I.x.rdiv(P.other),
  gelu: (I, P) => I.x.gelu(P.approximate),
  clamp: (I, P) => I.x.clamp(P.min, P.max),
  where: (I, P) => where(I.cond, I.a ?? P.a, I.b ?? P.b),
  lerp: (I, P) => I.x.lerp(I.end, I.weight ?? P.weight),

  // reductions
  sum: reduce('sum'),
  mean: reduce('mean'),
  max: reduce('max'),
  min: reduce('min'),
  prod: reduce('prod'),
  logsumexp: reduce('logsumexp'),
  all: reduce('all'),
  any: reduce('any'),
  var: (I, P) => I.x.var(orUndef(P.dims), { unbiased: P.unbiased, keepdim: P.keepdim }),
  std: (I, P) => I.x.std(orUndef(P.dims), { unbiased: P.unbiased, keepdim: P.keepdim }),
  norm: (I, P) => I.x.norm(P.p === 'inf' ? Infinity : P.p === '-inf' ? -Infinity : P.p, orUndef(P.dims), P.keepdim),
  argmax: (I, P) => I.x.argmax(orUndef(P.dim), P.keepdim),
  argmin: (I, P) => I.x.argmin(orUndef(P.dim), P.keepdim),
  cumsum: (I, P) => I.x.cumsum(P.dim),
  topk: (I, P) => I.x.topk(P.k, P.dim, P.largest),
  sort: (I, P) => I.x.sort(P.dim, P.descending),

  // linear algebra
  matmul: (I) => I.a.matmul(I.b),
  bmm: (I) => I.a.bmm(I.b),

  // functional layers
  'F.linear': (I) => F.linear(I.x, I.weight, I.bias),
  'F.conv2d': (I, P) => F.conv2d(I.x, I.weight, { bias: I.bias, stride: P.stride, padding: P.padding, dilation: P.dilation, groups: P.groups }),
  'F.convTranspose2d': (I, P) =>
    F.convTranspose2d(I.x, I.weight, {
      bias: I.bias,
      stride: P.stride,
      padding: P.padding,
      outputPadding: P.outputPadding,
      dilation: P.dilation,
      groups: P.groups,
    }),
  'F.groupNorm': (I, P) => F.groupNorm(I.x, P.groups, { weight: I.weight, bias: I.bias, eps: P.eps }),
  'F.layerNorm': (I, P) => F.layerNorm(I.x, P.normalizedShape, { weight: I.weight, bias: I.bias, eps: P.eps }),
  'F.softmax': (I, P) => F.softmax(I.x, P.dim),
  'F.logSoftmax': (I, P) => F.logSoftmax(I.x, P.dim),
  'F.dropout': (I, P) => F.dropout(I.x, P.p, { generator: new Generator(P.seed) }),
  'F.interpolate': (I, P) => F.interpolate(I.x, { size: P.size, scaleFactor: P.scaleFactor, mode: P.mode, alignCorners: P.alignCorners }),
  'F.avgPool2d': (I, P) => F.avgPool2d(I.x, P.kernel, { stride: orUndef(P.stride), padding: P.padding }),
  'F.maxPool2d': (I, P) => F.maxPool2d(I.x, P.kernel, { stride: orUndef(P.stride), padding: P.padding }),
  'F.adaptiveAvgPool2d': (I, P) => F.adaptiveAvgPool2d(I.x, P.size),
  'F.pixelShuffle': (I, P) => F.pixelShuffle(I.x, P.r),
  'F.pixelUnshuffle': (I, P) => F.pixelUnshuffle(I.x, P.r),
  'F.embedding': (I) => F.embedding(I.weight, I.indices),
  'F.sdpa': (I, P) =>
    F.scaledDotProductAttention(I.q, I.k, I.v, {
      mask: I.mask,
      isCausal: P.isCausal,
      scale: P.scale,
      dropoutP: P.dropoutP,
      generator: P.seed === undefined ? undefined : new Generator(P.seed),
    }),
  'F.mseLoss': (I, P) => F.mseLoss(I.x, I.target, { reduction: P.reduction }),
  'F.crossEntropy': (I, P) => F.crossEntropy(I.logits, I.target, { reduction: P.reduction, labelSmoothing: P.labelSmoothing, weight: I.weight }),
};

function runCase(c: Case): void {
  const op = OPS[c.op];
  assert.ok(op, `no op named ${c.op} in the test's table`);
  tidy(() => {
    const inputs: Ins = {};
    for (const [k, f] of Object.entries(c.inputs)) inputs[k] = build(f);
    const gradKeys = Object.keys(c.grads ?? {});
    for (const k of gradKeys) inputs[k].requiresGrad_();
    const out = op(inputs, c.params);
    const outs = Array.isArray(out) ? out : [out];
    const expected = Array.isArray(c.output) ? c.output : [c.output];
    assert.equal(outs.length, expected.length, `${c.op} returned ${outs.length} tensors, PyTorch ${expected.length}`);
    outs.forEach((o, i) => assertClose(expected.length > 1 ? `output ${i}` : 'output', o, expected[i]));
    if (!c.grads) return;
    const rs = Array.isArray(c.r) ? c.r : [c.r!];
    let loss: Tensor | null = null;
    outs.forEach((o, i) => {
      const r = rs[i];
      if (!r) return;
      const term = o.mul(build(r)).sum();
      loss = loss === null ? term : loss.add(term);
    });
    assert.ok(loss, 'a differentiable case needs a float output');
    const gs = grad(
      loss,
      gradKeys.map((k) => inputs[k]),
      { allowUnused: true },
    );
    gradKeys.forEach((k, i) => {
      const want = c.grads![k];
      const got = gs[i];
      if (want === null) {
        if (got !== null)
          assert.ok(
            values(got).every((v) => v === 0),
            `grad ${k}: PyTorch has no gradient, Diffuse a non-zero one`,
          );
        return;
      }
      assert.ok(got, `grad ${k}: Diffuse has no gradient, PyTorch does`);
      assertClose(`grad ${k}`, got, want);
    });
  });
}

// ------------------------------------------------------------------ one describe per family, one test per case
const families = new Map<string, Case[]>();
for (const c of CASES) {
  const fam = c.name.split('/')[0];
  if (!families.has(fam)) families.set(fam, []);
  families.get(fam)!.push(c);
}

test('the fixture file is present and covers every family', () => {
  assert.ok(CASES.length > 300, `only ${CASES.length} cases in ${FIXTURE}`);
  assert.deepEqual([...families.keys()].sort(), ['F', 'creation', 'elementwise', 'matmul', 'random', 'reduce', 'shape']);
  for (const c of CASES) assert.ok(OPS[c.op], `case ${c.name}: no op ${c.op} in the table`);
});

const baseline = memory().tensors;
for (const [fam, cases] of families) {
  describe(`PyTorch fixtures: ${fam}`, () => {
    for (const c of cases) {
      const todo = KNOWN[c.name];
      test(c.name, todo ? { todo } : {}, () => runCase(c));
    }
  });
}

// ------------------------------------------------------------------ closed forms
const close = (actual: number[], expected: number[], tol: number, what = '') => {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((a, i) => assert.ok(Math.abs(a - expected[i]) <= tol * Math.max(1, Math.abs(expected[i])), `${what}[${i}]: ${a} vs ${expected[i]}`));
};

describe('closed forms: creation', () => {
  test('zeros, ones, full, *Like: values, shapes and dtypes', () =>
    tidy(() => {
      const z = zeros([2, 3]);
      assert.equal(z.dtype, 'float32');
      assert.deepEqual(z.toArray(), [
        [0, 0, 0],
        [0, 0, 0],
      ]);
      assert.deepEqual(ones([2], { dtype: 'int64' }).toArray(), [1, 1]);
      assert.deepEqual(full([2, 2], 7, { dtype: 'int32' }).toArray(), [
        [7, 7],
        [7, 7],
      ]);
      assert.equal(full([1], true).dtype, 'bool');
      const x = full([3], 2.5, { dtype: 'float64' });
      assert.equal(zerosLike(x).dtype, 'float64');
      assert.deepEqual(fullLike(x, -1).toArray(), [-1, -1, -1]);
      assert.deepEqual(zeros([0, 3]).shape, [0, 3]);
      assert.deepEqual(tensor(4).shape, []);
    }));

  test('arange: integer and fractional steps, end excluded', () =>
    tidy(() => {
      const a = arange(5);
      assert.equal(a.dtype, 'int64');
      assert.deepEqual(a.toArray(), [0, 1, 2, 3, 4]);
      assert.deepEqual(arange(2, 11, 3).toArray(), [2, 5, 8]);
      assert.deepEqual(arange(3, 0, -1).toArray(), [3, 2, 1]);
      const f = arange(0, 1, 0.25);
      assert.equal(f.dtype, 'float32');
      assert.deepEqual(f.toArray(), [0, 0.25, 0.5, 0.75]);
      assert.equal(arange(0, 10, 1, { dtype: 'float64' }).dtype, 'float64');
      assert.deepEqual(arange(4, 4).shape, [0]);
    }));

  test('linspace: endpoints included, even spacing', () =>
    tidy(() => {
      assert.deepEqual(linspace(0, 1, 5).toArray(), [0, 0.25, 0.5, 0.75, 1]);
      assert.deepEqual(linspace(-2, 2, 1).toArray(), [-2]);
      assert.deepEqual(linspace(0, 1, 0).shape, [0]);
      const l = values(linspace(-3, 7, 101, { dtype: 'float64' }));
      l.forEach((v, i) => assert.ok(Math.abs(v - (-3 + i * 0.1)) < 1e-12, `linspace[${i}] = ${v}`));
    }));

  test('eye: ones on the diagonal, identity for matmul', () =>
    tidy(() => {
      assert.deepEqual(eye(3).toArray(), [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
      ]);
      assert.deepEqual(eye(2, 3).toArray(), [
        [1, 0, 0],
        [0, 1, 0],
      ]);
      assert.deepEqual(eye(3, 2, { dtype: 'int64' }).toArray(), [
        [1, 0],
        [0, 1],
        [0, 0],
      ]);
      const x = new Generator(0).randn([3, 4], { dtype: 'float64' });
      assert.deepEqual(values(eye(3, 3, { dtype: 'float64' }).matmul(x)), values(x));
    }));
});

describe('closed forms: random generators', () => {
  test('a seed fixes the stream; state() / setState() replays it', () =>
    tidy(() => {
      const a = new Generator(123);
      const b = new Generator(123);
      assert.deepEqual(values(a.randn([10])), values(b.randn([10])));
      const s = a.state();
      const next = values(a.rand([7]));
      assert.notDeepEqual(next, values(a.rand([7])));
      a.setState(s);
      assert.deepEqual(values(a.rand([7])), next);
      assert.notDeepEqual(values(new Generator(1).randn([5])), values(new Generator(2).randn([5])));
    }));

  test('samples have the right ranges and moments', () =>
    tidy(() => {
      const g = new Generator(7);
      const n = g.randn([20000], { dtype: 'float64' });
      assert.ok(Math.abs(n.mean().item()) < 0.03, `randn mean ${n.mean().item()}`);
      assert.ok(Math.abs(n.std().item() - 1) < 0.03, `randn std ${n.std().item()}`);
      const u = values(g.rand([20000]));
      assert.ok(u.every((v) => v >= 0 && v < 1));
      assert.ok(Math.abs(u.reduce((s, v) => s + v, 0) / u.length - 0.5) < 0.01);
      const r = values(g.randint(-3, 4, [5000]));
      assert.ok(r.every((v) => Number.isInteger(v) && v >= -3 && v < 4));
      assert.equal(new Set(r).size, 7);
      const p = values(g.randperm(50));
      assert.deepEqual(
        [...p].sort((x, y) => x - y),
        Array.from({ length: 50 }, (_, i) => i),
      );
    }));
});

describe('closed forms: math', () => {
  test('softmax rows are positive and sum to 1; exp(logSoftmax) = softmax; shift invariance', () =>
    tidy(() => {
      const x = new Generator(3).randn([6, 9], { dtype: 'float64' }).mul(20);
      const s = F.softmax(x, -1);
      close(values(s.sum(-1)), Array(6).fill(1), 1e-12, 'row sums');
      assert.ok(values(s).every((v) => v >= 0 && v <= 1));
      close(values(F.logSoftmax(x, -1).exp()), values(s), 1e-12, 'exp(logSoftmax)');
      close(values(F.softmax(x.add(1000), -1)), values(s), 1e-12, 'shifted');
      close(values(F.softmax(x, 0).sum(0)), Array(9).fill(1), 1e-12, 'column sums');
    }));

  test('logsumexp = log(sum(exp)), and stays finite where exp overflows', () =>
    tidy(() => {
      const x = new Generator(4).randn([4, 5], { dtype: 'float64' });
      close(values(x.logsumexp(1)), values(x.exp().sum(1).log()), 1e-12, 'logsumexp');
      close(values(x.logsumexp([0, 1])), [Math.log(values(x.exp()).reduce((a, b) => a + b, 0))], 1e-12, 'all dims');
      const big = tensor([1000, 1000, 999], { dtype: 'float64' });
      close([big.logsumexp().item()], [1000 + Math.log(2 + Math.exp(-1))], 1e-12, 'large');
      assert.equal(Number.isFinite(big.exp().sum().log().item()), false);
    }));

  test('var and std: biased = unbiased * (n - 1) / n, std^2 = var, norm = sqrt(sum(x^2))', () =>
    tidy(() => {
      const x = new Generator(5).randn([3, 8], { dtype: 'float64' });
      const vu = values(x.var(1));
      const vb = values(x.var(1, { unbiased: false }));
      close(
        vb,
        vu.map((v) => (v * 7) / 8),
        1e-12,
        'biased',
      );
      close(values(x.std(1).square()), vu, 1e-12, 'std^2');
      const xs = values(x);
      const m = xs.reduce((a, b) => a + b, 0) / xs.length;
      close([x.var().item()], [xs.reduce((a, v) => a + (v - m) ** 2, 0) / (xs.length - 1)], 1e-12, 'all dims');
      close([x.norm().item()], [Math.sqrt(xs.reduce((a, v) => a + v * v, 0))], 1e-12, 'norm');
      close([x.abs().max().item()], [x.norm(Infinity).item()], 0, 'inf-norm');
    }));

  test('gelu matches its formulas (erf and tanh forms); silu = x sigmoid(x)', () =>
    tidy(() => {
      const x = new Generator(6).randn([50], { dtype: 'float64' }).mul(3);
      const xs = values(x);
      const erf = values(x.div(Math.SQRT2).erf());
      close(
        values(x.gelu()),
        xs.map((v, i) => 0.5 * v * (1 + erf[i])),
        1e-12,
        'gelu',
      );
      close(
        values(x.gelu('tanh')),
        xs.map((v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))),
        1e-12,
        'gelu tanh',
      );
      close(
        values(x.silu()),
        xs.map((v) => v / (1 + Math.exp(-v))),
        1e-12,
        'silu',
      );
    }));

  test('matmul against a hand-written triple loop', () =>
    tidy(() => {
      const g = new Generator(8);
      const a = g.randn([3, 4], { dtype: 'float64' });
      const b = g.randn([4, 2], { dtype: 'float64' });
      const A = a.toArray() as number[][];
      const B = b.toArray() as number[][];
      const C = A.map((row) => [0, 1].map((j) => row.reduce((s, v, k) => s + v * B[k][j], 0)));
      close(values(a.matmul(b)), C.flat(), 1e-12, 'matmul');
    }));

  test('pixelUnshuffle inverts pixelShuffle', () =>
    tidy(() => {
      const x = new Generator(9).randn([2, 12, 3, 2]);
      assert.deepEqual(values(F.pixelUnshuffle(F.pixelShuffle(x, 2), 2)), values(x));
    }));
});

describe('closed forms: layers', () => {
  test('dropout: keeps about 1 - p, scales kept values by exactly 1/(1 - p), is reproducible from the seed', () =>
    tidy(() => {
      const x = ones([200, 500]);
      const p = 0.3;
      const y = values(F.dropout(x, p, { generator: new Generator(11) }));
      const kept = y.filter((v) => v !== 0);
      const frac = 1 - kept.length / y.length;
      // 100k Bernoulli draws: the dropped fraction's standard deviation is 0.0014.
      assert.ok(Math.abs(frac - p) < 0.01, `dropped fraction ${frac}`);
      assert.ok(
        kept.every((v) => v === Math.fround(1 / (1 - p))),
        'kept values are 1/(1-p)',
      );
      assert.deepEqual(values(F.dropout(x, p, { generator: new Generator(11) })), y, 'same seed, same mask');
      assert.notDeepEqual(values(F.dropout(x, p, { generator: new Generator(12) })), y, 'another seed, another mask');
      const z = new Generator(1).randn([4, 4]);
      assert.deepEqual(values(F.dropout(z, p, { training: false })), values(z), 'identity when not training');
      assert.deepEqual(values(F.dropout(z, 0, { generator: new Generator(1) })), values(z), 'identity for p = 0');
      assert.ok(
        values(F.dropout(z, 1, { generator: new Generator(1) })).every((v) => v === 0),
        'all dropped for p = 1',
      );
      assert.throws(() => F.dropout(z, 0.5), /generator/);
    }));

  test('attention: equal keys average the values; causal row 0 sees only key 0', () =>
    tidy(() => {
      const g = new Generator(13);
      const v = g.randn([1, 5, 3], { dtype: 'float64' });
      const q = g.randn([1, 4, 6], { dtype: 'float64' });
      const k = g.randn([1, 1, 6], { dtype: 'float64' }).expand([1, 5, 6]);
      const out = F.scaledDotProductAttention(q, k, v);
      const mean = values(v.mean(1));
      for (let i = 0; i < 4; i++) close(values(out.select(1, i).reshape([3])), mean, 1e-12, `row ${i}`);
      const qc = g.randn([1, 5, 6], { dtype: 'float64' });
      const kc = g.randn([1, 5, 6], { dtype: 'float64' });
      const c = F.scaledDotProductAttention(qc, kc, v, { isCausal: true });
      close(values(c.select(1, 0)), values(v.select(1, 0)), 1e-12, 'causal row 0');
    }));

  test('crossEntropy: one-hot probabilities equal class indices; label smoothing is (1-e) nll + e mean(-log p)', () =>
    tidy(() => {
      const g = new Generator(14);
      const logits = g.randn([6, 5], { dtype: 'float64' });
      const idx = tensor([0, 4, 2, 2, 1, 3], { dtype: 'int64' });
      const onehot = eye(5, 5, { dtype: 'float64' }).indexSelect(0, idx);
      close([F.crossEntropy(logits, onehot).item()], [F.crossEntropy(logits, idx).item()], 1e-12, 'one-hot');
      const logp = F.logSoftmax(logits, 1);
      const nll = logp.gather(1, idx.unsqueeze(1)).neg().mean().item();
      const uniform = logp.neg().mean().item();
      const e = 0.2;
      close([F.crossEntropy(logits, idx, { labelSmoothing: e }).item()], [(1 - e) * nll + e * uniform], 1e-12, 'smoothing');
      const x = g.randn([3, 4], { dtype: 'float64' });
      const y = g.randn([3, 4], { dtype: 'float64' });
      close([F.mseLoss(x, y).item()], [x.sub(y).square().mean().item()], 1e-12, 'mse');
    }));
});

test('the fixture tests leave no tensors behind', () => {
  assert.equal(memory().tensors, baseline);
});
