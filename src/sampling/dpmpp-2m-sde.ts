/**
 * DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++", Sec. 5 / App. for SDE solvers; k-diffusion
 * sample_dpmpp_2m_sde, midpoint variant): the 2M step of the data-prediction SDE in t = -ln sigma,
 *   x' = (sigma'/sigma) e^(-eta h) x + (1 - e^(-h - eta h)) D_i + (1/2)(1 - e^(-h - eta h)) (D_i - D_{i-1}) / r
 *        + sigma' sqrt(1 - e^(-2 eta h)) sNoise z.
 * Stochastic at eta > 0 (default 1); at eta = 0 it is DPM-Solver++(2M). N evaluations.
 *
 * @example
 *   const x0 = sampleDPMpp2MSDE(D, xT, karrasSigmas(30), { generator: new Generator(0) });
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { advance, checkSigmas, denoiseAt, requireGenerator, SamplerOptions } from './common';
import { randnLike } from './noise';

export interface DPMppSDEOptions extends SamplerOptions {
  /** SDE strength (default 1; 0 is the ODE solver). */
  eta?: number;
  /** Scale of the fresh noise (default 1). */
  sNoise?: number;
}

/** DPM-Solver++(2M) SDE down the grid. */
export function sampleDPMpp2MSDE(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: DPMppSDEOptions = {}): Tensor {
  const s = checkSigmas('sampleDPMpp2MSDE', sigmas);
  const { eta = 1, sNoise = 1 } = opts;
  const generator = eta > 0 ? requireGenerator('sampleDPMpp2MSDE', opts) : undefined;
  let x = xT;
  let old: Tensor | null = null; // D_{i-1}
  let hLast = 0;
  for (let i = 0; i + 1 < s.length; i++) {
    const [next, denoised]: Tensor[] = tidy(() => {
      const denoised = denoiseAt(D, x, s[i], opts.cond);
      opts.callback?.({ i, sigma: s[i], sigmaNext: s[i + 1], x, denoised });
      if (s[i + 1] === 0) return [denoised.to({ dtype: x.dtype }), denoised];
      const h = Math.log(s[i] / s[i + 1]);
      const etaH = eta * h;
      const a = -Math.expm1(-h - etaH); // 1 - e^(-h - eta h)
      let xn = x.mul((s[i + 1] / s[i]) * Math.exp(-etaH)).add(denoised.mul(a));
      if (old) xn = xn.add(denoised.sub(old).mul((0.5 * a * h) / hLast)); // 1/r = h / h_last
      if (eta > 0) xn = xn.add(randnLike(generator!, x).mul(s[i + 1] * Math.sqrt(-Math.expm1(-2 * etaH)) * sNoise));
      hLast = h;
      return [xn.to({ dtype: x.dtype }), denoised];
    });
    old?.dispose();
    old = denoised;
    x = advance(x, xT, next);
  }
  old?.dispose();
  return x;
}
