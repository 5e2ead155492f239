/**
 * Multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1): a
 * consistency model f maps any point of an ODE trajectory to its start, so one evaluation at
 * sigma_max is a sample; more steps alternate re-noising to a chosen tau and mapping back:
 *   x <- f(x_T, T);  for tau in tau_1 > ... > tau_{N-1}:  x_tau = x + sqrt(tau^2 - sigma_min^2) z,  x <- f(x_tau, tau).
 * The grid [T, tau_1, ..., tau_{N-1}, 0] holds the chosen points (the 0 marks the end); N evaluations.
 * It is not an ODE solver: with a plain denoiser instead of a consistency function it does not converge
 * to the data distribution as N grows (each step is D at one noise level, then fresh noise).
 *
 * @example
 *   const x0 = sampleConsistency(f, xT, tensor([80, 0.8, 0], { dtype: 'float64' }), { generator, sigmaMin: 0.002 }); // 2 steps
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, denoiseAt, requireGenerator, runSteps, SamplerOptions } from './common';
import { randnLike } from './noise';

export interface ConsistencyOptions extends SamplerOptions {
  /** The consistency model's sigma_min (epsilon): re-noising to tau adds noise of std sqrt(tau^2 - sigma_min^2) (default 0). */
  sigmaMin?: number;
}

/** Song et al. 2023, Algorithm 1 down the grid's points. */
export function sampleConsistency(f: Denoiser, xT: Tensor, sigmas: Tensor, opts: ConsistencyOptions = {}): Tensor {
  const s = checkSigmas('sampleConsistency', sigmas);
  const { sigmaMin = 0 } = opts;
  const N = s.length - 1;
  if (!(sigmaMin >= 0 && (N === 1 || s[N - 1] > sigmaMin)))
    throw new RangeError(`sampleConsistency: sigmaMin must be >= 0 and below every point re-noised to (the last is ${s[N - 1]}), got ${sigmaMin}`);
  const generator = N > 1 ? requireGenerator('sampleConsistency', opts) : undefined;
  return runSteps(xT, N, (x, i) =>
    tidy(() => {
      const denoised = denoiseAt(f, x, s[i], opts.cond); // x <- f(x_tau, tau)
      opts.callback?.({ i, sigma: s[i], sigmaNext: s[i + 1], x, denoised });
      if (s[i + 1] === 0) return denoised.to({ dtype: x.dtype });
      return denoised.add(randnLike(generator!, x).mul(Math.sqrt(s[i + 1] ** 2 - sigmaMin ** 2))).to({ dtype: x.dtype }); // x_tau = x + sqrt(tau^2 - eps^2) z
    }),
  );
}
