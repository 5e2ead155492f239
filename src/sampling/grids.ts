/**
 * Sigma grids: where a sampler evaluates the denoiser. Every grid is a float64 tensor [N + 1]:
 * N noise levels, strictly decreasing, then a final 0 (the sampler's last step lands on data).
 * Solvers never compute their own timesteps (DESIGN.md, "One core type").
 *
 *   karrasSigmas        EDM Eq. 5, rho = 7 (the single implementation lives in core/schedules.ts)
 *   exponentialSigmas   uniform in ln sigma (k-diffusion get_sigmas_exponential)
 *   logSnrUniformSigmas uniform in log-SNR lambda = -2 ln sigma: the exponential grid, named by its lambda ends
 *   uniformTSigmas      uniform in t of a continuous log-SNR schedule (cosine, linear VP, VE, shifted)
 *   vpSigmas            Song et al. 2021's continuous VP grid, t from 1 to eps_s (k-diffusion get_sigmas_vp)
 *   discreteSigmas      a discrete model's timesteps, spacing 'leading' | 'linspace' | 'trailing' (timesteps.ts)
 *
 * @example
 *   karrasSigmas(18);                                            // EDM's 18-step ImageNet grid + 0
 *   exponentialSigmas(20, { sigmaMin: 0.002, sigmaMax: 80 });
 *   uniformTSigmas(cosineLogSnr({ logSnrMin: -15, logSnrMax: 15 }), 50);
 *   discreteSigmas(discreteVP(linearBetas()), 50, { spacing: 'leading' });
 */
import { tensor } from '../engine/create';
import { Tensor } from '../engine/tensor';
import { EDM, linearVPLogSnr, LogSnrSchedule, sigmasFromLogSnr } from '../core/schedules';

export { karrasSigmas } from '../core/schedules';
export { discreteSigmas, discreteTimesteps, TimestepSpacing } from './timesteps';

/** k-diffusion get_sigmas_exponential: sigma_i = exp(linspace(ln smax, ln smin, N)), then 0. */
export function exponentialSigmas(n: number, { sigmaMin = EDM.sigmaMin, sigmaMax = EDM.sigmaMax }: { sigmaMin?: number; sigmaMax?: number } = {}): Tensor {
  checkGrid('exponentialSigmas', n, sigmaMin, sigmaMax);
  const [a, b] = [Math.log(sigmaMax), Math.log(sigmaMin)];
  return tensor([...Array.from({ length: n }, (_, i) => Math.exp(n === 1 ? a : a + ((b - a) * i) / (n - 1))), 0], { dtype: 'float64' });
}

/** Uniform in log-SNR from logSnrMin to logSnrMax; since lambda = -2 ln sigma this is exponentialSigmas between sigma = e^(-lambda/2). */
export function logSnrUniformSigmas(n: number, { logSnrMin = -2 * Math.log(EDM.sigmaMax), logSnrMax = -2 * Math.log(EDM.sigmaMin) }: { logSnrMin?: number; logSnrMax?: number } = {}): Tensor {
  return exponentialSigmas(n, { sigmaMin: Math.exp(-logSnrMax / 2), sigmaMax: Math.exp(-logSnrMin / 2) });
}

/** sigma(t) of a continuous log-SNR schedule at N evenly spaced t from tMax down to tMin, then 0. */
export function uniformTSigmas(schedule: LogSnrSchedule, n: number, range: { tMin?: number; tMax?: number } = {}): Tensor {
  return sigmasFromLogSnr(schedule, n, range);
}

/** Song et al. 2021's VP SDE grid: sigma(t) = sqrt(exp(betaD t^2 / 2 + betaMin t) - 1) at t = linspace(1, epsS, N), then 0. */
export function vpSigmas(n: number, { betaD = 19.9, betaMin = 0.1, epsS = 1e-3 }: { betaD?: number; betaMin?: number; epsS?: number } = {}): Tensor {
  return sigmasFromLogSnr(linearVPLogSnr({ betaMin, betaMax: betaMin + betaD }), n, { tMin: epsS, tMax: 1 });
}

function checkGrid(who: string, n: number, sigmaMin: number, sigmaMax: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${who}: the number of steps must be a positive integer, got ${n}`);
  if (!(sigmaMin > 0 && sigmaMax > sigmaMin && Number.isFinite(sigmaMax))) throw new RangeError(`${who}: need 0 < sigmaMin < sigmaMax < Infinity, got ${sigmaMin}, ${sigmaMax}`);
}
