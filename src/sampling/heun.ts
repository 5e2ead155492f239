/**
 * Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1), and with
 * S_churn > 0 the stochastic sampler of Algorithm 2 (EDM generate.py, edm_sampler). The step to
 * sigma = 0 is a plain Euler step (line 9's "if sigma_{i+1} != 0"), so N steps cost 2N - 1 evaluations.
 *
 * @example
 *   const x0 = sampleHeun(D, xT, karrasSigmas(18));                                    // 35 evaluations
 *   const xs = sampleHeun(D, xT, karrasSigmas(256), { S_churn: 40, S_tmin: 0.05, S_tmax: 50, S_noise: 1.003, generator });
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, churn, ChurnOptions, denoiseAt, runSteps, SamplerOptions, toD } from './common';

export interface HeunOptions extends SamplerOptions, ChurnOptions {}

/** EDM Algorithm 1 (S_churn = 0, the default) or Algorithm 2. */
export function sampleHeun(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: HeunOptions = {}): Tensor {
  const s = checkSigmas('sampleHeun', sigmas);
  const N = s.length - 1;
  return runSteps(xT, N, (x, i) =>
    tidy(() => {
      const { xHat, sigmaHat: tHat } = churn(x, s[i], N, opts, opts.generator); // lines 4-6
      const tNext = s[i + 1];
      const denoised = denoiseAt(D, xHat, tHat, opts.cond);
      opts.callback?.({ i, sigma: tHat, sigmaNext: tNext, x: xHat, denoised });
      const dCur = toD(xHat, tHat, denoised); // line 7
      const xNext = xHat.add(dCur.mul(tNext - tHat)); // line 8: Euler step
      if (tNext === 0) return xNext.to({ dtype: x.dtype });
      const dPrime = toD(xNext, tNext, denoiseAt(D, xNext, tNext, opts.cond)); // line 10
      return xHat.add(dCur.add(dPrime).mul(0.5 * (tNext - tHat))).to({ dtype: x.dtype }); // line 11: trapezoidal rule
    }),
  );
}
