/**
 * The loop the DPM-Solver++ multistep samplers (2M, 2M SDE, 3M SDE) share, written once:
 * evaluate D at sigma_i, report the step, take the last step to sigma = 0 as x' = D (first
 * order: every solver's update is undefined there), and keep the last `history` denoised
 * outputs D_{i-1}, D_{i-2}, ... with their steps h in t = -ln sigma. A solver is then just
 * its update formula.
 *
 * @example
 *   // DDIM in data-prediction form: x' = (sigma'/sigma) x - (e^-h - 1) D_i
 *   multistep('ddim', D, xT, s, opts, 0, ({ x, denoised, sigma, sigmaNext, h }) => x.mul(sigmaNext / sigma).sub(denoised.mul(Math.expm1(-h))));
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { denoiseAt, runSteps, SamplerOptions } from './common';

/** What an update sees at step i, sigma -> sigmaNext > 0. */
export interface MultistepState {
  i: number;
  x: Tensor;
  /** D_i = D(x, sigma). */
  denoised: Tensor;
  sigma: number;
  sigmaNext: number;
  /** h = ln(sigma / sigmaNext) > 0, the step in t = -ln sigma. */
  h: number;
  /** Earlier outputs, newest first: D_{i-1}, D_{i-2}, ... (fewer at the start). */
  prev: readonly Tensor[];
  /** Their steps, newest first: h_{i-1}, h_{i-2}, ... */
  prevH: readonly number[];
}

/** Runs a multistep solver down the grid s (checked by the caller); update returns x' for each step but the last. */
export function multistep(D: Denoiser, xT: Tensor, s: readonly number[], opts: SamplerOptions, history: number, update: (st: MultistepState) => Tensor): Tensor {
  const prev: Tensor[] = [];
  const prevH: number[] = [];
  try {
    return runSteps(xT, s.length - 1, (x, i) => {
      const [sigma, sigmaNext] = [s[i], s[i + 1]];
      const h = Math.log(sigma / sigmaNext); // Infinity at the last step
      const [next, denoised]: Tensor[] = tidy(() => {
        const denoised = denoiseAt(D, x, sigma, opts.cond);
        opts.callback?.({ i, sigma, sigmaNext, x, denoised });
        if (sigmaNext === 0) return [denoised.to({ dtype: x.dtype }), denoised]; // last step: x' = D
        return [update({ i, x, denoised, sigma, sigmaNext, h, prev, prevH }).to({ dtype: x.dtype }), denoised];
      });
      prev.unshift(denoised);
      prevH.unshift(h);
      if (prev.length > history) prev.pop()!.dispose();
      prevH.length = prev.length;
      return next;
    });
  } finally {
    for (const t of prev) t.dispose();
  }
}
