/**
 * Euler ancestral (k-diffusion sample_euler_ancestral): each step an Euler step down to
 * sigma_down, then fresh noise of std sigma_up (the ancestral split in common.ts). At eta = 1 the
 * step is the DDPM posterior with x0 = D, a discretization of the reverse-time SDE (Song et al.
 * 2021, Eq. 6). Stochastic, N evaluations.
 *
 * @example
 *   const x0 = sampleEulerAncestral(D, xT, karrasSigmas(50), { generator: new Generator(0) });
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { ancestralStep, checkSigmas, denoiseAt, requireGenerator, runSteps, SamplerOptions, toD } from './common';
import { randnLike } from './noise';

export interface EulerAncestralOptions extends SamplerOptions {
  /** Fraction of the step's variance re-drawn as fresh noise (default 1; 0 is Euler). */
  eta?: number;
  /** Scale of the fresh noise (default 1). */
  sNoise?: number;
}

/** x <- x + (sigma_down - sigma) d + sNoise sigma_up z. */
export function sampleEulerAncestral(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: EulerAncestralOptions = {}): Tensor {
  const s = checkSigmas('sampleEulerAncestral', sigmas);
  const { eta = 1, sNoise = 1 } = opts;
  const generator = eta > 0 ? requireGenerator('sampleEulerAncestral', opts) : undefined;
  return runSteps(xT, s.length - 1, (x, i) =>
    tidy(() => {
      const denoised = denoiseAt(D, x, s[i], opts.cond);
      opts.callback?.({ i, sigma: s[i], sigmaNext: s[i + 1], x, denoised });
      const { sigmaDown, sigmaUp } = ancestralStep(s[i], s[i + 1], eta);
      const xDown = x.add(toD(x, s[i], denoised).mul(sigmaDown - s[i]));
      return (sigmaUp > 0 ? xDown.add(randnLike(generator!, x).mul(sNoise * sigmaUp)) : xDown).to({ dtype: x.dtype });
    }),
  );
}
