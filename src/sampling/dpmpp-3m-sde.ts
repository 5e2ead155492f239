/**
 * DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde, after Lu et al. 2022, "DPM-Solver++"):
 * a third-order multistep exponential integrator of the data-prediction SDE in t = -ln sigma with
 * h_eta = (1 + eta) h, phi_2 = (e^-h_eta - 1)/h_eta + 1, phi_3 = phi_2 / h_eta - 1/2,
 *   x' = e^-h_eta x + (1 - e^-h_eta) D_i + phi_2 d1 - phi_3 d2 + sigma' sqrt(1 - e^(-2 eta h)) sNoise z,
 * with d1, d2 the divided differences of D_i, D_{i-1}, D_{i-2} (first and second order while they
 * are missing). Stochastic at eta > 0 (default 1); eta = 0 is the 3M ODE solver. N evaluations.
 *
 * @example
 *   const x0 = sampleDPMpp3MSDE(D, xT, karrasSigmas(30), { generator: new Generator(0) });
 */
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { checkSigmas, requireGenerator } from './common';
import { multistep } from './multistep';
import { DPMppSDEOptions } from './dpmpp-2m-sde';
import { randnLike } from './noise';

/** DPM-Solver++(3M) SDE down the grid. */
export function sampleDPMpp3MSDE(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: DPMppSDEOptions = {}): Tensor {
  const s = checkSigmas('sampleDPMpp3MSDE', sigmas);
  const { eta = 1, sNoise = 1 } = opts;
  const generator = eta > 0 ? requireGenerator('sampleDPMpp3MSDE', opts) : undefined;
  return multistep(D, xT, s, opts, 2, ({ x, denoised, h, sigmaNext, prev: [D1, D2], prevH: [h1, h2] }) => {
    const hEta = h * (eta + 1);
    let xn = x.mul(Math.exp(-hEta)).add(denoised.mul(-Math.expm1(-hEta)));
    const phi2 = Math.expm1(-hEta) / hEta + 1;
    if (D1 && D2) {
      const [r0, r1] = [h1 / h, h2 / h];
      const d10 = denoised.sub(D1).div(r0);
      const d11 = D1.sub(D2).div(r1);
      const d1 = d10.add(d10.sub(d11).mul(r0 / (r0 + r1)));
      const d2 = d10.sub(d11).div(r0 + r1);
      const phi3 = phi2 / hEta - 0.5;
      xn = xn.add(d1.mul(phi2)).sub(d2.mul(phi3));
    } else if (D1) {
      xn = xn.add(denoised.sub(D1).mul(phi2 / (h1 / h)));
    }
    if (generator) xn = xn.add(randnLike(generator, x).mul(sigmaNext * Math.sqrt(-Math.expm1(-2 * h * eta)) * sNoise));
    return xn;
  });
}
