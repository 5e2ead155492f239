// The analytic Gaussian mixture against independent answers: finite differences of
// its log-density, Tweedie's formula, a numerical integral, Monte Carlo posterior
// means and sample moments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cat, Generator, memory, tensor, tidy } from '../src/engine';
import { eightGaussiansMixture, GaussianMixture } from '../src/data';

// Three components, unequal stds and weights; classes [0, 1, 1].
const mk = () =>
  new GaussianMixture(
    [
      [-1, 0.5],
      [1.5, 1],
      [0.5, -1.5],
    ],
    [0.3, 0.6, 0.45],
    [0.2, 0.5, 0.3],
    [0, 1, 1],
  );
const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string) => {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i])), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
};
const points = () => new Generator(11).randn([12, 2], { dtype: 'float64' }).mul(1.5);

test('score equals the finite-difference gradient of logDensity', () => {
  const gmm = mk();
  const x = points();
  const h = 1e-5;
  for (const sigma of [0, 0.2, 1, 5]) {
    const s = gmm.score(x, sigma).toFloat64Array();
    const fd = new Float64Array(24);
    for (let d = 0; d < 2; d++) {
      const e = tensor(d === 0 ? [h, 0] : [0, h], { dtype: 'float64' });
      const lp = gmm.logDensity(x.add(e), sigma).toFloat64Array();
      const lm = gmm.logDensity(x.sub(e), sigma).toFloat64Array();
      for (let i = 0; i < 12; i++) fd[2 * i + d] = (lp[i] - lm[i]) / (2 * h);
    }
    close(s, fd, 1e-6, `score at sigma ${sigma}`);
  }
  gmm.dispose();
});

test('denoise equals x + sigma^2 score (Tweedie), per-sample sigmas included', () => {
  const gmm = mk();
  const x = points();
  const sigma = tensor([0.01, 0.1, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 0.7, 0.05], { dtype: 'float64' });
  const tweedie = x.add(gmm.score(x, sigma).mul(sigma.square().unsqueeze(1)));
  close(gmm.denoise(x, sigma).toFloat64Array(), tweedie.toFloat64Array(), 1e-10, 'D vs x + sigma^2 score');
  gmm.dispose();
});

test('denoise equals the Monte Carlo posterior mean E[x0 | x0 + sigma n = x]', () => {
  const gmm = mk();
  const x0 = gmm.sample(200000, new Generator(1), { dtype: 'float64' }); // [M, 2]
  const x = tensor(
    [
      [0, 0],
      [1, 0.5],
      [-0.5, -1],
    ],
    { dtype: 'float64' },
  );
  for (const sigma of [0.3, 1]) {
    const mc = tidy(() => {
      const logw = x
        .unsqueeze(1)
        .sub(x0.unsqueeze(0))
        .square()
        .sum(2)
        .div(-2 * sigma * sigma); // [3, M]
      return logw.softmax(1).matmul(x0); // [3, 2], self-normalized importance weights
    });
    close(gmm.denoise(x, sigma).toFloat64Array(), mc.toFloat64Array(), 0.02, `E[x0 | x] at sigma ${sigma}`);
  }
  gmm.dispose();
});

test('logDensity integrates to 1 on a 2-D grid, at sigma = 0 and sigma = 1', () => {
  const gmm = mk();
  for (const [sigma, lo, hi, step] of [
    [0, -4, 5, 0.02],
    [1, -8, 9, 0.04],
  ]) {
    const n = Math.round((hi - lo) / step);
    const total = tidy(() => {
      const g = tensor(
        Array.from({ length: n }, (_, i) => lo + (i + 0.5) * step),
        { dtype: 'float64' },
      ); // cell midpoints
      const xy = cat([g.unsqueeze(1).expand([n, n]).reshape([-1, 1]), g.unsqueeze(0).expand([n, n]).reshape([-1, 1])], 1); // [n^2, 2]
      return gmm.logDensity(xy, sigma).exp().sum().item() * step * step;
    });
    assert.ok(Math.abs(total - 1) < 1e-4, `integral at sigma ${sigma}: ${total}`);
  }
  gmm.dispose();
});

test('samples have the analytic mean and covariance, and components in proportion to the weights', () => {
  const gmm = mk();
  const n = 200000;
  const { x, component, label } = gmm.sampleLabeled(n, new Generator(4), { dtype: 'float64' });
  const mu = gmm.mean().toFloat64Array();
  const cov = gmm.covariance().toFloat64Array();
  // by hand: sum_k w_k mu_k and sum_k w_k (s_k^2 I + mu_k mu_k^T) - mu mu^T
  const M = [
      [-1, 0.5],
      [1.5, 1],
      [0.5, -1.5],
    ],
    S = [0.3, 0.6, 0.45],
    W = [0.2, 0.5, 0.3];
  const hm = [0, 1].map((d) => W.reduce((s, w, k) => s + w * M[k][d], 0));
  const hc = [0, 1].flatMap((a) => [0, 1].map((b) => W.reduce((s, w, k) => s + w * (M[k][a] * M[k][b] + (a === b ? S[k] ** 2 : 0)), 0) - hm[a] * hm[b]));
  close(mu, hm, 1e-12, 'mean()');
  close(cov, hc, 1e-12, 'covariance()');
  const sm = x.mean(0).toFloat64Array();
  const xc = x.sub(x.mean(0, true));
  const sc = xc
    .transpose(0, 1)
    .matmul(xc)
    .div(n - 1)
    .toFloat64Array();
  for (let d = 0; d < 2; d++) assert.ok(Math.abs(sm[d] - mu[d]) < 4 * Math.sqrt(cov[3 * d] / n), `sample mean ${sm[d]} vs ${mu[d]}`);
  close(sc, cov, 0.02, 'sample covariance');
  const comp = Array.from(component.data() as BigInt64Array, Number);
  const lab = Array.from(label.data() as BigInt64Array, Number);
  for (let k = 0; k < 3; k++) {
    const f = comp.filter((c) => c === k).length / n;
    assert.ok(Math.abs(f - W[k]) < 4 * Math.sqrt((W[k] * (1 - W[k])) / n), `component ${k}: frequency ${f}, weight ${W[k]}`);
  }
  comp.forEach((c, i) => assert.equal(lab[i], gmm.classes[c]));
  assert.deepEqual(gmm.sample(1000, new Generator(4)).data(), gmm.sampleLabeled(1000, new Generator(4)).x.data(), 'sample() draws as sampleLabeled()');
  gmm.dispose();
});

test('class conditioning: classLabels select the class mixture; out-of-range labels mean unconditional', () => {
  const gmm = mk();
  const x = points();
  const c1 = gmm.classConditional(1);
  assert.equal(c1.components, 2);
  assert.deepEqual(c1.classes, [1, 1]);
  close(c1.weights.toFloat64Array(), [0.5 / 0.8, 0.3 / 0.8], 1e-12, 'renormalized weights');
  const labels = tensor([1, 1, 1, 1, 1, 1, 0, 0, 2, -1, 2, 1], { dtype: 'int64' }); // 2 = numClasses = the null class
  const sigma = 0.7;
  const Dc = gmm.denoise(x, sigma, { classLabels: labels }).toFloat64Array();
  const D1 = c1.denoise(x, sigma).toFloat64Array();
  const c0 = gmm.classConditional(0);
  const D0 = c0.denoise(x, sigma).toFloat64Array();
  const Du = gmm.denoise(x, sigma).toFloat64Array();
  const want = Array.from(labels.data() as BigInt64Array, Number).flatMap((l, i) => Array.from((l === 1 ? D1 : l === 0 ? D0 : Du).subarray(2 * i, 2 * i + 2)));
  close(Dc, want, 1e-12, 'conditional denoiser');
  close(gmm.logDensity(x, sigma, { classLabels: tensor(new Array(12).fill(1), { dtype: 'int64' }) }).toFloat64Array(), c1.logDensity(x, sigma).toFloat64Array(), 1e-12, 'log p(x | c)');
  assert.throws(() => gmm.classConditional(5), /no component has class 5/);
  const r = gmm.responsibilities(x, sigma).sum(1).toFloat64Array();
  close(r, new Array(12).fill(1), 1e-12, 'responsibilities sum to 1');
  for (const m of [gmm, c0, c1]) m.dispose();
});

test('image-shaped x [N, C, H, W] flattens to D; results keep the shape and dtype of x', () => {
  const means = [Array.from({ length: 4 }, (_, i) => i / 4), Array.from({ length: 4 }, (_, i) => -i / 4)];
  const gmm = new GaussianMixture(means, [0.5, 0.5]);
  const x = new Generator(0).randn([3, 1, 2, 2]);
  const D = gmm.denoise(x, 0.5);
  assert.deepEqual(D.shape, [3, 1, 2, 2]);
  assert.equal(D.dtype, 'float32');
  close(D.toFloat64Array(), gmm.denoise(x.reshape([3, 4]).double(), 0.5).toFloat64Array(), 1e-6, 'flattened');
  assert.deepEqual(gmm.logDensity(x).shape, [3]);
  assert.throws(() => gmm.denoise(new Generator(0).randn([3, 5]), 1), /x must have shape \[N, 4\]/);
  gmm.dispose();
});

test('at huge sigma the denoiser returns the data mean; at tiny sigma, about x', () => {
  const gmm = eightGaussiansMixture();
  const x = tensor(
    [
      [0.3, -0.2],
      [1.4, 0.1],
    ],
    { dtype: 'float64' },
  );
  close(gmm.denoise(x, 1e4).toFloat64Array(), [0, 0, 0, 0], 1e-6, 'sigma -> inf');
  close(gmm.denoise(x, 1e-4).toFloat64Array(), x.toFloat64Array(), 1e-6, 'sigma -> 0');
  gmm.dispose();
});

test('calls free their intermediates', () => {
  const gmm = mk();
  const x = points();
  const before = memory().tensors;
  tidy(() => {
    gmm.denoise(x, 0.5, { classLabels: tensor(new Array(12).fill(0), { dtype: 'int64' }) });
    gmm.score(x, 0.5);
    gmm.logDensity(x, 0.5);
    gmm.sampleLabeled(10, new Generator(0));
    gmm.mean();
    gmm.covariance();
  });
  assert.equal(memory().tensors, before);
  gmm.dispose();
});
