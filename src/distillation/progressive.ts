/**
 * Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
 * Diffusion Models", Algorithm 2): a student learns to take in one deterministic DDIM step what the
 * teacher takes in two, so each round halves the steps; each round's student is the next round's
 * teacher. Written in the denoiser's sigma coordinates (x = x0 + sigma n, DESIGN.md), where the
 * DDIM step (eta = 0) is x' = D + sigma' (x - D) / sigma: the paper's VP form divided by alpha.
 *
 * @example
 *   const target = progressiveTarget(teacher, x, sigma, sigmaMid, sigmaNext);   // x~ of Algorithm 2
 *   const { loss } = progressiveLoss(student, teacher, x0, { sigmas: teacherGrid, generator });
 *   halvingRounds(64, 4);                                                       // [64, 32, 16, 8]: teacher steps per round
 */
import { tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser, expandSigma } from '../core/denoiser';
import { toD } from '../sampling/common';
import { LossResult } from '../training/losses';
import { truncatedSnrWeighting } from '../training/weighting';

/** DDIM (Song et al. 2021, Eq. 12, eta = 0) from sigma to sigmaNext per sample ([B] each): x' = x + (sigma' - sigma) (x - D) / sigma, the Euler step in sigma. */
export function ddimStep(D: Denoiser, x: Tensor, sigma: Tensor, sigmaNext: Tensor, cond?: Conditioning): Tensor {
  return tidy(() => x.add(toD(x, sigma, D(x, sigma, cond)).mul(expandSigma(sigmaNext.sub(sigma), x))).to({ dtype: x.dtype }));
}

/**
 * Salimans & Ho 2022, Algorithm 2: two DDIM steps of the teacher, sigma -> sigmaMid -> sigmaNext,
 * then the x0 that makes one student DDIM step sigma -> sigmaNext land on the same point:
 *   x~ = (x'' - (sigma''/sigma) x) / (1 - sigma''/sigma)
 * (the paper's (z'' - (s''/s) z) / (a'' - (s''/s) a) with z = a x, s = a sigma). Per sample ([B] sigmas).
 */
export function progressiveTarget(teacher: Denoiser, x: Tensor, sigma: Tensor, sigmaMid: Tensor, sigmaNext: Tensor, cond?: Conditioning): Tensor {
  return tidy(() => {
    const x1 = ddimStep(teacher, x, sigma, sigmaMid, cond);
    const x2 = ddimStep(teacher, x1, sigmaMid, sigmaNext, cond);
    const r = expandSigma(sigmaNext.div(sigma), x); // sigma'' / sigma, [B, 1, ...]
    return x2.sub(x.mul(r)).div(r.neg().add(1)).to({ dtype: x.dtype });
  });
}

/** What progressiveLoss takes. */
export interface ProgressiveLossOptions {
  /** The teacher's grid: N + 1 sigmas (float64 numbers), decreasing, ending in 0, N even. The student's is every other one. */
  sigmas: readonly number[];
  /** Draws the student step j ~ U{0 .. N/2 - 1} and the noise. */
  generator: Generator;
  /** For both networks (class labels, and w for a guidance-distilled pair). */
  cond?: Conditioning;
}

/**
 * Salimans & Ho 2022, Algorithm 2, one batch: a student step j uniform over the N/2 steps of its grid,
 * x = x0 + sigma_{2j} n, the target x~ from the teacher's steps 2j and 2j + 1 (no gradient), and the
 * squared error of the student's x0 weighted by truncated SNR, max(SNR, 1) (Sec. 4).
 */
export function progressiveLoss(student: Denoiser, teacher: Denoiser, x0: Tensor, { sigmas, generator, cond }: ProgressiveLossOptions): LossResult {
  const N = sigmas.length - 1;
  if (N < 2 || N % 2 || sigmas[N] !== 0) throw new RangeError(`progressiveLoss: sigmas must be an even number N >= 2 of teacher steps then 0, got ${sigmas.length} values ending in ${sigmas[N]}`);
  return tidy(() => {
    const B = x0.dim(0);
    const j = Array.from(generator.randint(0, N / 2, [B]).toFloat64Array()); // the student step of each sample
    const at = (k: number) =>
      tensor(
        j.map((i) => sigmas[2 * i + k]),
        { dtype: 'float64' },
      ); // [B]
    const [sigma, mid, next] = [at(0), at(1), at(2)];
    const x = x0.add(generator.randnLike(x0).mul(expandSigma(sigma, x0).to({ dtype: x0.dtype })));
    const target = noGrad(() => progressiveTarget(teacher, x, sigma, mid, next, cond));
    return truncatedSnrError(student(x, sigma, cond), target, sigma);
  });
}

/** Both methods' loss: max(SNR, 1) mean((pred - target)^2) per sample (Salimans & Ho 2022, Sec. 4, "truncated SNR"), and its batch mean. */
export function truncatedSnrError(pred: Tensor, target: Tensor, sigma: Tensor): LossResult {
  return tidy(() => {
    const perSample = pred
      .sub(target)
      .square()
      .mean(Array.from({ length: pred.ndim - 1 }, (_, i) => i + 1))
      .mul(truncatedSnrWeighting()(sigma).to({ dtype: pred.dtype })); // [B]
    return { loss: perSample.mean(), perSample, sigma };
  });
}

/** The teacher's step count of each round, halving from teacherSteps until the student has studentSteps: halvingRounds(64, 4) = [64, 32, 16, 8]. */
export function halvingRounds(teacherSteps: number, studentSteps: number): number[] {
  const ratio = teacherSteps / studentSteps;
  if (!(Number.isSafeInteger(teacherSteps) && Number.isSafeInteger(studentSteps) && studentSteps >= 1 && ratio >= 2 && Number.isInteger(Math.log2(ratio))))
    throw new RangeError(`halvingRounds: teacher steps / student steps must be a power of 2 of at least 2 (each round halves the steps), got ${teacherSteps} and ${studentSteps}`);
  const out: number[] = [];
  for (let n = teacherSteps; n > studentSteps; n /= 2) out.push(n);
  return out;
}
