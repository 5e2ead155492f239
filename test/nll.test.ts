// likelihoodBitsPerDim (src/eval/nll.ts), what `diffuse eval --nll` runs, on analytic mixtures
// whose exact denoiser gives the exact score and whose exact (log-)density is known:
// - continuous data: the ODE estimate (exact trace; Hutchinson) against log p_sigma_min, within
//   0.01 nats per sample on average;
// - 8-bit data on a "tiny image" mixture [N, 1, 2, 2]: the exact log-probability of each 8-bit
//   image is the mixture's mass over its bins (a product of normal CDF differences per
//   component), so the ODE's bits/dim after uniform dequantization (the + log2(127.5) of the
//   scaling counted) must land on it within 0.01 nats per image, and the bound above it;
// - the result does not depend on the batch size (per-sample generators).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, setNumThreads, tidy } from '../src/engine';
import { Denoiser } from '../src/core/denoiser';
import { discreteVP, linearBetas } from '../src/core/schedules';
import { GaussianMixture } from '../src/data/mixture';
import { discretizedGaussianLogLikelihood } from '../src/training/likelihood';
import { dequantize, likelihoodBitsPerDim } from '../src/eval/nll';
import { Generator as G } from '../src/engine/random';

setNumThreads(1);
const f64 = { dtype: 'float64' as const };
const avg = (a: Float64Array | number[]) => Array.from(a).reduce((s, v) => s + v, 0) / a.length;

describe('likelihoodBitsPerDim on the analytic mixture', () => {
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
  const sigmaMin = 0.002;

  test('continuous 2-D data: ODE with the exact trace within 0.01 nats of log p_sigma_min (mean |error|)', (t) =>
    tidy(() => {
      const x = gmm.sample(64, new Generator(0), f64);
      const r = likelihoodBitsPerDim(D, x, { sigmaMin, sigmaMax: 80 });
      assert.equal(r.ode!.trace, 'exact');
      assert.equal(r.vlb, undefined, 'no schedule: no bound');
      const exact = Array.from(gmm.logDensity(x, sigmaMin).neg().toFloat64Array());
      const err = avg(exact.map((e, i) => Math.abs(r.ode!.perSample[i] * 2 * Math.LN2 - e)));
      t.diagnostic(`mean |error| ${err.toExponential(2)} nats; ${r.ode!.bitsPerDim.value.toFixed(4)} bits/dim`);
      assert.ok(err < 0.01, `${err}`);
    }));

  test("continuous 2-D data: Hutchinson's estimate agrees with the exact density within 3 of its own standard errors", (t) =>
    tidy(() => {
      const x = gmm.sample(128, new Generator(1), f64);
      const r = likelihoodBitsPerDim(D, x, { sigmaMin, sigmaMax: 80, trace: 'hutchinson', probes: 8, odeSteps: 32 });
      const exact = avg(Array.from(gmm.logDensity(x, sigmaMin).neg().toFloat64Array()));
      const got = r.ode!.nats.value;
      const se = r.ode!.traceStderr! * 2 * Math.LN2;
      t.diagnostic(`Hutchinson ${got.toFixed(4)} vs exact ${exact.toFixed(4)} nats; the trace estimator's standard error ${se.toFixed(4)}`);
      assert.ok(se > 0 && se < 0.05, `the estimator is random, and its standard error is reported: ${se}`);
      assert.ok(Math.abs(got - exact) < 3 * se, `${got} vs ${exact}`);
    }));

  test('the result does not depend on the batch size', () =>
    tidy(() => {
      const x = gmm.sample(7, new Generator(2), f64);
      const schedule = discreteVP(linearBetas(50, { betaStart: 2e-3, betaEnd: 0.4 }));
      const run = (batchSize: number) => likelihoodBitsPerDim(D, x, { schedule, batchSize, trace: 'hutchinson', probes: 2, odeSteps: 4, seed: 9 });
      const [a, b] = [run(7), run(3)];
      for (const m of ['vlb', 'ode'] as const) a[m]!.perSample.forEach((v, i) => assert.ok(Math.abs(v - b[m]!.perSample[i]) < 1e-9, `${m}[${i}]: ${v} vs ${b[m]!.perSample[i]}`));
    }));

  test('argument checks name the argument and the value', () => {
    const x = tidy(() => gmm.sample(4, new Generator(3), f64));
    assert.throws(() => likelihoodBitsPerDim(D, x, { methods: ['vlb'] }), /'vlb' needs the model's discrete schedule/);
    assert.throws(() => likelihoodBitsPerDim(D, x, { batchSize: 0 }), /batchSize must be a positive integer, got 0/);
    assert.throws(() => likelihoodBitsPerDim(D, x, { labels: [1, 2] }), /2 labels for 4 samples/);
    assert.throws(() => likelihoodBitsPerDim(D, x, { trace: 'hutchinson', probes: 0 }), /probes must be a positive integer, got 0/);
    x.dispose();
  });
});

describe('8-bit tiny images [N, 1, 2, 2]: bits/dim against the exact probability of each image', () => {
  // components well inside [-1, 1], smooth at the scale of a bin (2/255)
  const means = [
    [-0.4, 0.2, 0.1, -0.3],
    [0.4, 0, -0.2, 0.3],
    [0, -0.4, 0.3, 0],
  ];
  const stds = [0.12, 0.06, 0.08];
  const weights = [0.5, 0.3, 0.2];
  const gmm = new GaussianMixture(means, stds, weights);
  const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
  const N = 48;
  const k = tidy(() => gmm.sample(N, new Generator(4), f64).add(1).mul(127.5).round().clamp(0, 255).to({ dtype: 'uint8' }).reshape([N, 1, 2, 2]));
  /** log P(image) = log sum_c w_c prod_d P_c(bin_d), for the mixture convolved with N(0, s0^2). */
  const logP = (s0: number): Float64Array =>
    tidy(() => {
      const levels = k.to(f64).reshape([N, 4]).div(127.5).sub(1);
      const m = gmm.means.unsqueeze(0); // [1, 3, 4]
      const s = gmm.stds
        .square()
        .add(s0 * s0)
        .sqrt()
        .unsqueeze(0)
        .unsqueeze(2); // [1, 3, 1]
      const per = discretizedGaussianLogLikelihood(levels.unsqueeze(1).expand([N, 3, 4]), m.expand([N, 3, 4]), s).sum(2); // [N, 3]
      return per.add(gmm.weights.log().unsqueeze(0)).logsumexp(1).toFloat64Array();
    });
  const schedule = discreteVP(linearBetas());
  const sigmaMin = 0.002;

  test('dequantization: uniform within the bin of each level, (k + u - 1/2) / 127.5 - 1', () =>
    tidy(() => {
      const x = dequantize(
        k,
        Array.from({ length: N }, (_, i) => new G(i)),
      );
      const level = k.to(f64).div(127.5).sub(1);
      const dev = x.sub(level).mul(127.5); // u - 1/2 in [-1/2, 1/2)
      assert.ok(dev.min().item() >= -0.5 && dev.max().item() < 0.5);
      assert.ok(Math.abs(dev.mean().item()) < 0.05 && Math.abs(dev.var().item() - 1 / 12) < 0.02, 'uniform');
    }));

  test('ODE (exact trace, 4 dimensions) on dequantized data: within 0.01 nats per image of the exact density at the same points, and a bound on -log P(image)', (t) =>
    tidy(() => {
      const r = likelihoodBitsPerDim(D, k, { methods: ['ode'], sigmaMin, sigmaMax: 80, seed: 3 });
      assert.equal(r.data, '8-bit');
      assert.equal(r.ode!.trace, 'exact');
      const toNats = 4 * Math.LN2;
      const est = Array.from(r.ode!.perSample, (b) => b * toNats);
      // the same dequantized points (sample i's generator is Generator(seed + i)), their exact density, and the scaling's log-determinant 4 ln 127.5
      const x = dequantize(
        k,
        Array.from({ length: N }, (_, i) => new G(3 + i)),
      ).reshape([N, 4]);
      const atPoints = Array.from(
        gmm
          .logDensity(x, sigmaMin)
          .neg()
          .add(4 * Math.log(127.5))
          .toFloat64Array(),
      );
      const err = avg(est.map((e, i) => Math.abs(e - atPoints[i])));
      // against the probability of the 8-bit image: E_u[-log p(x)] + D ln 127.5 >= -log P (Jensen), up to the Monte Carlo error of u
      const truth = logP(sigmaMin);
      const gaps = est.map((e, i) => e + truth[i]);
      const gap = avg(gaps);
      const se = Math.sqrt(avg(gaps.map((g) => (g - gap) ** 2)) / (N - 1));
      t.diagnostic(
        `ODE ${r.ode!.bitsPerDim.value.toFixed(4)} bits/dim; mean |ODE - exact density at the points| ${err.toExponential(2)} nats; -log P(image) ${(-avg(truth) / toNats).toFixed(4)} bits/dim, gap ${gap.toFixed(4)} +- ${se.toFixed(4)} nats`,
      );
      assert.ok(err < 0.01, `${err} nats`);
      assert.ok(gap > -3 * se && gap < 3 * se + 0.01, `gap ${gap} +- ${se}`);
    }));

  test('Hutchinson agrees with the exact trace on the same images within 3 standard errors', (t) =>
    tidy(() => {
      const exact = likelihoodBitsPerDim(D, k, { methods: ['ode'], sigmaMin, sigmaMax: 80, odeSteps: 16 }).ode!;
      const hutch = likelihoodBitsPerDim(D, k, { methods: ['ode'], sigmaMin, sigmaMax: 80, odeSteps: 16, trace: 'hutchinson', probes: 4 }).ode!;
      const d = hutch.bitsPerDim.value - exact.bitsPerDim.value;
      t.diagnostic(`hutchinson - exact ${d.toFixed(5)} bits/dim, trace stderr ${hutch.traceStderr!.toFixed(5)}`);
      assert.ok(Math.abs(d) < 3 * hutch.traceStderr! && hutch.traceStderr! > 0);
    }));

  test('the bound (discretized decoder, T = 1000) lies above the exact -log P(image), within 0.1 bits/dim', (t) =>
    tidy(() => {
      const r = likelihoodBitsPerDim(D, k, { schedule, methods: ['vlb'] });
      assert.equal(r.vlb!.clip, true);
      const truth = -avg(logP(0)) / (4 * Math.LN2);
      const gap = r.vlb!.bitsPerDim.value - truth;
      const { prior, diffusion, decoder } = r.vlb!.terms;
      t.diagnostic(
        `bound ${r.vlb!.bitsPerDim.value.toFixed(4)} +- ${r.vlb!.bitsPerDim.stderr!.toFixed(4)} bits/dim (L_T ${prior.toExponential(2)}, L_t-1 ${diffusion.toFixed(4)}, L_0 ${decoder.toFixed(4)}), exact ${truth.toFixed(4)}`,
      );
      assert.ok(Math.abs(prior + diffusion + decoder - r.vlb!.bitsPerDim.value) < 1e-9, 'the terms add up');
      assert.ok(gap > -3 * r.vlb!.bitsPerDim.stderr! && gap < 0.1, `${gap}`);
    }));
});
