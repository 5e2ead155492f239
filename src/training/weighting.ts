/**
 * Loss weightings lambda(sigma). Every denoising objective is a weighted squared error
 * of the denoiser, and the target a network regresses only changes the weight:
 * with SNR = 1 / sigma^2 (alpha^2 / sigma_vp^2 in VP terms),
 *
 *   ||eps_hat - eps||^2 = SNR ||D - x0||^2,   ||v_hat - v||^2 = (SNR + 1) ||D - x0||^2.
 *
 * So a weighting is stated once by its effect in x0 space and divided by the target's
 * scale (`targetScale`) when the loss is measured in eps or v space. That is where
 * min-SNR-gamma's three forms come from (Hang et al. 2023, Sec. 3.4): the same
 * min(SNR, gamma) on ||D - x0||^2 is min(SNR, gamma) / SNR on the eps loss and
 * min(SNR, gamma) / (SNR + 1) on the v loss.
 *
 * @example
 *   const w = minSnrWeighting(5, 'eps');  // sigma [B] -> min(snr, 5) / snr
 *   const l = edmWeighting()(sigma);      // (sigma^2 + 0.25) / (0.5 sigma)^2
 */
import { onesLike } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

/** The space a loss measures its squared error in (what the network is trained to predict). */
export type Target = 'eps' | 'x0' | 'v';

/** sigma [B] -> loss weight [B], applied to the squared error in the loss's target space. */
export type Weighting = (sigma: Tensor) => Tensor;

/** SNR(sigma) = 1 / sigma^2. */
export function snr(sigma: Tensor): Tensor {
  return tidy(() => sigma.square().reciprocal());
}

/** ||target error||^2 / ||D - x0||^2: eps -> SNR, x0 -> 1, v -> SNR + 1. */
export function targetScale(target: Target, sigma: Tensor): Tensor {
  switch (target) {
    case 'eps':
      return snr(sigma);
    case 'x0':
      return onesLike(sigma);
    case 'v':
      return tidy(() => snr(sigma).add(1));
    default:
      throw new TypeError(`target must be 'eps', 'x0' or 'v', got ${JSON.stringify(target)}`);
  }
}

/** A weighting given by its x0-space form w(sigma), expressed for a loss measured in `target` space: w / targetScale. */
export function inTarget(x0Weight: Weighting, target: Target): Weighting {
  return (sigma) => tidy(() => x0Weight(sigma).div(targetScale(target, sigma)));
}

/** Every sample counts the same in its own target space (DDPM's L_simple with target 'eps'). */
export const uniformWeighting: Weighting = (sigma) => onesLike(sigma);

/** SNR weighting: SNR ||D - x0||^2, the epsilon loss (Ho et al. 2020, Eq. 14 seen in x0 space; Hang et al. 2023, Table 1). */
export function snrWeighting(target: Target): Weighting {
  return inTarget(snr, target);
}

/** Min-SNR-gamma (Hang et al. 2023, Sec. 3.4): min(SNR, gamma) in x0 space; eps: min(SNR, g)/SNR, x0: min(SNR, g), v: min(SNR, g)/(SNR + 1). */
export function minSnrWeighting(gamma: number, target: Target): Weighting {
  if (!(gamma > 0)) throw new RangeError(`minSnrWeighting: gamma must be positive, got ${gamma}`);
  return inTarget((sigma) => tidy(() => snr(sigma).clamp(null, gamma)), target);
}

/** Truncated SNR (Salimans & Ho 2022, Sec. 4): max(||x0 - x0_hat||^2, ||eps - eps_hat||^2) = max(SNR, 1) ||D - x0||^2, in x0 space. */
export function truncatedSnrWeighting(target: Target = 'x0'): Weighting {
  return inTarget((sigma) => tidy(() => snr(sigma).clamp(1, null)), target);
}

/** EDM's lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2 (Karras et al. 2022, Eq. 8 and Table 1), in x0 space. */
export function edmWeighting(sigmaData = 0.5, target: Target = 'x0'): Weighting {
  return inTarget(
    (sigma) =>
      tidy(() =>
        sigma
          .square()
          .add(sigmaData ** 2)
          .div(sigma.mul(sigmaData).square()),
      ),
    target,
  );
}

/**
 * EDM2's learned uncertainty weighting (Karras et al. 2023, Eq. 21): loss / e^u + u, with
 * u(sigma) the network's log-variance head; at the optimum e^u equals the expected loss,
 * so every noise level contributes about equally. loss and u are [B].
 */
export function uncertaintyWeighted(loss: Tensor, u: Tensor): Tensor {
  return tidy(() => loss.div(u.exp()).add(u));
}
