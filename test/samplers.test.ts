// The sampler conformance suite: every registered sampler on the analytic Gaussian mixture, where
// the exact denoiser is known, so the exact ODE solution (to solver accuracy) and the exact data
// distribution are known. Plus the specific facts: Heun's 2N - 1 evaluations, DDIM(eta = 0) = Euler
// in sigma for a VP model, DPM-Solver++(2M)'s first-order first and last steps, measured orders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, keep, memory, setNumThreads, Tensor, tidy } from '../src/engine';
import { Denoiser, discreteVP, karrasSigmas, linearBetas } from '../src/core';
import { GaussianMixture } from '../src/data';
import {
  discreteSigmas,
  getSampler,
  listSamplers,
  probabilityFlowODE,
  reverseSDE,
  sampleDDIM,
  sampleDPMpp2M,
  sampleDPMpp2MSDE,
  sampleDPMpp3MSDE,
  sampleEuler,
  sampleHeun,
  Sampler,
  SAMPLERS,
  seededNoise,
  StepInfo,
} from '../src/sampling';

setNumThreads(1);

// Three components, unequal stds and weights (as in the mixture tests): mean and covariance are not trivial.
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
const counting = () => {
  const c = { n: 0 };
  const D: Denoiser = (x, sigma) => (c.n++, exact(x, sigma));
  return { D, c };
};
const SMAX = 20;
const grid = (n: number) => karrasSigmas(n, { sigmaMin: 0.01, sigmaMax: SMAX });
const start = (n: number, seed: number) => new Generator(seed).randn([n, 2], { dtype: 'float64' }).mul(SMAX);
const maxAbs = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const rms = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).square().sum(1).mean().sqrt().item());

test('a denoiser that throws mid-run leaves no tensors behind (multistep history included)', () => {
  for (const [name, { fn }] of Object.entries(SAMPLERS)) {
    const sigmas = grid(6);
    const xT = start(4, 1);
    const { D } = counting();
    let calls = 0;
    const failing: Denoiser = (x, sigma, cond) => {
      if (++calls === 4) throw new Error('denoiser failed');
      return D(x, sigma, cond);
    };
    const before = memory().tensors;
    assert.throws(() => fn(failing, xT, sigmas, { generator: new Generator(0) }), /denoiser failed/, name);
    assert.equal(memory().tensors, before, `${name}: leaks tensors when the denoiser throws`);
    [xT, sigmas].forEach((t) => t.dispose());
  }
});

test('every registered sampler: shapes, dtype, determinism under a seed, claimed evaluations, one line in the listing', () => {
  assert.equal(listSamplers().length, Object.keys(SAMPLERS).length);
  assert.throws(() => getSampler('nope'), /choose one of: ddpm/);
  for (const [name, { fn, info }] of Object.entries(SAMPLERS)) {
    assert.equal(info.name, name);
    for (const N of [1, 2, 7]) {
      const sigmas = grid(N);
      const xT = start(5, 1);
      const { D, c } = counting();
      const steps: StepInfo[] = [];
      const before = memory().tensors;
      const a = fn(D, xT, sigmas, { generator: new Generator(3), callback: (s) => steps.push({ ...s, x: keep(s.x.clone()), denoised: keep(s.denoised.clone()) }) });
      assert.deepEqual(a.shape, [5, 2], name);
      assert.equal(a.dtype, 'float64', name);
      assert.equal(c.n, info.evals(N), `${name}: ${c.n} evaluations for ${N} steps, claims ${info.evals(N)}`);
      assert.deepEqual(
        steps.map((s) => s.i),
        Array.from({ length: N }, (_, i) => i),
        `${name}: one callback per step`,
      );
      assert.equal(steps[N - 1].sigmaNext, 0);
      steps.forEach((s) => (s.x.dispose(), s.denoised.dispose()));
      assert.equal(memory().tensors, before + 1, `${name}: leaks tensors`);
      const b = fn(D, xT, sigmas, { generator: new Generator(3) });
      assert.equal(maxAbs(a, b), 0, `${name}: not deterministic under a seed`);
      if (info.stochastic && N > 1) {
        const other = fn(D, xT, sigmas, { generator: new Generator(4) });
        assert.ok(maxAbs(a, other) > 1e-6, `${name}: claims to be stochastic but ignores its generator`);
        assert.throws(() => fn(D, xT, sigmas, {}), /generator/, `${name}: needs a generator`);
        // per-sample streams: sample i depends only on its own seed
        const one = fn(D, xT.narrow(0, 2, 1), sigmas, { generator: seededNoise(12, 1) });
        const all = fn(D, xT, sigmas, { generator: seededNoise(10, 5) });
        assert.ok(maxAbs(one, all.narrow(0, 2, 1)) < 1e-12, `${name}: per-sample generators`);
        [other, one, all].forEach((t) => t.dispose());
      }
      [a, b, xT, sigmas].forEach((t) => t.dispose());
    }
  }
});

test('float32 inputs give float32 samples', () => {
  const xT = start(3, 2).to({ dtype: 'float32' });
  for (const { fn } of Object.values(SAMPLERS)) assert.equal(fn(exact, xT, grid(3), { generator: new Generator(0) }).dtype, 'float32');
});

test('Heun: N steps cost 2N - 1 evaluations (no correction on the step to sigma = 0)', () => {
  for (const N of [1, 2, 5, 18]) {
    const { D, c } = counting();
    sampleHeun(D, start(2, 0), grid(N));
    assert.equal(c.n, 2 * N - 1);
    const churned = counting();
    sampleHeun(churned.D, start(2, 0), grid(N), { S_churn: 10, generator: new Generator(0) });
    assert.equal(churned.c.n, 2 * N - 1);
  }
});

test('DDIM at eta = 0 equals the Euler step in sigma space for a VP model', () => {
  const ddpm = discreteVP(linearBetas());
  for (const spacing of ['leading', 'linspace', 'trailing'] as const) {
    const sigmas = discreteSigmas(ddpm, 25, { spacing });
    const xT = start(16, 5).mul(sigmas.select(0, 0).item() / SMAX);
    const ddim = sampleDDIM(exact, xT, sigmas);
    const euler = sampleEuler(exact, xT, sigmas);
    assert.ok(maxAbs(ddim, euler) < 1e-10, `${spacing}: ${maxAbs(ddim, euler)}`);
  }
});

test('DPM-Solver++(2M): the first step is DDIM/Euler (first order), the last returns the x0 estimate', () => {
  const sigmas = grid(12);
  const xT = start(8, 6);
  const record = (fn: Sampler) => {
    const xs: Tensor[] = [];
    const ds: Tensor[] = [];
    const out = fn(exact, xT, sigmas, { callback: ({ x, denoised }) => (xs.push(keep(x.clone())), ds.push(keep(denoised.clone()))) });
    return { xs, ds, out };
  };
  const dpm = record(sampleDPMpp2M);
  const euler = record(sampleEuler);
  assert.ok(maxAbs(dpm.xs[1], euler.xs[1]) < 1e-12, 'first step: equals Euler');
  assert.ok(maxAbs(dpm.xs[2], euler.xs[2]) > 1e-6, 'second step: not Euler (it uses the previous estimate)');
  assert.equal(maxAbs(dpm.out, dpm.ds[11]), 0, 'last step: x = D(x, sigma_min)');
  // the SDE variants at eta = 0 are the same ODE solvers: 2M SDE(eta = 0) = 2M
  assert.ok(maxAbs(sampleDPMpp2MSDE(exact, xT, sigmas, { eta: 0 }), dpm.out) < 1e-12);
});

// ---- convergence on the mixture: error against a converged solution, as a function of N ----

const orderX = start(64, 7);
const refCache = new Map<string, Tensor>();
/** The ODE solution at sigma = 0 from orderX on the grid's [sigmaMax, sigmaMin] (Heun, 1500 steps: error ~3e-6, below every measured error), then D at sigmaMin as every sampler's last step. */
function reference(): Tensor {
  if (!refCache.has('ref')) refCache.set('ref', sampleHeun(exact, orderX, grid(1500)));
  return refCache.get('ref')!;
}
/** Least-squares slope of ln(err) against ln(N). */
function slope(Ns: number[], errs: number[]): number {
  const lx = Ns.map(Math.log);
  const ly = errs.map(Math.log);
  const mx = lx.reduce((a, b) => a + b) / lx.length;
  const my = ly.reduce((a, b) => a + b) / ly.length;
  return -lx.reduce((a, x, i) => a + (x - mx) * (ly[i] - my), 0) / lx.reduce((a, x) => a + (x - mx) ** 2, 0);
}
export const measured: Record<string, number> = {};
const Ns = [16, 32, 64, 128];
const deterministic: [string, Sampler, number][] = [
  ...Object.values(SAMPLERS)
    .filter((s) => !s.info.stochastic)
    .map(({ fn, info }): [string, Sampler, number] => [info.name, fn, info.order]),
  ['dpmpp-3m (eta = 0)', (D, x, s, o) => sampleDPMpp3MSDE(D, x, s, { ...o, eta: 0 }), 2],
];

for (const [name, fn, order] of deterministic) {
  test(`convergence order of ${name}: the error against the converged ODE solution falls as N^-${Math.min(order, 2)} or faster`, () => {
    const ref = reference();
    const errs = Ns.map((N) => tidy(() => rms(fn(exact, orderX, grid(N)), ref)));
    const p = slope(Ns, errs);
    measured[name] = p;
    console.log(`# ${name}: errors ${errs.map((e) => e.toExponential(2)).join(', ')} at N = ${Ns.join(', ')}: slope ${p.toFixed(2)}`);
    // LMS and 3M ramp up from a first-order step, so their global order is 2 at least and at most their nominal order
    const expect = Math.min(order, 2);
    assert.ok(p > expect - 0.25, `${name}: measured order ${p.toFixed(2)}, expected about ${expect}`);
    if (order <= 2) assert.ok(p < order + 0.5, `${name}: measured order ${p.toFixed(2)} is suspiciously above ${order}`);
  });
}

// ---- the data distribution: stochastic (and deterministic) samplers match the mixture's moments ----

// Ancestral/SDE steps replace x0 by its posterior mean, which loses variance at O(step): at 40 Karras
// steps Euler ancestral's variance is ~10% low on this mixture, at 100 steps within sampling error.
test('stochastic samplers (and DDIM eta = 1) reproduce the mixture mean and covariance within 5 standard errors (4000 samples)', () => {
  const n = 4000;
  const mu = Array.from(gmm.mean().toFloat64Array());
  const cov = Array.from(gmm.covariance().toFloat64Array()); // [xx, xy, yx, yy]
  const cases: [string, Sampler][] = [
    // consistency sampling is exempt: it is not an ODE/SDE solver but Algorithm 1 of Song et al. 2023 for a
    // consistency function f; with a plain denoiser each step is D at one noise level plus fresh noise,
    // which does not converge to the data distribution (test/distill-consistency.test.ts checks it with the true f)
    ...Object.values(SAMPLERS)
      .filter(({ info }) => info.stochastic && info.name !== 'consistency')
      .map(({ fn, info }): [string, Sampler] => [info.name, fn]),
    ['ddim eta = 1', (D, x, s, o) => sampleDDIM(D, x, s, { ...o, eta: 1 })],
  ];
  const sigmas = karrasSigmas(100, { sigmaMin: 0.005, sigmaMax: 80 });
  const xT = new Generator(21).randn([n, 2], { dtype: 'float64' }).mul(80);
  for (const [name, fn] of cases) {
    tidy(() => {
      const x = fn(exact, xT, sigmas, { generator: new Generator(22) });
      const m = x.mean(0); // [2]
      const xc = x.sub(m);
      const prods = [xc.select(1, 0).square(), xc.select(1, 0).mul(xc.select(1, 1)), xc.select(1, 0).mul(xc.select(1, 1)), xc.select(1, 1).square()]; // [n] each
      const mv = Array.from(m.toFloat64Array());
      for (let d = 0; d < 2; d++) {
        const se = Math.sqrt(cov[3 * d] / n);
        assert.ok(Math.abs(mv[d] - mu[d]) < 5 * se, `${name}: mean[${d}] ${mv[d].toFixed(4)} vs ${mu[d].toFixed(4)} (5 SE = ${(5 * se).toFixed(4)})`);
      }
      prods.forEach((p, k) => {
        const c = p.mean().item();
        const se = p.std().item() / Math.sqrt(n);
        assert.ok(Math.abs(c - cov[k]) < 5 * se, `${name}: cov[${k}] ${c.toFixed(4)} vs ${cov[k].toFixed(4)} (5 SE = ${(5 * se).toFixed(4)})`);
      });
    });
  }
});

test('views: the probability-flow ODE and the reverse SDE from the same start, with their paths', () => {
  const sigmas = grid(10);
  const xT = start(6, 9);
  const ode = probabilityFlowODE(exact, xT, sigmas);
  const sde = reverseSDE(exact, xT, sigmas, { generator: new Generator(1) });
  for (const v of [ode, sde]) {
    assert.deepEqual(v.path.shape, [11, 6, 2]);
    assert.deepEqual(v.denoised.shape, [10, 6, 2]);
    assert.equal(v.sigmas.length, 11);
    assert.equal(maxAbs(v.path.select(0, 0), xT), 0, 'both start at xT');
    assert.equal(maxAbs(v.path.select(0, 10), v.x), 0, 'path ends at the sample');
  }
  assert.equal(maxAbs(ode.x, sampleHeun(exact, xT, sigmas)), 0, 'the ODE view is Heun');
  assert.ok(maxAbs(ode.x, sde.x) > 1e-3, 'different paths');
});
