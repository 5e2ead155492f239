// Likelihoods on the analytic Gaussian mixture, whose density is known exactly:
// - the discrete variational bound (Ho et al. 2020, Eq. 5) with the exact denoiser is a
//   bound (ELBO <= log p, up to Monte Carlo error) whose gap shrinks as T grows; with the
//   discretized decoder it bounds the probability of the 8-bit bin;
// - the probability-flow ODE log-likelihood with the exact trace matches log p_sigma_min to
//   1e-3 nats (RK4, 64 steps, exact prior at sigma_max; 2e-2 with the N(0, sigma_max^2)
//   prior), and Hutchinson's estimate agrees with it within its standard error.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, linspace, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { Denoiser } from '../src/core/denoiser';
import { discreteVP, linearBetas } from '../src/core/schedules';
import { GaussianMixture } from '../src/data/mixture';
import { discretizedGaussianLogLikelihood, gaussianKL, odeLogLikelihood, variationalBound } from '../src/training/likelihood';

setNumThreads(1);

const f64 = { dtype: 'float64' as const };
const mean = (t: Tensor) => t.mean().item();
const stdErr = (t: Tensor) => t.std().item() / Math.sqrt(t.size);

const gmm = new GaussianMixture(
  [
    [-1, 0.5],
    [1, 0],
    [0, -1],
  ],
  [0.3, 0.15, 0.2],
  [0.5, 0.3, 0.2],
);
const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma);

/** Linear betas for T steps spanning the same range of alpha_bar as Ho's T = 1000 (scaled by 1000/T, as Nichol & Dhariwal). */
const ddpm = (T: number) => discreteVP(linearBetas(T, { betaStart: (1e-4 * 1000) / T, betaEnd: (0.02 * 1000) / T }));

describe('building blocks', () => {
  test('Gaussian KL: 0 for equal Gaussians, 1/2 for a unit mean shift, the closed form otherwise', () =>
    tidy(() => {
      const z = tensor([0], f64);
      assert.equal(gaussianKL(z, 1, z, 1).item(), 0);
      assert.ok(Math.abs(gaussianKL(tensor([1], f64), 1, z, 1).item() - 0.5) < 1e-15);
      assert.ok(Math.abs(gaussianKL(z, 2, z, 0.5).item() - 0.5 * (Math.log(0.25) + 4 - 1)) < 1e-15);
    }));

  test('discretized decoder (Eq. 13): a probability over the 256 levels of [-1, 1] that sums to 1', () =>
    tidy(() => {
      const levels = linspace(-1, 1, 256, f64);
      for (const [m, s] of [
        [0, 0.01],
        [0.3, 0.2],
        [-0.99, 0.05],
        [0.5, 3],
      ]) {
        const lp = discretizedGaussianLogLikelihood(levels, tensor([m], f64).expand([256]), s);
        assert.ok(Math.abs(lp.logsumexp(0).item()) < 1e-9, `mean ${m}, scale ${s}: log sum p = ${lp.logsumexp(0).item()}`);
      }
      // a narrow decoder centred on a level puts (almost) all mass there
      const at = discretizedGaussianLogLikelihood(tensor([0.2], f64), tensor([0.2], f64), 1e-4).item();
      assert.ok(at > -1e-9, `log p = ${at}`);
    }));
});

describe('discrete variational bound (Ho et al. 2020, Eq. 5) on the mixture', () => {
  test('ELBO <= log p, and the gap shrinks as T grows (Gaussian decoder, reverse variance beta_t)', (t) =>
    tidy(() => {
      const N = 1000;
      const g = new Generator(1);
      const x0 = gmm.sample(N, g, f64);
      const logp = gmm.logDensity(x0);
      const gaps = [25, 1000].map((T) => variationalBound(D, x0, ddpm(T), { generator: g, decoder: 'gaussian', variance: 'beta' }).nats.add(logp));
      const [g25, g1000] = gaps.map(mean);
      const [se25, se1000] = gaps.map(stdErr);
      t.diagnostic(`gap (nats, -ELBO - log p): T=25 ${g25.toFixed(3)} +- ${se25.toFixed(3)}, T=1000 ${g1000.toFixed(3)} +- ${se1000.toFixed(3)}`);
      assert.ok(g25 > -3 * se25 && g1000 > -3 * se1000, 'a bound: the gap is not negative beyond Monte Carlo error');
      assert.ok(g1000 < g25 - 3 * Math.hypot(se25, se1000), 'tighter with more steps');
      assert.ok(g1000 < 3 * se1000 && g1000 < 0.15, `stated tolerance: gap at T = 1000 within 3 standard errors of 0 and below 0.15 nats (${g1000})`);
    }));

  test('the posterior-variance choice beta~_t is a looser (still valid) bound on continuous data', () =>
    tidy(() => {
      const g = new Generator(2);
      const x0 = gmm.sample(500, g, f64);
      const run = (variance: 'beta' | 'posterior') => variationalBound(D, x0, ddpm(50), { generator: new Generator(3), decoder: 'gaussian', variance }).nats;
      const post = run('posterior');
      const beta = run('beta');
      assert.ok(mean(post.sub(beta)) > 0);
      assert.ok(mean(post.add(gmm.logDensity(x0))) > 0);
    }));

  test('discretized decoder: bits/dim bound the true probability of the 8-bit bin', (t) =>
    tidy(() => {
      // a mixture well inside [-1, 1], data quantized to its 256 levels
      const small = new GaussianMixture(
        [
          [-0.4, 0.2],
          [0.4, 0],
          [0, -0.4],
        ],
        [0.12, 0.06, 0.08],
        [0.5, 0.3, 0.2],
      );
      const N = 1000;
      const x0 = small.sample(N, new Generator(4), f64).add(1).mul(127.5).round().clamp(0, 255).div(127.5).sub(1);
      // true log P(bin) = log sum_k w_k prod_d P_k(bin_d)
      const perComponent = discretizedGaussianLogLikelihood(x0.unsqueeze(1), small.means.unsqueeze(0), small.stds.unsqueeze(0).unsqueeze(2)).sum(2); // [N, K]
      const logP = perComponent.add(small.weights.log().unsqueeze(0)).logsumexp(1);
      const r = variationalBound((x, s) => small.denoise(x, s), x0, discreteVP(linearBetas()), { generator: new Generator(5), variance: 'beta' });
      const gapBits = r.bitsPerDim.add(logP.div(2 * Math.LN2));
      t.diagnostic(`bound ${mean(r.bitsPerDim).toFixed(3)} bits/dim, true ${(-mean(logP) / (2 * Math.LN2)).toFixed(3)} bits/dim`);
      assert.ok(r.nats.min().item() >= 0, 'the bound on -log of a probability is non-negative');
      assert.ok(mean(gapBits) > -3 * stdErr(gapBits) && mean(gapBits) < 0.1, `stated tolerance: gap ${mean(gapBits)} below 0.1 bits/dim`);
      small.dispose();
    }));
});

describe('probability-flow ODE log-likelihood on the mixture', () => {
  const x = gmm.sample(64, new Generator(0), f64);
  const sigmaMin = 0.002;

  test('exact trace, exact prior at sigma_max: matches log p_sigma_min within 1e-3 nats', (t) =>
    tidy(() => {
      const r = odeLogLikelihood(D, x, { sigmaMin, steps: 64, prior: (xT, s) => gmm.logDensity(xT, s) });
      const err = r.logLikelihood.sub(gmm.logDensity(x, sigmaMin)).abs().max().item();
      t.diagnostic(`max |log p_ode - log p| = ${err.toExponential(2)} nats`);
      assert.ok(err < 1e-3, `${err}`);
    }));

  test('default prior N(0, sigma_max^2 I): within 2e-2 nats (the prior mismatch at sigma_max = 80)', () =>
    tidy(() => {
      const r = odeLogLikelihood(D, x, { sigmaMin, steps: 64 });
      const err = r.logLikelihood.sub(gmm.logDensity(x, sigmaMin)).abs();
      assert.ok(err.max().item() < 2e-2 && err.mean().item() < 5e-3, `max ${err.max().item()}, mean ${err.mean().item()}`);
      assert.ok(Math.abs(mean(r.bitsPerDim) + mean(r.logLikelihood) / (2 * Math.LN2)) < 1e-12);
    }));

  test("Hutchinson's trace (Rademacher) is unbiased: agrees with the exact trace within 3 standard errors", (t) =>
    tidy(() => {
      const xs = gmm.sample(192, new Generator(7), f64);
      const exact = odeLogLikelihood(D, xs, { sigmaMin, steps: 24 }).logLikelihood;
      const hutch = odeLogLikelihood(D, xs, { sigmaMin, steps: 24, trace: 'hutchinson', generator: new Generator(8) }).logLikelihood;
      const d = hutch.sub(exact);
      t.diagnostic(`mean(hutchinson - exact) = ${mean(d).toFixed(4)} +- ${stdErr(d).toFixed(4)}`);
      assert.ok(Math.abs(mean(d)) < 3 * stdErr(d));
      assert.ok(stdErr(d) > 0, 'the estimate is random');
    }));

  test('argument checks', () => {
    assert.throws(() => odeLogLikelihood(D, x, { trace: 'hutchinson' }), /needs a generator/);
    assert.throws(() => odeLogLikelihood(D, x, { sigmaMin: 1, sigmaMax: 0.5 }), /sigmaMin < sigmaMax/);
  });
});

// References from scripts/fixtures/likelihood.py (float64 PyTorch after improved-diffusion's
// code, the exact normal CDF): the decoder elementwise, and the whole bound of a Gaussian data
// distribution under its exact (linear) denoiser with the same x_t draws (torch.randn with the
// same seed gives the same numbers as Generator), so the two must agree to rounding.
describe('variational bound against the PyTorch reference and the Gaussian closed form', () => {
  const FIX = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../test/fixtures/likelihood.json'), 'utf8')) as {
    decoder: { x: number[]; mean: number[]; logScale: number[]; logp: number[] };
    vlb: { T: number; betaStart: number; betaEnd: number; m: number; s: number; seed: number; x0: number[][]; x0q: number[][]; expected: number[]; negLogP: number[] } & Record<
      'gaussian' | 'discretized',
      { prior: number[]; diffusion: number[]; decoder: number[] }
    >;
  };
  const close = (a: number[], b: number[], tol: number, what: string) => a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `${what}[${i}]: ${v} vs ${b[i]}`));

  test('discretized decoder (Eq. 13) equals the reference elementwise, edges and extreme scales included', () =>
    tidy(() => {
      const { x, mean, logScale, logp } = FIX.decoder;
      const got = discretizedGaussianLogLikelihood(tensor(x, f64), tensor(mean, f64), tensor(logScale, f64).exp());
      close(Array.from(got.toFloat64Array()), logp, 1e-10, 'log p');
    }));

  const v = FIX.vlb;
  const schedule = discreteVP(linearBetas(v.T, { betaStart: v.betaStart, betaEnd: v.betaEnd }));
  const gaussianD: Denoiser = (x, sigma) =>
    x
      .sub(v.m)
      .mul(
        sigma
          .square()
          .add(v.s * v.s)
          .reciprocal()
          .mul(v.s * v.s)
          .unsqueeze(1),
      )
      .add(v.m); // m + s^2/(s^2 + sigma^2)(x - m)

  for (const decoder of ['gaussian', 'discretized'] as const)
    test(`every term of the bound equals the reference with the same noise (${decoder} decoder, T = ${v.T})`, () =>
      tidy(() => {
        const x0 = tensor(decoder === 'gaussian' ? v.x0 : v.x0q, f64);
        const r = variationalBound(gaussianD, x0, schedule, { generator: new Generator(v.seed), decoder, variance: 'beta' });
        for (const part of ['prior', 'diffusion', 'decoder'] as const) close(Array.from(r[part].toFloat64Array()), v[decoder][part], 1e-9, `${decoder} ${part}`);
      }));

  test('Gaussian data: the Monte Carlo bound averages to the closed form E[bound | x0], which is within 0.01 nats per dimension of -log p on average', (t) =>
    tidy(() => {
      // closed form (fixture, numpy-independent of variationalBound): E[(x0 - D)^2 | x0] = (1 - k)^2 (x0 - m)^2 + k^2 sigma^2
      const slack = v.expected.map((e, i) => e - v.negLogP[i]);
      t.diagnostic(`closed-form slack E[bound] + log p: ${slack.map((s) => s.toFixed(4)).join(' ')} nats (3 dims)`);
      // a bound on average over the data (per point it bounds the model's -log p_theta, not the data's -log p), tight to 0.01 nats per dimension at T = 1000
      const meanSlack = slack.reduce((a, b) => a + b, 0) / slack.length;
      assert.ok(meanSlack > 0 && slack.every((s) => s < 0.03), `slack ${meanSlack}`);
      // Monte Carlo: 400 draws of the same 8 points
      const x0 = tensor(v.x0, f64).repeat([400, 1]);
      const r = variationalBound(gaussianD, x0, schedule, { generator: new Generator(21), decoder: 'gaussian' }).nats.reshape([400, 8]);
      const d = r.sub(tensor(v.expected, f64).unsqueeze(0)).reshape([-1]);
      t.diagnostic(`Monte Carlo - closed form: ${mean(d).toFixed(4)} +- ${stdErr(d).toFixed(4)} nats`);
      assert.ok(Math.abs(mean(d)) < 3 * stdErr(d) && stdErr(d) < 0.05, `${mean(d)} +- ${stdErr(d)}`);
    }));
});
