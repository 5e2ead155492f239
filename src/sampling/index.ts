/**
 * Samplers (tutorial part 4, "speed"): one plain function per file, `(D, xT, sigmas, options) => x0`,
 * the sigma grids they run on, the ODE/SDE views, and the registry the CLI's `--sampler NAME` and
 * `diffuse samplers` read.
 *
 * @example
 *   const { fn, info } = SAMPLERS['dpmpp-2m'];
 *   const x0 = fn(D, xT, karrasSigmas(20), { generator });   // info.evals(20) === 20 denoiser calls
 *   listSamplers();                                           // one line per sampler
 */
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { requireGenerator, Sampler, SamplerInfo, SamplerOptions } from './common';
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
export { sampleDDPM, chainOfSigmas, DDPMOptions } from './ddpm';
export { sampleDDIM, ddimSigma, DDIMOptions } from './ddim';
export { sampleEuler, EulerOptions } from './euler';
export { sampleEulerAncestral, EulerAncestralOptions } from './euler-ancestral';
export { sampleHeun, HeunOptions } from './heun';
export { sampleDPMpp2M } from './dpmpp-2m';
export { sampleDPMpp2MSDE, DPMppSDEOptions } from './dpmpp-2m-sde';
export { sampleDPMpp3MSDE } from './dpmpp-3m-sde';
export { sampleLMS, lmsCoefficient, LMSOptions } from './lms';

/** A registered sampler: the function with its default options, and what it is. */
export interface RegisteredSampler {
  fn: Sampler;
  info: SamplerInfo;
}

const perStep = (N: number) => N;
const entry = (name: string, description: string, stochastic: boolean, order: number, fn: Sampler, evals = perStep): RegisteredSampler => ({
  fn,
  info: { name, description, stochastic, order, evals },
});

/** Every sampler by its CLI name (`--sampler NAME`); the options' defaults are each sampler's own. */
export const SAMPLERS: Readonly<Record<string, RegisteredSampler>> = Object.freeze({
  ddpm: entry('ddpm', 'DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), sigma_t^2 = beta_t', true, 1, (D: Denoiser, x: Tensor, s: Tensor, o: SamplerOptions = {}) =>
    sampleDDPM(D, x, s, { ...o, generator: requireGenerator('ddpm', o) }),
  ),
  ddim: entry('ddim', 'DDIM, eta = 0 (Song, Meng & Ermon 2021, Eq. 12): deterministic, Euler in sigma', false, 1, sampleDDIM),
  euler: entry('euler', 'Euler on the probability-flow ODE (Karras et al. 2022, Eq. 4)', false, 1, sampleEuler),
  'euler-ancestral': entry('euler-ancestral', 'Euler ancestral, eta = 1 (k-diffusion): Euler step to sigma_down + noise sigma_up', true, 1, sampleEulerAncestral),
  heun: entry('heun', "Heun's 2nd-order method (Karras et al. 2022, Algorithm 1), 2N - 1 evaluations", false, 2, sampleHeun, (N) => 2 * N - 1),
  'heun-churn': entry(
    'heun-churn',
    'EDM stochastic sampler (Karras et al. 2022, Algorithm 2), S_churn = 40, S_tmin = 0.05, S_tmax = 50, S_noise = 1.003',
    true,
    1,
    (D, x, s, o = {}) => sampleHeun(D, x, s, { S_churn: 40, S_tmin: 0.05, S_tmax: 50, S_noise: 1.003, ...o, generator: requireGenerator('heun-churn', o) }),
    (N) => 2 * N - 1,
  ),
  'dpmpp-2m': entry('dpmpp-2m', 'DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, first-order first and last steps', false, 2, sampleDPMpp2M),
  'dpmpp-2m-sde': entry('dpmpp-2m-sde', 'DPM-Solver++(2M) SDE, eta = 1 (Lu et al. 2022; k-diffusion midpoint variant)', true, 1, sampleDPMpp2MSDE),
  'dpmpp-3m-sde': entry('dpmpp-3m-sde', 'DPM-Solver++(3M) SDE, eta = 1 (k-diffusion, after Lu et al. 2022)', true, 1, sampleDPMpp3MSDE),
  lms: entry('lms', 'Linear multistep, order 4 (Adams-Bashforth on the sigma grid; k-diffusion sample_lms)', false, 4, sampleLMS),
});

/** The registered sampler called name, or an error listing the names. */
export function getSampler(name: string): RegisteredSampler {
  const s = Object.prototype.hasOwnProperty.call(SAMPLERS, name) ? SAMPLERS[name] : undefined;
  if (!s) throw new RangeError(`unknown sampler ${JSON.stringify(name)}; choose one of: ${Object.keys(SAMPLERS).join(', ')}`);
  return s;
}

/** One line per sampler (for `diffuse samplers`): name, kind, order, evaluations, description. */
export function listSamplers(): string[] {
  const w = Math.max(...Object.keys(SAMPLERS).map((k) => k.length));
  return Object.values(SAMPLERS).map(({ info }) =>
    `${info.name.padEnd(w)}  ${info.stochastic ? 'stochastic   ' : 'deterministic'}  order ${info.order}  ${info.evals(10) === 10 ? 'N evals   ' : '2N-1 evals'}  ${info.description}`,
  );
}
