/**
 * DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2; k-diffusion sample_dpmpp_2m):
 * a multistep exponential integrator for the data-prediction ODE in t = -ln sigma, h = t' - t,
 *   x' = (sigma' / sigma) x - (e^-h - 1) D_d,   D_d = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},   r = h_last / h.
 * The first step (no D_{i-1} yet) and the last (sigma' = 0, where x' = D) are first order (D_d = D_i),
 * which is DDIM / Euler in sigma. Second order; N evaluations.
 *
 * @example
 *   const x0 = sampleDPMpp2M(D, xT, karrasSigmas(20));
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { advance, checkSigmas, denoiseAt, SamplerOptions } from './common';

/** DPM-Solver++(2M) down the grid. */
export function sampleDPMpp2M(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: SamplerOptions = {}): Tensor {
  const s = checkSigmas('sampleDPMpp2M', sigmas);
  const t = (sigma: number) => -Math.log(sigma);
  let x = xT;
  let old: Tensor | null = null; // D_{i-1}
  let hLast = 0;
  for (let i = 0; i + 1 < s.length; i++) {
    const [next, denoised]: Tensor[] = tidy(() => {
      const denoised = denoiseAt(D, x, s[i], opts.cond);
      opts.callback?.({ i, sigma: s[i], sigmaNext: s[i + 1], x, denoised });
      if (s[i + 1] === 0) return [denoised.to({ dtype: x.dtype }), denoised]; // last step: first order, x' = D
      const h = t(s[i + 1]) - t(s[i]);
      let Dd = denoised;
      if (old) {
        const r = hLast / h;
        Dd = denoised.mul(1 + 1 / (2 * r)).sub(old.mul(1 / (2 * r)));
      }
      hLast = h;
      return [x.mul(s[i + 1] / s[i]).sub(Dd.mul(Math.expm1(-h))).to({ dtype: x.dtype }), denoised];
    });
    old?.dispose();
    old = denoised;
    x = advance(x, xT, next);
  }
  old?.dispose();
  return x;
}
