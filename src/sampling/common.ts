/**
 * What every sampler shares: the options and step report, the sigma-grid check, and the
 * three pieces k-diffusion's sampling.py writes as small helpers (`to_d`,
 * `get_ancestral_step`) or pastes into several samplers (the churn block) — each here once.
 *
 * A sampler is a plain function `(D, xT, sigmas, options) => x0` (DESIGN.md, "One core type"):
 * sigmas is a float64 grid [N + 1], strictly decreasing and ending in 0, and xT is noise at
 * sigmas[0] in the denoiser's sigma coordinates (x = x0 + sigma n).
 *
 * @example
 *   const x0 = sampleEuler(D, xT, karrasSigmas(32), { callback: ({ i, sigma }) => bar.tick() });
 */
import { full } from '../engine/create';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser, expandSigma } from '../core/denoiser';
import { Noise, randnLike } from './noise';

/** What a sampler reports once per step (the tensors are freed after the callback returns: keep(x.clone()) to hold one). */
export interface StepInfo {
  /** Step index, 0 .. steps - 1. */
  i: number;
  /** The noise level of this step (sigma_hat after churn) and of the next (0 after the last). */
  sigma: number;
  sigmaNext: number;
  /** The sample the step starts from (x_hat after churn), and the denoiser's estimate of x0 from it. */
  x: Tensor;
  denoised: Tensor;
}

/** Options every sampler takes. */
export interface SamplerOptions {
  /** The random numbers of a stochastic sampler: one Generator, or one per sample. Required by stochastic samplers. */
  generator?: Noise;
  /** Class labels etc., passed to the denoiser. */
  cond?: Conditioning;
  /** Called once per step, after the step's first denoiser evaluation (progress bars, trajectory plots). */
  callback?: (info: StepInfo) => void;
}

/** A sampler: noise xT at sigmas[0] -> a sample at sigma = 0, shaped like xT. */
export type Sampler<O extends SamplerOptions = SamplerOptions> = (D: Denoiser, xT: Tensor, sigmas: Tensor, options?: O) => Tensor;

/** What the registry (and `diffuse samplers`) says about a sampler. */
export interface SamplerInfo {
  name: string;
  /** One line: the method and its paper / algorithm. */
  description: string;
  /** Draws fresh noise during sampling (needs options.generator). */
  stochastic: boolean;
  /** Order of convergence of the deterministic (ODE) solver in the number of steps; 1 for ancestral/SDE schemes. */
  order: number;
  /** Denoiser evaluations for a grid of N steps (N + 1 sigmas). */
  evals(N: number): number;
  /** The knobs it takes beyond the common options (`--eta`, `--churn`, `--variance` on the command line); absent: none. */
  params?: SamplerParams;
}

/** A sampler's tunable options, with their defaults: what `runSampler` and the CLI accept for it. */
export interface SamplerParams {
  /** Stochasticity eta (fresh noise per step): its default and largest allowed value (DDIM: 1). */
  eta?: { default: number; max: number };
  /** EDM's churn (Karras et al. 2022, Algorithm 2), with the defaults it runs with. */
  churn?: Required<ChurnOptions>;
  /** DDPM's variance choice, 'beta' or 'posterior'. */
  variance?: boolean;
  /** The consistency model's sigma_min (re-noising std sqrt(tau^2 - sigma_min^2)): consistency sampling. */
  sigmaMin?: boolean;
}

/** The grid as numbers: finite, strictly decreasing, ending in 0. */
export function checkSigmas(who: string, sigmas: Tensor): number[] {
  if (sigmas.ndim !== 1 || sigmas.size < 2) throw new TypeError(`${who}: sigmas must be a 1-D grid of at least 2 values ending in 0, got shape [${sigmas.shape.join(', ')}]`);
  const s = Array.from(sigmas.toFloat64Array());
  if (s[s.length - 1] !== 0) throw new RangeError(`${who}: sigmas must end in 0, got ${s[s.length - 1]}`);
  for (let i = 0; i + 1 < s.length; i++)
    if (!(Number.isFinite(s[i]) && s[i] > s[i + 1])) throw new RangeError(`${who}: sigmas must be finite and strictly decreasing, got sigmas[${i}] = ${s[i]}, sigmas[${i + 1}] = ${s[i + 1]}`);
  return s;
}

/** The generator of a stochastic sampler, or a clear error. */
export function requireGenerator(who: string, opts: SamplerOptions): Noise {
  if (!opts.generator) throw new TypeError(`${who}: this sampler is stochastic: pass options.generator (a Generator, or one per sample)`);
  return opts.generator;
}

/** D(x, sigma) at one noise level for the whole batch: sigma as a float64 [B] tensor. */
export function denoiseAt(D: Denoiser, x: Tensor, sigma: number, cond?: Conditioning): Tensor {
  return D(x, full([x.dim(0)], sigma, { dtype: 'float64', device: x.device }), cond);
}

/**
 * The step loop of every sampler: x_{i+1} = step(x_i, i) for i < n, freeing each x_i but the
 * caller's xT as it goes, and the current one if a step throws (a failing denoiser leaks nothing).
 */
export function runSteps(xT: Tensor, n: number, step: (x: Tensor, i: number) => Tensor): Tensor {
  let x = xT;
  try {
    for (let i = 0; i < n; i++) {
      const next = step(x, i);
      if (x !== xT) x.dispose();
      x = next;
    }
    return x;
  } catch (e) {
    if (x !== xT) x.dispose();
    throw e;
  }
}

/** k-diffusion to_d: the probability-flow ODE's derivative dx/dsigma = (x - D(x, sigma)) / sigma (EDM Eq. 4 with sigma(t) = t). */
export function toD(x: Tensor, sigma: number | Tensor, denoised: Tensor): Tensor {
  return x.sub(denoised).div(typeof sigma === 'number' ? sigma : expandSigma(sigma, x));
}

/**
 * k-diffusion get_ancestral_step: split the step sigma -> sigmaNext into a deterministic step down to
 * sigmaDown and fresh noise sigmaUp, sigmaUp = min(sigmaNext, eta sqrt(sigmaNext^2 (sigma^2 - sigmaNext^2) / sigma^2)),
 * sigmaDown = sqrt(sigmaNext^2 - sigmaUp^2). At eta = 1 this is the DDPM posterior q(x_next | x, x0 = D).
 */
export function ancestralStep(sigma: number, sigmaNext: number, eta = 1): { sigmaDown: number; sigmaUp: number } {
  if (!eta) return { sigmaDown: sigmaNext, sigmaUp: 0 };
  const sigmaUp = Math.min(sigmaNext, eta * Math.sqrt((sigmaNext ** 2 * (sigma ** 2 - sigmaNext ** 2)) / sigma ** 2));
  return { sigmaDown: Math.sqrt(sigmaNext ** 2 - sigmaUp ** 2), sigmaUp };
}

/** EDM Algorithm 2's stochastic "churn" (Karras et al. 2022, Sec. 4); defaults off (S_churn = 0). */
export interface ChurnOptions {
  /** Total churn; gamma = min(S_churn / N, sqrt(2) - 1) per step (default 0: no churn). */
  S_churn?: number;
  /** Churn only where sigma is in [S_tmin, S_tmax] (defaults 0, Infinity). */
  S_tmin?: number;
  S_tmax?: number;
  /** Scale of the added noise (default 1; EDM used 1.003 on ImageNet). */
  S_noise?: number;
}

/** gamma_i of EDM Algorithm 2, line 4: min(S_churn / N, sqrt(2) - 1) for sigma in [S_tmin, S_tmax], else 0. */
export function churnGamma(sigma: number, N: number, { S_churn = 0, S_tmin = 0, S_tmax = Infinity }: ChurnOptions = {}): number {
  return S_churn > 0 && sigma >= S_tmin && sigma <= S_tmax ? Math.min(S_churn / N, Math.SQRT2 - 1) : 0;
}

/**
 * EDM Algorithm 2, lines 4-6: raise the noise level to sigma_hat = sigma (1 + gamma) by adding noise
 * of std S_noise sqrt(sigma_hat^2 - sigma^2). Returns x itself (no noise drawn) when gamma = 0.
 */
export function churn(x: Tensor, sigma: number, N: number, opts: ChurnOptions, generator: Noise | undefined): { xHat: Tensor; sigmaHat: number } {
  const gamma = churnGamma(sigma, N, opts);
  if (gamma === 0) return { xHat: x, sigmaHat: sigma };
  if (!generator) throw new TypeError('churn: S_churn > 0 makes the sampler stochastic: pass options.generator');
  const sigmaHat = sigma * (1 + gamma);
  const std = (opts.S_noise ?? 1) * Math.sqrt(sigmaHat ** 2 - sigma ** 2);
  return { xHat: x.add(randnLike(generator, x).mul(std)), sigmaHat };
}
