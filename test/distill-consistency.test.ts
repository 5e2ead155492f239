// Consistency models against known answers: the boundary condition f(x, sigma_min) = x of the
// coefficients (exactly, for any network); the CD target of an exact ODE step on the analytic
// mixture (the exact denoiser as teacher) in closed form; on a single Gaussian, whose ODE flow and
// consistency function are known exactly, Heun's target is the true f to O(h^3) and the CD loss of
// the true f vanishes while a plain denoiser's does not; the CT / iCT curricula against hand values;
// the loss forms (pseudo-Huber on the whole sample, not per pixel; iCT's weights); the same dropout
// randomness for target and student; the target network's EMA; multistep consistency sampling.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { full, Generator, memory, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { consistencyCoefficients, Denoiser, discreteTimestep, discreteVP, expandSigma, linearBetas, Network, vConsistencyCoefficients, vConsistencyDenoiser, vpCoefficients } from '../src/core';
import { GaussianMixture } from '../src/data';
import { consistencySigmas, sampleConsistency, SAMPLERS } from '../src/sampling';
import { Linear } from '../src/nn';
import {
  cdTarget,
  consistencyLoss,
  ctDiscretization,
  ctTargetDecay,
  heunStep,
  ictDiscretization,
  ictIndexProbabilities,
  ictWeights,
  karrasPoints,
  meanSquared,
  pseudoHuber,
  pseudoHuberC,
  TargetNetwork,
} from '../src/distillation/consistency';

setNumThreads(1);

const maxAbs = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const f64 = (v: number[]) => tensor(v, { dtype: 'float64' });
const ddpm = discreteVP(linearBetas());
const SMIN = ddpm.sigmas[0]; // 0.0100..., the teacher's smallest sigma
/** A network with weights that depend on its input and noise level: F = tanh(x W + c_noise / 1000). */
const randomNet = (): Network => {
  const W = new Generator(5).randn([2, 2], { dtype: 'float64' });
  return (xIn, cNoise) =>
    tidy(() =>
      xIn
        .to({ dtype: 'float64' })
        .matmul(W)
        .add(expandSigma(cNoise.to({ dtype: 'float64' }).div(1000), xIn))
        .tanh()
        .to({ dtype: xIn.dtype }),
    );
};

test('boundary condition: f(x, sigma_min) = x exactly, for any network and dtype; at sigma_min = 0 the v row itself', () => {
  const c = vConsistencyCoefficients(f64([SMIN, 1, 80]), SMIN, discreteTimestep(ddpm));
  assert.deepEqual(Array.from(c.cSkip.toFloat64Array()).slice(0, 1), [1]);
  assert.equal(Array.from(c.cOut.toFloat64Array())[0], -0);
  const f = vConsistencyDenoiser(randomNet(), { sigmaMin: SMIN, cNoise: discreteTimestep(ddpm) });
  for (const dtype of ['float32', 'float64'] as const) {
    const x = new Generator(1).randn([6, 2], { dtype }).mul(3);
    const y = f(x, full([6], SMIN, { dtype: 'float64' }));
    assert.equal(maxAbs(y, x), 0, `${dtype}: f(x, sigma_min) = x bit for bit`);
    assert.ok(maxAbs(f(x, full([6], 0.5, { dtype: 'float64' })), x) > 0.01, 'and not elsewhere');
  }
  // sigma_min = 0: c_skip = alpha^2, c_out = -sigma alpha (the v-prediction row); c_in and c_noise always the teacher's
  const s = f64([0.05, 1, 157]);
  const v = vpCoefficients('v', s, discreteTimestep(ddpm));
  const c0 = vConsistencyCoefficients(s, 0, discreteTimestep(ddpm));
  for (const k of ['cSkip', 'cOut', 'cIn', 'cNoise'] as const) assert.ok(maxAbs(c0[k], v[k]) < 1e-15, k);
  // Song et al. 2023's sigma_data = 0.5, sigma_min = 0.002 at sigma = 1, by hand
  const h = consistencyCoefficients(f64([1]), { sigmaMin: 0.002, sigmaData: 0.5, base: { cIn: f64([0.7]), cNoise: f64([3]) } });
  assert.ok(Math.abs(h.cSkip.item() - 0.25 / (0.998 ** 2 + 0.25)) < 1e-15);
  assert.ok(Math.abs(h.cOut.item() - (0.998 * 0.5) / Math.sqrt(1.25)) < 1e-15);
  assert.deepEqual([h.cIn.item(), h.cNoise.item()], [0.7, 3]);
});

// the analytic mixture (as in the sampler tests) and a single isotropic Gaussian N(mu, s^2 I), whose
// probability-flow ODE is x(sigma) = mu + (x - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma'^2)
const gmm = new GaussianMixture(
  [
    [-1, 0.5],
    [1.5, 1],
    [0.5, -1.5],
  ],
  [0.3, 0.6, 0.45],
  [0.2, 0.5, 0.3],
);
const exact: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
const [MU, S] = [[0.7, -0.4], 0.6];
const gauss = new GaussianMixture([MU], [S]);
/** The true consistency function of N(mu, s^2 I) with boundary sigma_min: f*(x, sigma) = mu + (x - mu) sqrt(s^2 + eps^2) / sqrt(s^2 + sigma^2). */
const trueF =
  (eps: number): Denoiser =>
  (x, sigma) =>
    tidy(() => {
      const mu = f64(MU).to({ dtype: x.dtype });
      return x
        .sub(mu)
        .mul(
          expandSigma(
            sigma
              .square()
              .add(S * S)
              .rsqrt()
              .mul(Math.sqrt(S * S + eps * eps)),
            x,
          ).to({ dtype: x.dtype }),
        )
        .add(mu);
    });

test('CD target of one exact DDIM step on the mixture: f-(D + sigma_n (x - D) / sigma_{n+1}, sigma_n), to 1e-10 in float64', () => {
  const x = new Generator(2).randn([5, 2], { dtype: 'float64' }).mul(3);
  const [next, now] = [f64([3, 3, 0.9, 0.9, 40]), f64([2.2, 2.2, 0.5, 0.5, 12])];
  const f = trueF(SMIN); // any target function: here the Gaussian's
  const got = cdTarget(f, exact, 'ddim', x, next, now);
  const D = gmm.denoise(x, next);
  const xHat = D.add(x.sub(D).mul(expandSigma(now.div(next), x))); // Song et al. 2021, Eq. 12 in sigma coordinates
  assert.ok(maxAbs(got, f(xHat, now)) < 1e-10);
  // Heun: the Euler step, then the trapezoid of the two slopes (EDM Algorithm 1)
  const d = x.sub(D).div(expandSigma(next, x));
  const xe = x.add(d.mul(expandSigma(now.sub(next), x)));
  const d2 = xe.sub(gmm.denoise(xe, now)).div(expandSigma(now, x));
  const heun = x.add(
    d
      .add(d2)
      .mul(expandSigma(now.sub(next), x))
      .mul(0.5),
  );
  assert.ok(maxAbs(cdTarget(f, exact, 'heun', x, next, now), f(heun, now)) < 1e-10);
});

test("on a Gaussian the CD target from Heun's step is the true f at x_{n+1} to O(h^3); the true f has zero CD loss, a denoiser does not", () => {
  const D: Denoiser = (x, sigma) => gauss.denoise(x, sigma);
  const f = trueF(SMIN);
  const x = new Generator(3).randn([8, 2], { dtype: 'float64' }).mul(2);
  const errs = [0.2, 0.1, 0.05].map((h) => {
    const [next, now] = [full([8], 1 + h, { dtype: 'float64' }), full([8], 1, { dtype: 'float64' })];
    return maxAbs(cdTarget(f, D, 'heun', x, next, now), f(x, next)); // consistency: f*(x^_n, sigma_n) = f*(x_{n+1}, sigma_{n+1})
  });
  assert.ok(errs[2] < 5e-5, `heun error ${errs.join(', ')}`);
  assert.ok(errs[0] / errs[1] > 6 && errs[1] / errs[2] > 6 && errs[0] / errs[1] < 10, `local error falls as h^3: ${errs.join(', ')}`);
  const x0 = gauss.sample(64, new Generator(4)).to({ dtype: 'float64' });
  const sigmas = karrasPoints(400, { sigmaMin: SMIN, sigmaMax: 20 });
  const cd = (student: Denoiser) => consistencyLoss(student, { method: 'cd', target: student, teacher: D, solver: 'heun' }, x0, { sigmas, generator: new Generator(5) }).loss.item();
  const good = cd(f);
  const bad = cd(D);
  assert.ok(good < 1e-9, `true f: ${good}`);
  assert.ok(bad > 1e3 * good && bad > 1e-6, `denoiser: ${bad}`);
  // heunStep is the same two-evaluation step down to the boundary: there the true f is the identity
  const y = heunStep(D, x, full([8], 0.05, { dtype: 'float64' }), full([8], SMIN, { dtype: 'float64' }));
  assert.ok(maxAbs(f(y, full([8], SMIN, { dtype: 'float64' })), y) < 1e-15);
  assert.ok(maxAbs(f(y, full([8], SMIN, { dtype: 'float64' })), f(x, full([8], 0.05, { dtype: 'float64' }))) < 1e-4, 'one Heun step of h = 0.04 keeps f to O(h^3)');
});

test('curricula: CT N(k) and mu(k) (Song et al. 2023, App. C), iCT N(k) (Song & Dhariwal 2023, Eq. 5), by hand', () => {
  const K = 1000;
  assert.equal(ctDiscretization(0, K), 2); // ceil(sqrt(s0^2) - 1) + 1
  assert.equal(ctDiscretization(K / 2, K), 107); // ceil(sqrt((151^2 - 4) / 2 + 4) - 1) + 1 = ceil(105.78) + 1
  assert.equal(ctDiscretization(K, K), 151);
  assert.ok(Math.abs(ctTargetDecay(0, K) - 0.9) < 1e-15, 'mu(0) = mu0 at N = s0');
  assert.ok(Math.abs(ctTargetDecay(K / 2, K) - 0.9980325824752019) < 1e-15); // exp(2 ln 0.9 / 107)
  // K' = floor(800000 / (log2(128) + 1)) = 100000
  const Kb = 800_000;
  assert.deepEqual(
    [0, 99_999, 100_000, 250_000, 699_999, 700_000, 799_999].map((k) => ictDiscretization(k, Kb)),
    [11, 11, 21, 41, 641, 1281, 1281],
  );
  const p = karrasPoints(5, { sigmaMin: 0.002, sigmaMax: 80 });
  assert.equal(p[0], 0.002);
  assert.equal(p[4], 80);
  assert.ok(Math.abs(p[2] - ((0.002 ** (1 / 7) + 80 ** (1 / 7)) / 2) ** 7) < 1e-12);
  assert.throws(() => karrasPoints(1, { sigmaMin: 0.002, sigmaMax: 80 }), /N must be an integer >= 2/);
});

test("iCT's index distribution and weights: log-normal mass between points (P_mean -1.1, P_std 2), 1 / (sigma_{i+1} - sigma_i)", () => {
  // reference: python3, math.erf((ln sigma + 1.1) / (2 sqrt 2)) differences, normalized
  const p = ictIndexProbabilities([0.01, 0.1, 1, 10]);
  [0.25552146844379786, 0.4750557483911063, 0.2694227831650958].forEach((v, i) => assert.ok(Math.abs(p[i] - v) < 1e-12, `p[${i}] = ${p[i]}`));
  assert.deepEqual(ictWeights([1, 2, 4, 4.5]), [1, 0.5, 2]);
  // the draws follow p: 20000 indices
  const sigmas = [0.01, 0.1, 1, 10];
  const counts = [0, 0, 0];
  const x0 = tensor(new Array<number>(20000).fill(0), { dtype: 'float64' }).reshape([20000, 1]);
  const r = consistencyLoss((x) => x.mul(0), { method: 'ict' }, x0, { sigmas, generator: new Generator(6) });
  for (const s of r.sigma.toFloat64Array()) counts[sigmas.indexOf(s) - 1]++;
  counts.forEach((c, i) => assert.ok(Math.abs(c / 20000 - p[i]) < 0.015, `index ${i}: ${c / 20000} vs ${p[i]}`));
});

test('pseudo-Huber on the whole sample: sqrt(||x - y||^2 + c^2) - c with c = 0.00054 sqrt(d); a per-pixel one is a different number', () => {
  const x = new Generator(7).randn([2, 3, 4, 4], { dtype: 'float64' }).mul(0.01);
  const y = new Generator(8).randn([2, 3, 4, 4], { dtype: 'float64' }).mul(0.01);
  const c = pseudoHuberC(48);
  assert.equal(c, 0.00054 * Math.sqrt(48));
  const got = Array.from(pseudoHuber(x, y).toFloat64Array());
  const xs = x.toFloat64Array();
  const ys = y.toFloat64Array();
  for (let b = 0; b < 2; b++) {
    let sq = 0;
    let perPixel = 0;
    for (let i = 48 * b; i < 48 * (b + 1); i++) {
      sq += (xs[i] - ys[i]) ** 2;
      perPixel += Math.sqrt((xs[i] - ys[i]) ** 2 + c * c) - c;
    }
    assert.ok(Math.abs(got[b] - (Math.sqrt(sq + c * c) - c)) < 1e-15, `sample ${b}`);
    assert.ok(Math.abs(got[b] - perPixel / 48) > 0.1 * got[b], `per-pixel mean ${perPixel / 48} vs whole-sample ${got[b]}`);
    assert.ok(Math.abs(got[b] - perPixel) > 0.1 * got[b], `per-pixel sum ${perPixel} vs whole-sample ${got[b]}`);
  }
  assert.ok(Math.abs(meanSquared(x, y).select(0, 0).item() - x.select(0, 0).sub(y.select(0, 0)).square().mean().item()) < 1e-18);
});

test('the loss: lambda d per sample (iCT: 1 / (sigma_{n+1} - sigma_n) times pseudo-Huber); CT targets the same z at sigma_n', () => {
  const x0 = new Generator(9).randn([6, 2], { dtype: 'float64' });
  const sigmas = [0.5, 1, 3];
  const student: Denoiser = (x, sigma) => x.mul(expandSigma(sigma, x).rdiv(1)); // x / sigma: distinguishes the two points
  const r = consistencyLoss(student, { method: 'ict' }, x0, { sigmas, generator: new Generator(10) });
  // redraw the same n and z: the index uses rand([B]), then z = randn
  const g = new Generator(10);
  const p = ictIndexProbabilities(sigmas);
  const n = Array.from(g.rand([6], { dtype: 'float64' }).toFloat64Array(), (u) => (u < p[0] ? 0 : 1));
  const z = g.randnLike(x0);
  const [sn, sn1] = [f64(n.map((i) => sigmas[i])), f64(n.map((i) => sigmas[i + 1]))];
  const pred = student(x0.add(z.mul(expandSigma(sn1, x0))), sn1);
  const target = student(x0.add(z.mul(expandSigma(sn, x0))), sn);
  const want = pseudoHuber(pred, target).mul(sn1.sub(sn).rdiv(1));
  assert.ok(maxAbs(r.perSample, want) < 1e-15);
  assert.ok(maxAbs(r.sigma, sn1) === 0);
  const ct = consistencyLoss(student, { method: 'ct', target: student }, x0, { sigmas, generator: new Generator(11) });
  assert.ok(ct.loss.item() > 0);
});

test('the same dropout randomness for the target and the student: the dropout generator is rewound between the passes', () => {
  const drop = new Generator(12);
  const noisy: Denoiser = (x) => drop.randLike(x); // a network whose output is its dropout draw
  const x0 = new Generator(13).randn([4, 2], { dtype: 'float64' });
  const o = { sigmas: [0.1, 1], generator: new Generator(14) };
  assert.equal(consistencyLoss(noisy, { method: 'ct', target: noisy }, x0, { ...o, dropout: drop }).loss.item(), 0);
  assert.ok(consistencyLoss(noisy, { method: 'ct', target: noisy }, x0, { ...o, generator: new Generator(14) }).loss.item() > 0.01, 'without the rewind the draws differ');
});

test('target network: theta- <- mu theta- + (1 - mu) theta after each update, mu(k) by update count; state round trip', () => {
  const online = new Linear(2, 2, { generator: new Generator(15) });
  const target = new Linear(2, 2, { generator: new Generator(16) });
  const t0 = target.weight.toFloat64Array();
  const p = online.weight.toFloat64Array();
  const mus: number[] = [];
  const t = new TargetNetwork(target, online, (k) => (mus.push(k), 0.5 + 0.25 * k));
  t.update();
  t.update();
  assert.deepEqual(mus, [0, 1]);
  const want = t0.map((v, i) => 0.75 * (0.5 * v + 0.5 * p[i]) + 0.25 * p[i]);
  target.weight.toFloat64Array().forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-6));
  const s = t.stateDict();
  const copy = new Linear(2, 2, { generator: new Generator(17) });
  const t2 = new TargetNetwork(copy, online, () => 0.9);
  t2.loadStateDict(s);
  assert.equal(t2.updates, 2);
  assert.deepEqual(Array.from(copy.weight.toFloat64Array()), Array.from(target.weight.toFloat64Array()));
  Object.values(s.tensors).forEach((x) => x.dispose());
});

test('multistep consistency sampling (Algorithm 1): 1 step is f(x_T, sigma_max); 2 steps re-noise with sqrt(tau^2 - sigma_min^2)', () => {
  const f = trueF(SMIN);
  const xT = new Generator(18).randn([5, 2], { dtype: 'float64' }).mul(80);
  const one = sampleConsistency(f, xT, f64([80, 0]));
  assert.equal(maxAbs(one, f(xT, full([5], 80, { dtype: 'float64' }))), 0);
  assert.equal(maxAbs(SAMPLERS.consistency.fn(f, xT, f64([80, 0])), one), 0, 'the registered sampler');
  const two = sampleConsistency(f, xT, f64([80, 0.8, 0]), { generator: new Generator(19), sigmaMin: SMIN });
  const z = new Generator(19).randnLike(xT);
  const want = f(one.add(z.mul(Math.sqrt(0.8 ** 2 - SMIN ** 2))), full([5], 0.8, { dtype: 'float64' }));
  assert.equal(maxAbs(two, want), 0);
  assert.throws(() => sampleConsistency(f, xT, f64([80, 0.8, 0])), /generator/);
  assert.throws(() => sampleConsistency(f, xT, f64([80, 0.8, 0]), { generator: new Generator(0), sigmaMin: 1 }), /sigmaMin must be >= 0 and below/);
  // the true consistency function samples N(mu, s^2 + eps^2) in one step, whatever the number of steps
  const xs = new Generator(20).randn([4000, 2], { dtype: 'float64' }).mul(80);
  for (const sigmas of [f64([80, 0]), consistencySigmas(3, { sigmaMin: SMIN, sigmaMax: 80 })]) {
    const x = sampleConsistency(f, xs, sigmas, { generator: new Generator(21), sigmaMin: SMIN });
    const sd = Math.sqrt(S * S + SMIN * SMIN) * (80 / Math.sqrt(80 * 80 + S * S)) ** (sigmas.size === 2 ? 1 : 0); // one step: x_T has std 80, not sqrt(80^2 + s^2)
    const std = x.sub(x.mean(0)).square().mean().sqrt().item();
    assert.ok(Math.abs(std - sd) < 0.03, `std ${std} vs ${sd}`);
  }
});

test('the consistency grid: the first N of the (N + 1)-point Karras grid, then 0', () => {
  assert.deepEqual(Array.from(consistencySigmas(1, { sigmaMin: SMIN, sigmaMax: 157 }).toFloat64Array()), [157, 0]);
  const k = karrasPoints(4, { sigmaMin: SMIN, sigmaMax: 157 }).reverse();
  const g = Array.from(consistencySigmas(3, { sigmaMin: SMIN, sigmaMax: 157 }).toFloat64Array());
  assert.equal(g.length, 4);
  [0, 1, 2].forEach((i) => assert.ok(Math.abs(g[i] - k[i]) < 1e-12 * k[i]));
  assert.equal(g[3], 0);
  const before = memory().tensors;
  consistencySigmas(2).dispose();
  assert.equal(memory().tensors, before, 'no leak');
});
