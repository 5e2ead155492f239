/**
 * The one core type: a denoiser D(x, sigma) estimates the clean sample x0 from a
 * noisy x = x0 + sigma n at noise level sigma (per sample), as in EDM (Karras et
 * al. 2022, Sec. 2) and k-diffusion. Samplers, guidance and distillation all meet
 * here: they take denoisers and return denoisers or samples, and never branch on
 * what a network predicts (epsilon, x0, v) — preconditioning adapters hide that.
 *
 * @example
 *   const D: Denoiser = (x, sigma) => mixture.denoise(x, sigma); // exact for a Gaussian mixture
 *   const s = score(D, x, sigma);                                // Tweedie: (D - x) / sigma^2
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

/** What a denoiser is conditioned on. `classLabels` uses the null class (numClasses) for "no label". */
export interface Conditioning {
  /** [B] int64 class ids. */
  classLabels?: Tensor;
  /**
   * [B] float guidance weights w of a guidance-distilled student (Meng et al. 2023), which embeds w
   * instead of running two passes; the project's convention: D_u + w (D_c - D_u), w = 1 conditional.
   */
  guidance?: Tensor;
  /**
   * [B, C, h, w] the low-resolution image a super-resolution stage is conditioned on (Ho et al.
   * 2021, "Cascaded Diffusion Models"), already noise-augmented at `augLevel`; the network upsamples it.
   */
  lowRes?: Tensor;
  /** [B] the augmentation level s in [0, 1] of `lowRes` (CDM's noise-conditioning augmentation, given to the network as a second noise level). */
  augLevel?: Tensor;
  /**
   * [B, 4] SDXL's micro-conditioning (Podell et al. 2023, Sec. 2.2): the original image's height and
   * width and the crop's top and left offset, in pixels; (S, S, 0, 0) asks for an uncropped, full-size image.
   */
  micro?: Tensor;
}

/** x [B, ...], sigma [B] -> estimate of x0 [B, ...]. */
export type Denoiser = (x: Tensor, sigma: Tensor, cond?: Conditioning) => Tensor;

/** sigma [B] reshaped to broadcast against x [B, ...]: [B, 1, ..., 1]. */
export function expandSigma(sigma: Tensor, x: Tensor): Tensor {
  return sigma.reshape([sigma.size, ...new Array<number>(x.ndim - 1).fill(1)]);
}

/** The score grad_x log p_sigma(x) by Tweedie's formula: (D(x, sigma) - x) / sigma^2 (EDM Eq. 3). */
export function score(D: Denoiser, x: Tensor, sigma: Tensor, cond?: Conditioning): Tensor {
  return tidy(() => D(x, sigma, cond).sub(x).div(expandSigma(sigma, x).square()));
}
