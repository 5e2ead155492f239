/**
 * Distribution matching distillation: DMD (Yin et al. 2023, "One-step Diffusion with Distribution
 * Matching Distillation") and DMD2 (Yin et al. 2024, "Improved Distribution Matching Distillation
 * for Fast Image Synthesis"). A one-step generator G(z) is pushed toward the teacher's distribution
 * by the gradient of KL(p_fake || p_real) at noised samples, estimated with two denoisers: the
 * frozen teacher (the real score) and a fake score network trained online on G's samples.
 *
 * In the denoiser's coordinates (x_t = x0 + sigma_t n, DESIGN.md) the paper's score difference
 * s_real - s_fake = (D_real - D_fake) / sigma^2 times its weight sigma^2 CS / ||x0 - D_real||_1
 * (Eq. 8) is
 *
 *   grad = (D_fake(x_t) - D_real(x_t)) / mean|x0 - D_real(x_t)|      (per sample; Eq. 7-8)
 *
 * the gradient of the loss in x0 = G(z), applied by backpropagation through the stop-gradient form
 * 0.5 mean((x0 - sg(x0 - grad))^2), whose gradient in x0 is grad / numel (DMD2's code).
 *
 * @example
 *   const x0 = G(z.mul(sigmaMax), full([B], sigmaMax), cond);                           // one step
 *   const { loss } = distributionMatchingLoss(x0, realD, fakeD, { sampleSigma: dmdSigma(schedule), generator });
 *   loss.backward();                                                                    // x0.grad = grad / numel
 *   fakeLoss(x0.detach(), generator, cond).loss.backward();                             // the fake score's update (Eq. 6)
 */
import { full, tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser, expandSigma } from '../core/denoiser';
import { DiscreteVP } from '../core/schedules';
import { SigmaSampler } from '../training/sigma-sampling';

/** DMD's range of the discrete time t as fractions of T: t ~ U{floor(0.02 T) .. floor(0.98 T)} (Yin et al. 2023, Sec. 5 "T_min, T_max"; DMD2's min/max_step_percent). */
export const DMD_T_RANGE: readonly [number, number] = [0.02, 0.98];

/** DMD's regression weight lambda_reg (Yin et al. 2023, Sec. 4.3: 0.25). */
export const DMD_REG_WEIGHT = 0.25;

/** The noise level of the distribution matching gradient: t ~ U{floor(lo T) .. floor(hi T)}, sigma = sigma_t (Yin et al. 2023, Algorithm 1). */
export function dmdSigma(schedule: DiscreteVP, [lo, hi]: readonly [number, number] = DMD_T_RANGE): SigmaSampler {
  const [a, b] = [Math.floor(lo * schedule.T), Math.min(Math.floor(hi * schedule.T), schedule.T - 1)];
  if (!(a >= 0 && a <= b)) throw new RangeError(`dmdSigma: need 0 <= lo <= hi <= 1 giving a timestep range, got [${lo}, ${hi}]`);
  return (batch, generator, { dtype = 'float32', device = 'cpu' } = {}) =>
    tidy(() =>
      tensor(schedule.sigmas)
        .indexSelect(0, generator.randint(a, b + 1, [batch]))
        .to({ dtype, device }),
    );
}

/** Mean over every dim but the first, kept: [B, ...] -> [B, 1, ...]. */
const meanKeep = (t: Tensor) =>
  t.mean(
    Array.from({ length: t.ndim - 1 }, (_, i) => i + 1),
    true,
  );

/** Yin et al. 2023, Eq. 7-8: (D_fake(x_t) - D_real(x_t)) / mean|x0 - D_real(x_t)| per sample, without gradient. */
export function dmdGradient(real: Denoiser, fake: Denoiser, x0: Tensor, xt: Tensor, sigma: Tensor, cond?: Conditioning): Tensor {
  return noGrad(() =>
    tidy(() => {
      const dReal = real(xt, sigma, cond);
      const dFake = fake(xt, sigma, cond);
      return dFake
        .sub(dReal)
        .div(meanKeep(x0.detach().sub(dReal).abs()))
        .to({ dtype: x0.dtype });
    }),
  );
}

/** The stop-gradient form 0.5 mean((x0 - sg(x0 - grad))^2): its gradient in x0 is grad / numel (DMD2's code). */
export function dmdLoss(x0: Tensor, grad: Tensor): Tensor {
  return tidy(() => {
    const target = x0.detach().sub(grad);
    return x0.sub(target).square().mean().mul(0.5);
  });
}

/** What distributionMatchingLoss takes. */
export interface DistributionMatchingOptions {
  /** The noise level per sample (dmdSigma). */
  sampleSigma: SigmaSampler;
  /** Draws sigma and the noise n. */
  generator: Generator;
  /** For both scores (class labels: the generator's). */
  cond?: Conditioning;
}

/** Yin et al. 2023, Algorithm 1 (generator side): x_t = sg(x0) + sigma_t n, the gradient of Eq. 7-8 at x_t, and its stop-gradient loss. */
export function distributionMatchingLoss(x0: Tensor, real: Denoiser, fake: Denoiser, { sampleSigma, generator, cond }: DistributionMatchingOptions): { loss: Tensor; grad: Tensor; sigma: Tensor } {
  return tidy(() => {
    const sigma = sampleSigma(x0.dim(0), generator, { dtype: 'float64', device: x0.device }); // [B]
    const xt = x0.detach().add(generator.randnLike(x0).mul(expandSigma(sigma, x0).to({ dtype: x0.dtype })));
    const grad = dmdGradient(real, fake, x0, xt, sigma, cond);
    return { loss: dmdLoss(x0, grad), grad, sigma };
  });
}

/** DMD's regression loss (Yin et al. 2023, Eq. 9) with the L2 distance in place of LPIPS (no LPIPS network here): mean((G(z) - y)^2). */
export function regressionLoss(pred: Tensor, target: Tensor): Tensor {
  return tidy(() => pred.sub(target).square().mean());
}

/** The one-step generator: the student denoiser at sigma_max read at x_T = sigma_max z, i.e. one DDIM step on the trailing 1-step grid [sigma_max, 0]. */
export function generateOneStep(G: Denoiser, z: Tensor, sigmaMax: number, cond?: Conditioning): Tensor {
  return tidy(() => G(z.mul(sigmaMax), full([z.dim(0)], sigmaMax, { dtype: 'float64', device: z.device }), cond));
}
