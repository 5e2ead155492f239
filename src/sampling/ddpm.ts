/**
 * DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), on the denoiser and a sigma grid.
 *
 * Algorithm 2 walks the VP chain down one step at a time:
 *   x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) + sigma_t z,
 * which is the posterior mean of q(x_{t-1} | x_t, x0) (Eq. 7) with x0 replaced by the model's
 * estimate, plus noise of variance sigma_t^2 = beta_t (or beta~_t, the posterior variance).
 * Here the estimate is the denoiser's D(x, sigma), and the chain is the one the sigma grid
 * defines: abar = 1 / (1 + sigma^2) at each grid point, beta = 1 - abar_t / abar_{t-1}. On a
 * model's full grid (discreteSigmas(schedule)) that is the model's own chain; on a subset it
 * is the respaced chain of Nichol & Dhariwal 2021, Sec. 4. x lives in the sigma ("VE")
 * coordinates of the denoiser, x = x_vp / sqrt(abar).
 *
 * @example
 *   const sigmas = discreteSigmas(ddpm);                        // 1000 steps + 0
 *   const xT = randnLike(noise, zeros([16, 1, 32, 32])).mul(sigmas.select(0, 0).item());
 *   const x0 = sampleDDPM(D, xT, sigmas, { generator: noise }); // [16, 1, 32, 32]
 */
import { full } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { ddpmPosterior, DiscreteVP, discreteVP } from '../core/schedules';
import { checkSigmas, runSteps, SamplerOptions } from './common';
import { Noise, randnLike } from './noise';

export type { StepInfo } from './common';
export { checkSigmas } from './common';

export interface DDPMOptions extends SamplerOptions {
  /** The random numbers (z in Algorithm 2): one Generator, or one per sample. */
  generator: Noise;
  /** sigma_t^2 = beta_t ('beta', Algorithm 2's first choice, the default) or the posterior variance beta~_t ('posterior'). */
  variance?: 'beta' | 'posterior';
  /** Clamp each x0 estimate to [lo, hi] (ADM's clip_denoised, e.g. [-1, 1] for images); default none. */
  clipDenoised?: [number, number] | null;
}

/**
 * The VP chain of a sigma grid (without its final 0): timestep index t = 0 is the smallest
 * sigma, abar_t = 1 / (1 + sigma_t^2), beta_0 = 1 - abar_0, beta_t = 1 - abar_t / abar_{t-1}.
 */
export function chainOfSigmas(sigmas: number[]): DiscreteVP {
  const abar = sigmas
    .slice(0, -1)
    .reverse()
    .map((s) => 1 / (1 + s * s)); // ascending sigma
  return discreteVP(abar.map((a, t) => 1 - (t === 0 ? a : a / abar[t - 1])));
}

/** Ho et al. 2020, Algorithm 2: ancestral sampling from xT (noise at sigmas[0]) down the grid to sigma = 0. */
export function sampleDDPM(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: DDPMOptions): Tensor {
  const s = checkSigmas('sampleDDPM', sigmas);
  const { generator, cond, variance = 'beta', clipDenoised = null, callback } = opts;
  if (variance !== 'beta' && variance !== 'posterior') throw new TypeError(`sampleDDPM: variance must be 'beta' or 'posterior', got ${JSON.stringify(variance)}`);
  const N = s.length - 1;
  const chain = N >= 2 ? chainOfSigmas(s) : null;
  const B = xT.dim(0);
  return runSteps(xT, N, (x, i) => {
    const t = N - 1 - i; // the chain's timestep index of sigmas[i]
    return tidy(() => {
      let x0 = D(x, full([B], s[i], { dtype: 'float64', device: x.device }), cond);
      if (clipDenoised) x0 = x0.clamp(clipDenoised[0], clipDenoised[1]);
      callback?.({ i, sigma: s[i], sigmaNext: s[i + 1], x, denoised: x0 });
      if (t === 0) return x0.to({ dtype: x.dtype }); // t = 1 in the paper: z = 0, and the posterior mean is the x0 estimate
      const { c0, ct, variance: posteriorVar } = ddpmPosterior(chain!, t); // Eq. 7
      const sigmaT2 = variance === 'beta' ? chain!.betas[t] : posteriorVar;
      const [a, aPrev] = [Math.sqrt(chain!.alphaBar[t]), Math.sqrt(chain!.alphaBar[t - 1])];
      // x_{t-1} = c0 x0 + ct x_t + sigma_t z in VP coordinates (x_vp = sqrt(abar) x), back to sigma coordinates
      const xPrevVp = x0
        .mul(c0)
        .add(x.mul(ct * a))
        .add(randnLike(generator, x).mul(Math.sqrt(sigmaT2)));
      return xPrevVp.div(aPrev).to({ dtype: x.dtype });
    });
  });
}
