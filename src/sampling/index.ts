/**
 * Samplers (tutorial part 4, "speed"): one plain function per file, `(D, xT, sigmas, options) => x0`,
 * the sigma grids they run on, the ODE/SDE views, and the registry the CLI's `--sampler NAME` and
 * `diffuse samplers` read.
 *
 * @example
 *   const { fn, info } = SAMPLERS['dpmpp-2m'];
 *   const x0 = fn(D, xT, karrasSigmas(20), { generator });   // info.evals(20) === 20 denoiser calls
 *   listSamplers();                                           // one line per sampler
 *   runSampler('dpmpp-2m-sde', D, xT, sigmas, { generator, eta: 0.5 });   // by name, options checked
 */
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { sampleConsistency } from './consistency';
import { requireGenerator, Sampler, SamplerInfo, SamplerOptions, SamplerParams } from './common';
import { sampleDDIM } from './ddim';
import { sampleDDPM } from './ddpm';
import { sampleDPMpp2M } from './dpmpp-2m';
import { sampleDPMpp2MSDE } from './dpmpp-2m-sde';
import { sampleDPMpp3MSDE } from './dpmpp-3m-sde';
import { sampleEuler } from './euler';
import { sampleEulerAncestral } from './euler-ancestral';
import { sampleHeun } from './heun';
import { sampleLMS } from './lms';

export * from './common';
export * from './noise';
export * from './grids';
export * from './views';
export * from './run';
export * from './generate';
export { sampleDDPM, chainOfSigmas, DDPMOptions } from './ddpm';
export { sampleDDIM, ddimSigma, DDIMOptions } from './ddim';
export { sampleEuler, EulerOptions } from './euler';
export { sampleEulerAncestral, EulerAncestralOptions } from './euler-ancestral';
export { sampleHeun, HeunOptions } from './heun';
export { sampleDPMpp2M } from './dpmpp-2m';
export { sampleDPMpp2MSDE, DPMppSDEOptions } from './dpmpp-2m-sde';
export { sampleDPMpp3MSDE } from './dpmpp-3m-sde';
export { sampleLMS, lmsCoefficient, LMSOptions } from './lms';
export { sampleConsistency, ConsistencyOptions } from './consistency';

/** A registered sampler: the function with its default options, and what it is. */
export interface RegisteredSampler {
  fn: Sampler;
  info: SamplerInfo;
}

const perStep = (N: number) => N;
const heunEvals = (N: number) => 2 * N - 1;
const entry = (
  name: string,
  description: string,
  stochastic: boolean,
  order: number,
  fn: Sampler,
  { evals = perStep, params }: { evals?: (N: number) => number; params?: SamplerParams } = {},
): RegisteredSampler => ({
  fn,
  info: { name, description, stochastic, order, evals, ...(params ? { params } : {}) },
});
const NO_CHURN = Object.freeze({ S_churn: 0, S_tmin: 0, S_tmax: Infinity, S_noise: 1 });
const EDM_CHURN = Object.freeze({ S_churn: 40, S_tmin: 0.05, S_tmax: 50, S_noise: 1.003 });
const eta = (dflt: number, max = Infinity) => ({ eta: { default: dflt, max } });

/** Every sampler by its CLI name (`--sampler NAME`); the options' defaults are each sampler's own. */
export const SAMPLERS: Readonly<Record<string, RegisteredSampler>> = Object.freeze({
  ddpm: entry(
    'ddpm',
    'DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), sigma_t^2 = beta_t',
    true,
    1,
    (D: Denoiser, x: Tensor, s: Tensor, o: SamplerOptions = {}) => sampleDDPM(D, x, s, { ...o, generator: requireGenerator('ddpm', o) }),
    { params: { variance: true } },
  ),
  ddim: entry('ddim', 'DDIM, eta = 0 (Song, Meng & Ermon 2021, Eq. 12): deterministic, Euler in sigma', false, 1, sampleDDIM, { params: eta(0, 1) }),
  euler: entry('euler', 'Euler on the probability-flow ODE (Karras et al. 2022, Eq. 4)', false, 1, sampleEuler, { params: { churn: NO_CHURN } }),
  'euler-ancestral': entry('euler-ancestral', 'Euler ancestral, eta = 1 (k-diffusion): Euler step to sigma_down + noise sigma_up', true, 1, sampleEulerAncestral, { params: eta(1) }),
  heun: entry('heun', "Heun's 2nd-order method (Karras et al. 2022, Algorithm 1), 2N - 1 evaluations", false, 2, sampleHeun, { evals: heunEvals, params: { churn: NO_CHURN } }),
  'heun-churn': entry(
    'heun-churn',
    'EDM stochastic sampler (Karras et al. 2022, Algorithm 2), S_churn = 40, S_tmin = 0.05, S_tmax = 50, S_noise = 1.003',
    true,
    1,
    (D, x, s, o = {}) => sampleHeun(D, x, s, { ...EDM_CHURN, ...o, generator: requireGenerator('heun-churn', o) }),
    { evals: heunEvals, params: { churn: EDM_CHURN } },
  ),
  'dpmpp-2m': entry('dpmpp-2m', 'DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, first-order first and last steps', false, 2, sampleDPMpp2M),
  'dpmpp-2m-sde': entry('dpmpp-2m-sde', 'DPM-Solver++(2M) SDE, eta = 1 (Lu et al. 2022; k-diffusion midpoint variant)', true, 1, sampleDPMpp2MSDE, { params: eta(1) }),
  'dpmpp-3m-sde': entry('dpmpp-3m-sde', 'DPM-Solver++(3M) SDE, eta = 1 (k-diffusion, after Lu et al. 2022)', true, 1, sampleDPMpp3MSDE, { params: eta(1) }),
  lms: entry('lms', 'Linear multistep, order 4 (Adams-Bashforth on the sigma grid; k-diffusion sample_lms)', false, 4, sampleLMS),
  consistency: entry(
    'consistency',
    'multistep consistency sampling (Song et al. 2023, Algorithm 1): f at each point, re-noised to the next; for consistency students, not an ODE solver',
    true,
    1,
    (D, x, s, o = {}) => sampleConsistency(D, x, s, o),
    { params: { sigmaMin: true } },
  ),
});

/** The registered sampler called name, or an error listing the names. */
export function getSampler(name: string): RegisteredSampler {
  const s = Object.prototype.hasOwnProperty.call(SAMPLERS, name) ? SAMPLERS[name] : undefined;
  if (!s) throw new RangeError(`unknown sampler ${JSON.stringify(name)}; choose one of: ${Object.keys(SAMPLERS).join(', ')}`);
  return s;
}

/** A sampler's evaluations as a formula in the steps N ("N", "2N - 1"), read off info.evals (affine in N for every registered sampler). */
export function evalsFormula(info: SamplerInfo): string {
  const a = info.evals(2) - info.evals(1);
  const b = info.evals(1) - a;
  for (const N of [3, 10, 100]) if (info.evals(N) !== a * N + b) return `${info.evals(10)} for N = 10`;
  const aN = a === 1 ? 'N' : `${a}N`;
  return b === 0 ? aN : `${aN} ${b < 0 ? '-' : '+'} ${Math.abs(b)}`;
}

/** The tunable options of a sampler with their defaults ("eta 1", "churn 40 [0.05, 50] x1.003"), or "-". */
export function paramsSummary(info: SamplerInfo): string {
  const p = info.params ?? {};
  const parts: string[] = [];
  if (p.eta) parts.push(`eta ${p.eta.default}${p.eta.max < Infinity ? ` (<= ${p.eta.max})` : ''}`);
  if (p.churn) parts.push(`churn ${p.churn.S_churn}${p.churn.S_churn ? ` [${p.churn.S_tmin}, ${p.churn.S_tmax}] noise ${p.churn.S_noise}` : ''}`);
  if (p.variance) parts.push('variance beta|posterior');
  if (p.sigmaMin) parts.push('sigma-min 0');
  return parts.length ? parts.join(', ') : '-';
}

/** One line per sampler (for `diffuse samplers`): name, kind, order, evaluations for N steps, options, description. */
export function listSamplers(): string[] {
  const rows = Object.values(SAMPLERS).map(({ info }) => [
    info.name,
    info.stochastic ? 'stochastic' : 'deterministic',
    `order ${info.order}`,
    `${evalsFormula(info)} evals`,
    paramsSummary(info),
    info.description,
  ]);
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(w[c]))).join('  '));
}
