// Finite-difference gradient checks (float64, central differences, eps 1e-6, atol 1e-5,
// rtol 1e-3: gradcheck's defaults, as torch.autograd.gradcheck) for a representative set of
// ops, and second derivatives through grad(..., { createGraph: true }).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { eye, F, Generator, grad, gradcheck, memory, setNumThreads, tensor, Tensor, tidy } from '../src/engine';

// Thousands of forward passes on tiny tensors: one thread is several times faster than a
// contended OpenMP pool (this file runs in its own process, so nothing else is affected).
setNumThreads(1);

const f64 = { dtype: 'float64' as const };
let g = new Generator(0);
const randn = (...shape: number[]) => g.randn(shape, f64);
const vals = (t: Tensor): number[] => Array.from(t.data() as Float64Array);
const rand = (lo: number, hi: number, ...shape: number[]) =>
  g
    .rand(shape, f64)
    .mul(hi - lo)
    .add(lo);

function check(fn: (...xs: Tensor[]) => Tensor, make: () => Tensor[]): void {
  tidy(() => {
    const r = gradcheck(fn, make());
    assert.ok(r.ok, `analytic and numeric gradients differ by up to ${r.maxError.toExponential(3)}`);
  });
}

// one case a line: name, function, inputs (kept as laid out)
// prettier-ignore
const cases: [string, (...xs: Tensor[]) => Tensor, () => Tensor[]][] = [
  // elementwise
  ['arithmetic with broadcasting', (a, b) => a.mul(b).add(a.div(b.square().add(1))).sub(b.mul(0.5)), () => [randn(3, 1), randn(1, 4)]],
  ['pow, exp, log, sqrt, rsqrt', (x) => x.pow(1.5).add(x.exp()).add(x.log()).add(x.sqrt().mul(x.rsqrt())).add(x.pow(x)), () => [rand(0.3, 2, 2, 3)]],
  ['sin, cos, tanh, sigmoid', (x) => x.sin().mul(x.cos()).add(x.tanh()).add(x.sigmoid().square()), () => [randn(2, 4)]],
  ['silu, gelu (erf and tanh), softplus, relu, abs', (x) => x.silu().add(x.gelu()).add(x.gelu('tanh')).add(x.softplus()).add(x.relu()).add(x.abs()), () => [randn(3, 4)]],
  ['clamp, where, maximum, minimum', (x, y) => x.clamp(-0.5, 0.5).add(x.gt(y).where(x, y.mul(2))).add(x.maximum(y)).sub(x.minimum(y.mul(3))), () => [randn(3, 4), randn(3, 4)]],
  ['lerp with a tensor weight', (a, b, w) => a.lerp(b, w), () => [randn(2, 3), randn(2, 3), rand(0, 1, 2, 3)]],
  // reductions
  ['sum, mean over dims', (x) => x.sum(1).add(x.mean([0, 2], true).reshape([4]).sum()), () => [randn(2, 4, 3)]],
  ['var and std, biased and unbiased', (x) => x.var(1).add(x.std(1, { unbiased: false })).add(x.var(undefined, { unbiased: false })), () => [randn(3, 5)]],
  ['norm (p = 2, 1, 3), logsumexp', (x) => x.norm().add(x.norm(1, 1).sum()).add(x.norm(3, [0])).sum().add(x.logsumexp(1).sum()), () => [randn(3, 4)]],
  ['prod, max, min', (x) => x.prod(1).add(x.max(1)).add(x.min(1)).add(x.prod([0, 1])), () => [rand(0.5, 1.5, 3, 4)]],
  ['cumsum and topk values', (x) => x.cumsum(1).sum(1).add(x.topk(2, 1)[0].sum(1)), () => [randn(3, 5)]],
  // linear algebra
  ['matmul (batched, broadcast)', (a, b) => a.matmul(b), () => [randn(2, 3, 4), randn(4, 2)]],
  ['bmm', (a, b) => a.bmm(b), () => [randn(2, 3, 4), randn(2, 4, 2)]],
  ['linear', (x, w, b) => F.linear(x, w, b), () => [randn(3, 4), randn(2, 4), randn(2)]],
  // convolutions and normalization
  ['conv2d stride 2, padding 1', (x, w, b) => F.conv2d(x, w, { bias: b, stride: 2, padding: 1 }), () => [randn(1, 2, 5, 5), randn(3, 2, 3, 3), randn(3)]],
  ['conv2d groups 2, dilation 2', (x, w) => F.conv2d(x, w, { groups: 2, dilation: 2, padding: 1 }), () => [randn(1, 4, 5, 5), randn(2, 2, 2, 2)]],
  ['convTranspose2d stride 2, outputPadding 1', (x, w, b) => F.convTranspose2d(x, w, { bias: b, stride: 2, padding: 1, outputPadding: 1 }), () => [randn(1, 2, 3, 3), randn(2, 2, 3, 3), randn(2)]],
  ['convTranspose2d groups 2', (x, w) => F.convTranspose2d(x, w, { groups: 2, stride: 2 }), () => [randn(1, 4, 2, 3), randn(4, 1, 2, 2)]],
  ['groupNorm', (x, w, b) => F.groupNorm(x, 2, { weight: w, bias: b }), () => [randn(2, 4, 2, 3), randn(4), randn(4)]],
  ['layerNorm', (x, w, b) => F.layerNorm(x, [5], { weight: w, bias: b }), () => [randn(3, 5), randn(5), randn(5)]],
  ['softmax and logSoftmax', (x) => F.softmax(x, 1).add(F.logSoftmax(x, 0)), () => [randn(3, 4)]],
  // resampling and pooling
  ['interpolate bilinear', (x) => F.interpolate(x, { size: [5, 4], mode: 'bilinear' }), () => [randn(1, 2, 3, 3)]],
  ['interpolate bilinear alignCorners', (x) => F.interpolate(x, { scaleFactor: 2, mode: 'bilinear', alignCorners: true }), () => [randn(1, 1, 3, 2)]],
  ['interpolate bicubic', (x) => F.interpolate(x, { size: [4, 5], mode: 'bicubic' }), () => [randn(1, 1, 3, 3)]],
  ['avgPool2d and maxPool2d', (x) => F.avgPool2d(x, 3, { stride: 2, padding: 1 }).add(F.maxPool2d(x, 3, { stride: 2, padding: 1 })), () => [randn(1, 2, 5, 5)]],
  // attention and losses
  ['scaledDotProductAttention with an additive mask', (q, k, v, m) => F.scaledDotProductAttention(q, k, v, { mask: m }), () => [randn(1, 3, 4), randn(1, 5, 4), randn(1, 5, 2), randn(3, 5)]],
  ['scaledDotProductAttention causal', (q, k, v) => F.scaledDotProductAttention(q, k, v, { isCausal: true }), () => [randn(2, 4, 3), randn(2, 4, 3), randn(2, 4, 3)]],
  // (class weights are constants: PyTorch's nll_loss is not differentiable in them)
  ['crossEntropy with indices, weights and label smoothing', (x) => F.crossEntropy(x, tensor([2, 0, 3], { dtype: 'int64' }), { weight: tensor([0.5, 2, 1, 1.5], f64), labelSmoothing: 0.1 }), () => [randn(3, 4)]],
  ['crossEntropy with probabilities', (x, p) => F.crossEntropy(x, p, { reduction: 'sum' }), () => [randn(3, 4), F.softmax(randn(3, 4), 1)]],
  ['mseLoss', (x, y) => F.mseLoss(x, y), () => [randn(3, 4), randn(3, 4)]],
  // indexing and padding
  ['gather and indexSelect', (x) => x.gather(1, tensor([[0, 2, 2], [1, 1, 0]], { dtype: 'int64' })).sum(1).add(x.indexSelect(1, tensor([3, 3], { dtype: 'int64' })).sum(1)), () => [randn(2, 4)]],
  ['pad reflect, replicate, circular', (x) => x.pad([2, 1, 1, 2], 'reflect').add(x.pad([2, 1, 1, 2], 'replicate')).add(x.pad([2, 1, 1, 2], 'circular')), () => [randn(1, 2, 3, 4)]],
  ['embedding', (w) => F.embedding(w, tensor([[1, 3], [3, 0]], { dtype: 'int64' })), () => [randn(4, 3)]],
  ['pixelShuffle', (x) => F.pixelShuffle(x, 2), () => [randn(1, 4, 2, 2)]],
];

const baseline = memory().tensors;

describe('gradcheck: autograd vs central finite differences (float64)', () => {
  for (const [name, fn, make] of cases) test(name, () => check(fn, make));

  test('gradcheck itself catches a wrong gradient', () =>
    tidy(() => {
      // x.detach() * x: autograd sees d/dx = x, finite differences 2x.
      const r = gradcheck((x) => x.detach().mul(x), [randn(4).add(2)]);
      assert.equal(r.ok, false);
      assert.ok(r.maxError > 0.1);
    }));
});

/** A function's gradient, made differentiable (createGraph), as a function of the same inputs. */
const gradOf = (f: (x: Tensor) => Tensor) => (x: Tensor) => {
  const v = x.requiresGrad ? x : x.detach().clone().requiresGrad_();
  return grad(f(v), v, { createGraph: true })[0]!;
};

describe('second derivatives (createGraph)', () => {
  test('d2/dx2 x^3 = 6x', () =>
    tidy(() => {
      const x = tensor([-1.5, 0.5, 2, 3], f64).requiresGrad_();
      const [d1] = grad(x.pow(3).sum(), x, { createGraph: true });
      assert.deepEqual(vals(d1!.detach()), [6.75, 0.75, 12, 27]);
      const [d2] = grad(d1!.sum(), x);
      assert.deepEqual(vals(d2!), [-9, 3, 12, 18]);
    }));

  test('Hessian-vector product of sum(x^3) + x^T A x / 2 is (diag(6x) + A) v', () =>
    tidy(() => {
      g = new Generator(1);
      const n = 5;
      const m = randn(n, n);
      const A = m.add(m.transpose()).mul(0.5);
      const x = randn(n).requiresGrad_();
      const v = randn(n);
      const f = x
        .pow(3)
        .sum()
        .add(x.matmul(A.matmul(x)).mul(0.5));
      const [gx] = grad(f, x, { createGraph: true });
      const [hv] = grad(gx!.mul(v).sum(), x);
      const want = x.detach().mul(6).mul(v).add(A.matmul(v));
      const got = vals(hv!);
      vals(want).forEach((w, i) => assert.ok(Math.abs(got[i] - w) < 1e-12, `Hv[${i}]: ${got[i]} vs ${w}`));
    }));

  test('Hessian of logsumexp is diag(p) - p p^T (columns by Hessian-vector products)', () =>
    tidy(() => {
      g = new Generator(2);
      const x = randn(4).requiresGrad_();
      const p = vals(x.detach().softmax(0));
      const [gx] = grad(x.logsumexp(), x, { createGraph: true });
      for (let j = 0; j < 4; j++) {
        const e = eye(4, 4, f64).select(0, j);
        const [col] = grad(gx!.mul(e).sum(), x, { retainGraph: true });
        vals(col!).forEach((h, i) => {
          const want = (i === j ? p[i] : 0) - p[i] * p[j];
          assert.ok(Math.abs(h - want) < 1e-12, `H[${i}][${j}]: ${h} vs ${want}`);
        });
      }
    }));

  test('gradgradcheck: the gradients of tanh, softmax, layerNorm and conv2d are themselves differentiable', () => {
    g = new Generator(3);
    const w = randn(2, 1, 2, 2);
    check(
      gradOf((x) => x.tanh().mul(x).sum()),
      () => [randn(3, 2)],
    );
    check(
      gradOf((x) => F.softmax(x, 1).square().sum()),
      () => [randn(2, 4)],
    );
    check(
      gradOf((x) => F.layerNorm(x, [4]).pow(3).sum()),
      () => [randn(2, 4)],
    );
    check(
      gradOf((x) => F.conv2d(x, w, { padding: 1 }).square().sum()),
      () => [randn(1, 1, 3, 3)],
    );
    w.dispose();
  });
});

test('gradient checks leave no tensors behind', () => {
  assert.equal(memory().tensors, baseline);
});
