// The DDPM ancestral sampler (Ho et al. 2020, Algorithm 2) against known answers: the
// algorithm written out literally in VP coordinates with the same noise, the chain a
// sigma grid defines, the moments of an analytic Gaussian mixture sampled through its
// exact denoiser, determinism and per-sample seeds, and the timestep spacings of
// Lin et al. 2023, Table 2.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, memory, setNumThreads, tensor, Tensor, tidy, zeros } from '../src/engine';
import { Denoiser } from '../src/core/denoiser';
import { discreteVP, linearBetas } from '../src/core/schedules';
import { GaussianMixture } from '../src/data/mixture';
import { chainOfSigmas, sampleDDPM } from '../src/sampling/ddpm';
import { randnLike, seededNoise } from '../src/sampling/noise';
import { discreteSigmas, discreteTimesteps } from '../src/sampling/timesteps';

setNumThreads(1);

const f64 = { dtype: 'float64' as const };
const gmm = new GaussianMixture(
  [
    [1.5, 0.5],
    [-1, -1],
    [0.25, 1.75],
  ],
  [0.3, 0.5, 0.2],
  [0.5, 0.3, 0.2],
);
const exact: Denoiser = (x, sigma) => gmm.denoise(x, sigma);

describe('timestep spacings (Lin et al. 2023, Table 2)', () => {
  test('T = 1000, 10 steps', () => {
    assert.deepEqual(discreteTimesteps(1000, 10, 'trailing'), [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    assert.deepEqual(discreteTimesteps(1000, 10, 'leading'), [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
    assert.deepEqual(discreteTimesteps(1000, 10, 'linspace'), [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  });
  test('all T steps is every step, for every spacing', () => {
    const all = Array.from({ length: 50 }, (_, i) => 49 - i);
    for (const s of ['trailing', 'leading', 'linspace'] as const) assert.deepEqual(discreteTimesteps(50, 50, s), all);
  });
  test('bad step counts are errors', () => {
    assert.throws(() => discreteTimesteps(1000, 0), /steps must be an integer in \[1, 1000\], got 0/);
    assert.throws(() => discreteTimesteps(1000, 1001), /got 1001/);
  });
});

describe('the chain of a sigma grid', () => {
  test("a schedule's full grid gives back its betas", () => {
    const ddpm = discreteVP(linearBetas());
    const sig = discreteSigmas(ddpm);
    const chain = chainOfSigmas(Array.from(sig.toFloat64Array()));
    sig.dispose();
    assert.equal(chain.T, 1000);
    for (let t = 0; t < 1000; t++) assert.ok(Math.abs(chain.betas[t] - ddpm.betas[t]) < 1e-12, `beta_${t}`);
  });
  test('grids must decrease to 0', () => {
    const x = zeros([2, 2]);
    const g = new Generator(0);
    assert.throws(() => sampleDDPM(exact, x, tensor([3, 1, 0.5]), { generator: g }), /must end in 0/);
    assert.throws(() => sampleDDPM(exact, x, tensor([1, 3, 0]), { generator: g }), /strictly decreasing/);
    x.dispose();
  });
});

describe('sampleDDPM', () => {
  test('equals Algorithm 2 written out in VP coordinates, noise for noise', () => {
    const sched = discreteVP(linearBetas(100, { betaEnd: 0.2 }));
    const { betas, alphaBar, sigmas } = sched;
    const T = sched.T;
    const B = 5;
    const xTvp = new Generator(7).randn([B, 2], f64); // x_T ~ N(0, I)
    // Algorithm 2: for t = T..1: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) / sqrt(alpha_t) + sigma_t z, z = 0 at t = 1.
    const g1 = new Generator(11);
    let x = xTvp.clone();
    for (let t = T - 1; t >= 0; t--) {
      const next = tidy(() => {
        const xve = x.div(Math.sqrt(alphaBar[t])); // the denoiser's coordinates
        const sigma = tensor(new Array(B).fill(sigmas[t]), f64);
        const eps = xve.sub(exact(xve, sigma)).div(sigmas[t]);
        let y = x.sub(eps.mul(betas[t] / Math.sqrt(1 - alphaBar[t]))).div(Math.sqrt(1 - betas[t]));
        if (t > 0) y = y.add(g1.randn([B, 2], f64).mul(Math.sqrt(betas[t])));
        return y;
      });
      x.dispose();
      x = next;
    }
    const grid = discreteSigmas(sched);
    const xT = tidy(() => xTvp.div(Math.sqrt(alphaBar[T - 1])));
    const ours = sampleDDPM(exact, xT, grid, { generator: new Generator(11) });
    const a = x.toFloat64Array();
    const b = ours.toFloat64Array();
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-9, `element ${i}: Algorithm 2 ${a[i]}, sampleDDPM ${b[i]}`);
    for (const t of [x, ours, grid, xT, xTvp]) t.dispose();
  });

  // Sampling error: the tolerance is 5 standard errors of the estimates from n samples.
  const N = 3000;
  function moments(x: Tensor): { mean: number[]; cov: number[] } {
    const v = x.toFloat64Array();
    const n = v.length / 2;
    const m = [0, 1].map((d) => v.filter((_, i) => i % 2 === d).reduce((s, y) => s + y, 0) / n);
    const cov = [0, 0, 0, 0];
    for (let i = 0; i < n; i++)
      for (const [a, b] of [
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
      ])
        cov[a * 2 + b] += ((v[2 * i + a] - m[a]) * (v[2 * i + b] - m[b])) / (n - 1);
    return { mean: m, cov };
  }
  function checkMoments(x: Tensor, what: string): void {
    const { mean, cov } = moments(x);
    const mu = Array.from(gmm.mean().toFloat64Array());
    const sigma = Array.from(gmm.covariance().toFloat64Array());
    for (const d of [0, 1]) {
      const se = Math.sqrt(sigma[d * 3] / N);
      assert.ok(Math.abs(mean[d] - mu[d]) < 5 * se, `${what}: mean[${d}] ${mean[d]} vs ${mu[d]} (se ${se})`);
    }
    for (let k = 0; k < 4; k++) {
      const [a, b] = [Math.floor(k / 2), k % 2];
      const se = Math.sqrt((sigma[a * 3] * sigma[b * 3] + sigma[k] ** 2) / N); // Gaussian approximation of the variance of a covariance estimate
      assert.ok(Math.abs(cov[k] - sigma[k]) < 5 * se * 1.5, `${what}: cov[${a}][${b}] ${cov[k]} vs ${sigma[k]} (se ${se})`); // x1.5: the mixture's kurtosis
    }
  }

  test("reproduces the mixture's mean and covariance through its exact denoiser (1000 steps, and 100 trailing)", () => {
    const ddpm = discreteVP(linearBetas());
    for (const steps of [1000, 100]) {
      const grid = discreteSigmas(ddpm, steps);
      const g = new Generator(steps);
      const xT = tidy(() => g.randn([N, 2], f64).mul(grid.select(0, 0).item()));
      const x = sampleDDPM(exact, xT, grid, { generator: g });
      checkMoments(x, `${steps} steps`);
      for (const t of [grid, xT, x]) t.dispose();
    }
  });

  test('deterministic for a seed; per-sample generators make sample i independent of the batch', () => {
    const ddpm = discreteVP(linearBetas());
    const grid = discreteSigmas(ddpm, 20);
    const s0 = grid.select(0, 0).item();
    const before = memory().tensors;
    const run = (seed: number, n: number) => {
      const noise = seededNoise(seed, n);
      const xT = tidy(() => randnLike(noise, zeros([n, 2], f64)).mul(s0));
      const x = sampleDDPM(exact, xT, grid, { generator: noise, variance: 'posterior' });
      xT.dispose();
      const v = Array.from(x.toFloat64Array());
      x.dispose();
      return v;
    };
    const a = run(3, 4);
    assert.deepEqual(run(3, 4), a);
    assert.deepEqual(run(5, 1), a.slice(4, 6)); // sample 2 of seed 3 = sample 0 of seed 5
    assert.notDeepEqual(run(4, 4), a);
    assert.equal(memory().tensors, before, 'the sampler frees its intermediates');
    grid.dispose();
  });

  test('the callback sees every step; clipDenoised clamps the estimates', () => {
    const grid = tensor([10, 1, 0.1, 0], f64);
    const seen: number[] = [];
    let maxAbs = 0;
    const x = sampleDDPM(
      exact,
      tidy(() => new Generator(0).randn([64, 2], f64).mul(10)),
      grid,
      {
        generator: new Generator(1),
        clipDenoised: [-0.5, 0.5],
        callback: ({ i, sigma, denoised }) => {
          seen.push(i, sigma);
          maxAbs = Math.max(
            maxAbs,
            tidy(() => denoised.abs().max().item()),
          );
        },
      },
    );
    assert.deepEqual(seen, [0, 10, 1, 1, 2, 0.1]);
    assert.ok(maxAbs <= 0.5);
    assert.ok(tidy(() => x.abs().max().item()) <= 0.5, 'the last step returns the clipped estimate');
    x.dispose();
    grid.dispose();
  });
});
