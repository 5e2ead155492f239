// Sigma grids against their closed forms: each ends in 0, is strictly decreasing, and has the
// spacing its name says (Karras rho-spacing, geometric, uniform t, Song's VP, discrete spacings).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setNumThreads, Tensor } from '../src/engine';
import { cosineLogSnr, discreteVP, EDM, linearBetas } from '../src/core';
import { checkSigmas, discreteSigmas, discreteTimesteps, exponentialSigmas, karrasSigmas, logSnrUniformSigmas, uniformTSigmas, vpSigmas } from '../src/sampling';

setNumThreads(1);

const vals = (t: Tensor) => Array.from(t.toFloat64Array());
const close = (a: number[], b: number[], tol: number, what: string) => {
  assert.equal(a.length, b.length, what);
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= tol * (1 + Math.abs(b[i])), `${what}[${i}]: ${v} vs ${b[i]}`));
};

test('every grid: float64, N sigmas then 0, strictly decreasing', () => {
  const ddpm = discreteVP(linearBetas());
  const grids: [string, Tensor, number][] = [
    ['karras', karrasSigmas(10), 10],
    ['exponential', exponentialSigmas(10), 10],
    ['logSnrUniform', logSnrUniformSigmas(10), 10],
    ['uniformT', uniformTSigmas(cosineLogSnr({ logSnrMin: -15, logSnrMax: 15 }), 10), 10],
    ['vp', vpSigmas(10), 10],
    ...(['leading', 'linspace', 'trailing'] as const).map((spacing): [string, Tensor, number] => [spacing, discreteSigmas(ddpm, 10, { spacing }), 10]),
  ];
  for (const [name, g, n] of grids) {
    assert.equal(g.dtype, 'float64', name);
    assert.deepEqual(g.shape, [n + 1], name);
    assert.equal(checkSigmas(name, g).length, n + 1);
  }
});

test('Karras: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, rho = 7, ends at smin then 0', () => {
  const g = vals(karrasSigmas(5, { sigmaMin: 0.002, sigmaMax: 80 }));
  const r = (v: number) => v ** (1 / 7);
  close(g, [0, 1, 2, 3, 4].map((i) => (r(80) + (i / 4) * (r(0.002) - r(80))) ** 7).concat(0), 1e-12, 'karras');
  close([g[0], g[4]], [EDM.sigmaMax, EDM.sigmaMin], 1e-12, 'ends');
  // rho-th roots are evenly spaced
  const roots = g.slice(0, 5).map(r);
  roots.slice(1).forEach((v, i) => assert.ok(Math.abs(v - roots[i] - (roots[1] - roots[0])) < 1e-12));
});

test('exponential: geometric from sigmaMax to sigmaMin; uniform log-SNR is the same grid', () => {
  const g = vals(exponentialSigmas(6, { sigmaMin: 0.01, sigmaMax: 10 }));
  close(g, [10, 10 * 1e-3 ** 0.2, 10 * 1e-3 ** 0.4, 10 * 1e-3 ** 0.6, 10 * 1e-3 ** 0.8, 0.01, 0], 1e-12, 'exponential');
  const l = vals(logSnrUniformSigmas(6, { logSnrMin: -2 * Math.log(10), logSnrMax: -2 * Math.log(0.01) }));
  close(l, g, 1e-12, 'log-SNR uniform');
  const lambdas = l.slice(0, 6).map((s) => -2 * Math.log(s));
  lambdas.slice(1).forEach((v, i) => assert.ok(Math.abs(v - lambdas[i] - (lambdas[1] - lambdas[0])) < 1e-9, 'evenly spaced log-SNR'));
});

test('uniform t of the cosine schedule: sigma = tan(pi t / 2) at evenly spaced t', () => {
  const g = vals(uniformTSigmas(cosineLogSnr(), 5, { tMin: 0.1, tMax: 0.9 }));
  close(g, [0.9, 0.7, 0.5, 0.3, 0.1].map((t) => Math.tan((Math.PI * t) / 2)).concat(0), 1e-12, 'cosine');
});

test("VP: k-diffusion's get_sigmas_vp, sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) at t = linspace(1, 1e-3, N)", () => {
  const g = vals(vpSigmas(4));
  const t = [1, 1 - 0.999 / 3, 1 - (2 * 0.999) / 3, 1e-3];
  close(g, t.map((u) => Math.sqrt(Math.exp((19.9 * u * u) / 2 + 0.1 * u) - 1)).concat(0), 1e-10, 'vp');
});

test('discrete spacings (Lin et al. 2023, Table 2): leading, linspace, trailing over a DDPM schedule', () => {
  assert.deepEqual(discreteTimesteps(1000, 10, 'leading'), [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
  assert.deepEqual(discreteTimesteps(1000, 10, 'trailing'), [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
  assert.deepEqual(discreteTimesteps(1000, 10, 'linspace'), [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  const ddpm = discreteVP(linearBetas());
  close(vals(discreteSigmas(ddpm, 10, { spacing: 'trailing' })), [...discreteTimesteps(1000, 10, 'trailing').map((t) => ddpm.sigmas[t]), 0], 0, 'trailing sigmas');
  // trailing reaches the last step (needed for zero terminal SNR); leading never does
  assert.equal(discreteTimesteps(1000, 10, 'leading')[0] < 999, true);
});
