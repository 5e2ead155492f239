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
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, SamplerOptions } from './common';
import { multistep } from './multistep';

/** DPM-Solver++(2M) down the grid. */
export function sampleDPMpp2M(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: SamplerOptions = {}): Tensor {
  const s = checkSigmas('sampleDPMpp2M', sigmas);
  return multistep(D, xT, s, opts, 1, ({ x, denoised, sigma, sigmaNext, h, prev: [old], prevH: [hLast] }) => {
    let Dd = denoised;
    if (old) {
      const r = hLast / h;
      Dd = denoised.mul(1 + 1 / (2 * r)).sub(old.mul(1 / (2 * r)));
    }
    return x.mul(sigmaNext / sigma).sub(Dd.mul(Math.expm1(-h)));
  });
}
