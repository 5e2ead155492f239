/**
 * A registered sampler run by name with the knobs the CLI exposes (`--eta`, `--churn`,
 * `--variance`, `--clip`), each checked against what the sampler takes (its `info.params`),
 * and x0 clipping as a wrapper on the denoiser, so it works for every sampler alike.
 *
 * @example
 *   const x0 = runSampler('dpmpp-2m-sde', D, xT, karrasSigmas(20), { generator, eta: 0.5 });
 *   const x1 = runSampler('ddpm', D, xT, sigmas, { generator, variance: 'posterior', clip: [-1, 1] });
 *   samplerParamError('euler', { eta: 1 });   // { param: 'eta', message: 'sampler "euler" takes no eta; ...' }
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { ChurnOptions, SamplerOptions, StepInfo } from './common';
import { getSampler, SAMPLERS } from './index';
import { Noise } from './noise';

/** What runSampler takes: the common options, and the tunable ones of the sampler named. */
export interface RunSamplerOptions {
  /** The random numbers (stochastic samplers, churn, eta > 0); deterministic samplers draw none. */
  generator: Noise;
  cond?: Conditioning;
  callback?: (info: StepInfo) => void;
  /** Stochasticity (ddim, euler-ancestral, dpmpp-2m-sde, dpmpp-3m-sde); default: the sampler's. */
  eta?: number;
  /** EDM churn (euler, heun, heun-churn); fields not given keep the sampler's defaults. */
  churn?: ChurnOptions;
  /** DDPM's sigma_t^2: 'beta' (default) or 'posterior'. */
  variance?: 'beta' | 'posterior';
  /** Consistency sampling's sigma_min (the model's boundary; default 0). */
  sigmaMin?: number;
  /** Clamp every x0 estimate D(x, sigma) to [lo, hi] (null: no clipping, the default). */
  clip?: [number, number] | null;
}

/** ADM's clip_denoised as a denoiser wrapper: D(x, sigma) clamped to [lo, hi], for any sampler. */
export function clipDenoiser(D: Denoiser, [lo, hi]: [number, number]): Denoiser {
  if (!(lo < hi)) throw new RangeError(`clipDenoiser: need lo < hi, got [${lo}, ${hi}]`);
  return (x, sigma, cond) => tidy(() => D(x, sigma, cond).clamp(lo, hi));
}

type Param = 'eta' | 'churn' | 'variance' | 'sigmaMin';

/** The samplers that take a parameter ('eta', 'churn', 'variance' or 'sigmaMin'). */
export function samplersWith(param: Param): string[] {
  return Object.values(SAMPLERS)
    .filter(({ info }) => info.params?.[param])
    .map(({ info }) => info.name);
}

/** Why the options do not fit the sampler (the parameter and a message), or null when they do. */
export function samplerParamError(name: string, o: Pick<RunSamplerOptions, 'eta' | 'churn' | 'variance' | 'sigmaMin'>): { param: Param; message: string } | null {
  const p = getSampler(name).info.params ?? {};
  const takesNo = (param: Param) => ({ param, message: `sampler ${JSON.stringify(name)} takes no ${param}; the samplers with ${param}: ${samplersWith(param).join(', ')}` });
  if (o.eta !== undefined) {
    if (!p.eta) return takesNo('eta');
    if (!(Number.isFinite(o.eta) && o.eta >= 0 && o.eta <= p.eta.max)) return { param: 'eta', message: `${name}'s eta must be in [0, ${p.eta.max}], got ${o.eta}` };
  }
  if (o.churn !== undefined) {
    if (!p.churn) return takesNo('churn');
    const c = { ...p.churn, ...definedOnly(o.churn) };
    if (!(c.S_churn >= 0 && Number.isFinite(c.S_churn))) return { param: 'churn', message: `S_churn must be a finite number >= 0, got ${c.S_churn}` };
    if (!(c.S_tmin >= 0 && c.S_tmax >= c.S_tmin)) return { param: 'churn', message: `need 0 <= S_tmin <= S_tmax, got S_tmin = ${c.S_tmin}, S_tmax = ${c.S_tmax}` };
    if (!(c.S_noise > 0 && Number.isFinite(c.S_noise))) return { param: 'churn', message: `S_noise must be a finite number > 0, got ${c.S_noise}` };
  }
  if (o.variance !== undefined) {
    if (!p.variance) return takesNo('variance');
    if (o.variance !== 'beta' && o.variance !== 'posterior') return { param: 'variance', message: `must be 'beta' or 'posterior', got ${JSON.stringify(o.variance)}` };
  }
  if (o.sigmaMin !== undefined) {
    if (!p.sigmaMin) return takesNo('sigmaMin');
    if (!(Number.isFinite(o.sigmaMin) && o.sigmaMin >= 0)) return { param: 'sigmaMin', message: `must be a finite number >= 0, got ${o.sigmaMin}` };
  }
  return null;
}

/** Runs the registered sampler `name` from xT down the grid (the caller owns the result). */
export function runSampler(name: string, D: Denoiser, xT: Tensor, sigmas: Tensor, opts: RunSamplerOptions): Tensor {
  const { fn } = getSampler(name);
  const { generator, cond, callback, eta, churn, variance, sigmaMin, clip = null } = opts;
  const bad = samplerParamError(name, { eta, churn, variance, sigmaMin });
  if (bad) throw new RangeError(`runSampler: ${bad.param}: ${bad.message}`);
  // Only the options given: a key set to undefined would override a registered default (heun-churn's S_churn = 40).
  const o: SamplerOptions & ChurnOptions & { eta?: number; variance?: string; sigmaMin?: number } = definedOnly({ generator, cond, callback, eta, variance, sigmaMin, ...churn });
  return fn(clip ? clipDenoiser(D, clip) : D, xT, sigmas, o);
}

/** The object without its undefined fields. */
function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
