/**
 * DDIM (Song, Meng & Ermon 2021, Eq. 12) for a VP model, written in the denoiser's sigma
 * coordinates: x_vp = sqrt(abar) x with abar = 1 / (1 + sigma^2), eps = (x - D) / sigma, and
 *   x_vp' = sqrt(abar') D + sqrt(1 - abar' - s^2) eps + s z,
 *   s = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar')     (Eq. 16).
 * Divided by sqrt(abar'), eta = 0 is x' = D + sigma' eps: exactly the Euler step in sigma (Song et al.
 * 2021, Sec. 4.1 / Karras et al. 2022, Sec. 3). eta = 1 is DDPM with the posterior variance beta~,
 * not Algorithm 2's larger choice beta. N evaluations.
 *
 * @example
 *   const x0 = sampleDDIM(D, xT, discreteSigmas(ddpm, 50));                               // deterministic
 *   const xs = sampleDDIM(D, xT, discreteSigmas(ddpm, 50), { eta: 1, generator: new Generator(0) });
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, denoiseAt, requireGenerator, runSteps, SamplerOptions } from './common';
import { randnLike } from './noise';

export interface DDIMOptions extends SamplerOptions {
  /** Stochasticity eta in [0, 1] (default 0: deterministic). */
  eta?: number;
}

/** sigma_t(eta) of DDIM Eq. 16 between the VP signal fractions abar (now) and abarNext. */
export function ddimSigma(abar: number, abarNext: number, eta: number): number {
  return eta * Math.sqrt((1 - abarNext) / (1 - abar)) * Math.sqrt(1 - abar / abarNext);
}

/** DDIM Eq. 12 down the grid. */
export function sampleDDIM(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: DDIMOptions = {}): Tensor {
  const s = checkSigmas('sampleDDIM', sigmas);
  const { eta = 0 } = opts;
  if (!(eta >= 0 && eta <= 1)) throw new RangeError(`sampleDDIM: eta must be in [0, 1], got ${eta}`);
  const generator = eta > 0 ? requireGenerator('sampleDDIM', opts) : undefined;
  return runSteps(xT, s.length - 1, (x, i) =>
    tidy(() => {
      const denoised = denoiseAt(D, x, s[i], opts.cond);
      opts.callback?.({ i, sigma: s[i], sigmaNext: s[i + 1], x, denoised });
      const [abar, abarNext] = [1 / (1 + s[i] ** 2), 1 / (1 + s[i + 1] ** 2)];
      const st = ddimSigma(abar, abarNext, eta);
      const eps = x.sub(denoised).div(s[i]);
      // x' = x_vp' / sqrt(abar'): D + sqrt((1 - abar' - s^2) / abar') eps + (s / sqrt(abar')) z
      const xNext = denoised.add(eps.mul(Math.sqrt(Math.max(0, 1 - abarNext - st * st) / abarNext)));
      return (st > 0 ? xNext.add(randnLike(generator!, x).mul(st / Math.sqrt(abarNext))) : xNext).to({ dtype: x.dtype });
    }),
  );
}
