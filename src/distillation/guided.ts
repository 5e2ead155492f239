/**
 * Guided distillation (Meng et al. 2023, "On Distillation of Guided Diffusion Models", Sec. 4.1):
 * classifier-free guidance costs two network passes per step; stage 1 trains one student that
 * takes the guidance weight w as an input (an embedding of w added to the noise embedding) to
 * match the teacher's guided output for every w of a range; stage 2 distils that student
 * progressively (progressive.ts), teacher and student both told the same w.
 *
 * Scales follow Diffuse's convention, D_u + w (D_c - D_u) with w = 1 the conditional model
 * (record.ts). Meng et al. write (1 + w) D_c - w D_u; their w in [0, 4] is our [1, 5].
 *
 * @example
 *   const w = sampleGuidance(B, [1, 5], generator);              // [B] uniform weights
 *   const target = guidedTarget(teacher, x, sigma, labels, w, 10);  // D_u + w (D_c - D_u), per sample
 *   const D3 = withGuidance(student, 3);                          // a plain denoiser at w = 3 (one pass)
 */
import { full } from '../engine/create';
import { Generator } from '../engine/random';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser, expandSigma } from '../core/denoiser';
import { conditionalPair } from '../guidance/cfg';
import { guide } from '../guidance/common';
import { LossResult } from '../training/losses';
import { SigmaSampler } from '../training/sigma-sampling';
import { truncatedSnrError } from './progressive';

/** w ~ U[lo, hi] per sample ([B], float32): Meng et al. 2023 sample the guidance weight uniformly over the range. */
export function sampleGuidance(batch: number, [lo, hi]: readonly [number, number], generator: Generator): Tensor {
  return tidy(() =>
    generator
      .rand([batch])
      .mul(hi - lo)
      .add(lo),
  );
}

/** The teacher's classifier-free guided estimate D_u + w (D_c - D_u) (Ho & Salimans 2022, Eq. 6 with our w) with a weight per sample, w [B]; one batched pass. */
export function guidedTarget(teacher: Denoiser, x: Tensor, sigma: Tensor, classLabels: Tensor, w: Tensor, nullClass: number): Tensor {
  return tidy(() => {
    const pair = conditionalPair(teacher, x, sigma, { classLabels }, nullClass, true);
    return guide(pair.uncond, pair.cond, expandSigma(w, x).to({ dtype: x.dtype }));
  });
}

/** A guidance-embedding student as a plain Denoiser at a fixed w: every call passes cond.guidance = w (one network evaluation per step). */
export function withGuidance(D: Denoiser, w: number): Denoiser {
  return (x, sigma, cond) => tidy(() => D(x, sigma, { ...cond, guidance: full([x.dim(0)], w, { device: x.device }) }));
}

/** What guidedLoss takes. */
export interface GuidedLossOptions {
  /** The teacher's training sigma distribution (its discrete timesteps). */
  sampleSigma: SigmaSampler;
  generator: Generator;
  /** Real class ids [B] (guidance steers toward them). */
  classLabels: Tensor;
  /** The guidance weights [B]. */
  w: Tensor;
  nullClass: number;
  /** Clamp the teacher's estimate to [lo, hi] (images: [-1, 1], as diffuse sample clips), or null. */
  clip: [number, number] | null;
}

/**
 * Meng et al. 2023, stage 1 (Eq. 6 with our w): sigma from the teacher's training distribution,
 * x = x0 + sigma n, and max(SNR, 1) ||D_student(x, sigma, c, w) - D_teacher^w(x, sigma, c)||^2.
 */
export function guidedLoss(student: Denoiser, teacher: Denoiser, x0: Tensor, o: GuidedLossOptions): LossResult {
  return tidy(() => {
    const sigma = o.sampleSigma(x0.dim(0), o.generator, { dtype: 'float64' }); // [B]
    const x = x0.add(o.generator.randnLike(x0).mul(expandSigma(sigma, x0).to({ dtype: x0.dtype })));
    const target = noGrad(() => {
      const t = guidedTarget(teacher, x, sigma, o.classLabels, o.w, o.nullClass);
      return o.clip ? t.clamp(o.clip[0], o.clip[1]) : t;
    });
    return truncatedSnrError(student(x, sigma, { classLabels: o.classLabels, guidance: o.w }), target, sigma);
  });
}
