/**
 * Linear multistep (Adams-Bashforth on a non-uniform grid; k-diffusion sample_lms, after Karras et
 * al. 2022's reference to it): x' = x + sum_j c_j d_{i-j}, with c_j the integral over [sigma_i, sigma_{i+1}]
 * of the Lagrange basis polynomial through the last `order` sigmas (computed exactly here, where
 * k-diffusion calls scipy's quad). The first steps ramp up from order 1. N evaluations.
 *
 * @example
 *   const x0 = sampleLMS(D, xT, karrasSigmas(30), { order: 4 });
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, denoiseAt, runSteps, SamplerOptions, toD } from './common';

export interface LMSOptions extends SamplerOptions {
  /** Number of past derivatives used (default 4). */
  order?: number;
}

/** k-diffusion linear_multistep_coeff: integral from t[i] to t[i+1] of prod_{k != j, k < order} (tau - t[i-k]) / (t[i-j] - t[i-k]). */
export function lmsCoefficient(order: number, t: readonly number[], i: number, j: number): number {
  let poly = [1]; // coefficients in tau, lowest degree first
  for (let k = 0; k < order; k++) {
    if (k === j) continue;
    const denom = t[i - j] - t[i - k];
    const next = new Array<number>(poly.length + 1).fill(0);
    poly.forEach((c, p) => {
      next[p + 1] += c / denom; // tau * c
      next[p] -= (c * t[i - k]) / denom;
    });
    poly = next;
  }
  const F = (tau: number) => poly.reduce((acc, c, p) => acc + (c * tau ** (p + 1)) / (p + 1), 0);
  return F(t[i + 1]) - F(t[i]);
}

/** The linear multistep method down the grid. */
export function sampleLMS(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: LMSOptions = {}): Tensor {
  const s = checkSigmas('sampleLMS', sigmas);
  const { order = 4 } = opts;
  if (!Number.isSafeInteger(order) || order < 1) throw new RangeError(`sampleLMS: order must be a positive integer, got ${order}`);
  const ds: Tensor[] = []; // the last `order` derivatives, oldest first
  try {
    return runSteps(xT, s.length - 1, (x, i) => {
      const [next, d]: Tensor[] = tidy(() => {
        const denoised = denoiseAt(D, x, s[i], opts.cond);
        opts.callback?.({ i, sigma: s[i], sigmaNext: s[i + 1], x, denoised });
        const d = toD(x, s[i], denoised);
        const recent = [...ds, d].slice(-order).reverse(); // d_i, d_{i-1}, ...
        const step = recent.map((dj, j) => dj.mul(lmsCoefficient(recent.length, s, i, j))).reduce((a, b) => a.add(b));
        return [x.add(step).to({ dtype: x.dtype }), d];
      });
      ds.push(d);
      if (ds.length > order) ds.shift()!.dispose();
      return next;
    });
  } finally {
    ds.forEach((d) => d.dispose());
  }
}
