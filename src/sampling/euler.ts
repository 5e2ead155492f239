/**
 * Euler's method on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al.
 * 2022, Eq. 4 and Algorithm 1 without the correction; k-diffusion sample_euler), optionally with
 * EDM's churn (Algorithm 2, lines 4-6). First order; N evaluations for N steps.
 *
 * @example
 *   const x0 = sampleEuler(D, xT, karrasSigmas(50));
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, churn, ChurnOptions, denoiseAt, runSteps, SamplerOptions, toD } from './common';

export interface EulerOptions extends SamplerOptions, ChurnOptions {}

/** Euler steps down the grid: x <- x + (sigma_next - sigma_hat) d(x_hat, sigma_hat). */
export function sampleEuler(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: EulerOptions = {}): Tensor {
  const s = checkSigmas('sampleEuler', sigmas);
  const N = s.length - 1;
  return runSteps(xT, N, (x, i) =>
    tidy(() => {
      const { xHat, sigmaHat } = churn(x, s[i], N, opts, opts.generator);
      const denoised = denoiseAt(D, xHat, sigmaHat, opts.cond);
      opts.callback?.({ i, sigma: sigmaHat, sigmaNext: s[i + 1], x: xHat, denoised });
      return xHat.add(toD(xHat, sigmaHat, denoised).mul(s[i + 1] - sigmaHat)).to({ dtype: x.dtype });
    }),
  );
}
