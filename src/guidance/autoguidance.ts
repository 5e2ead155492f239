/**
 * Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"):
 * guide the main denoiser with a weaker version of itself (smaller, or trained for less time),
 * both conditioned on the same labels:
 *
 *   D_w(x, sigma, c) = D_guide + w (D_main - D_guide)
 *
 * the same extrapolation as classifier-free guidance with the unconditional model replaced by
 * the bad one; w = 1 is the main model alone, and a guide equal to the main model is the identity.
 *
 * @example
 *   const G = autoguidance(Dmain, Dsmall, { scale: 2 });
 *   const x0 = sampleHeun(G, xT, karrasSigmas(32), { cond: { classLabels } });
 */
import { tidy } from '../engine/scope';
import { Denoiser } from '../core/denoiser';
import { checkFinite, guidanceInterval, guide } from './common';

/** Options of autoguidance. */
export interface AutoguidanceOptions {
  /** Guidance scale w: 1 = the main denoiser alone, 0 = the guide alone, > 1 guided. */
  scale: number;
  /** Guide only for sigma in (sigmaLo, sigmaHi] (Kynkaanniemi et al. 2024); elsewhere D_main alone. Default: every sigma. */
  interval?: [number, number];
}

/** Autoguidance D_guide + w (D_main - D_guide) (Karras et al. 2024, Sec. 3), as a Denoiser. */
export function autoguidance(main: Denoiser, guideDenoiser: Denoiser, opts: AutoguidanceOptions): Denoiser {
  if (opts === null || typeof opts !== 'object') throw new TypeError(`autoguidance: options { scale } are required, got ${String(opts)}`);
  const w = checkFinite('autoguidance', 'scale', opts.scale);
  const guided: Denoiser = (x, sigma, cond) => {
    if (w === 1) return main(x, sigma, cond);
    return tidy(() => guide(guideDenoiser(x, sigma, cond), main(x, sigma, cond), w));
  };
  return opts.interval ? guidanceInterval(guided, main, opts.interval) : guided;
}
