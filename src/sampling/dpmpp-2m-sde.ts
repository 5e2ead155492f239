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
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, requireGenerator, SamplerOptions } from './common';
import { multistep } from './multistep';
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
  return multistep(D, xT, s, opts, 1, ({ x, denoised, sigma, sigmaNext, h, prev: [old], prevH: [hLast] }) => {
    const etaH = eta * h;
    const a = -Math.expm1(-h - etaH); // 1 - e^(-h - eta h)
    let xn = x.mul((sigmaNext / sigma) * Math.exp(-etaH)).add(denoised.mul(a));
    if (old) xn = xn.add(denoised.sub(old).mul((0.5 * a * h) / hLast)); // 1/r = h / h_last
    if (generator) xn = xn.add(randnLike(generator, x).mul(sigmaNext * Math.sqrt(-Math.expm1(-2 * etaH)) * sNoise));
    return xn;
  });
}
