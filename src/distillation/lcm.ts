/**
 * Latent consistency models (Luo et al. 2023, "Latent Consistency Models"; "LCM-LoRA"): consistency
 * distillation (consistency.ts, method cd) of a classifier-free-guided teacher, with three changes:
 *
 *   - the target's ODE step uses the teacher's guided estimate D^w = D_u + w (D_c - D_u) (our w,
 *     record.ts), w drawn per sample from a range and told to the student through the guidance
 *     embedding (guided.ts), or one w baked in (LCM-LoRA: the base network has no w embedding);
 *   - skipping-step: the ODE step is one DDIM step over k of the teacher's T timesteps at once,
 *     on the grid t = 0, k - 1, 2k - 1, ..., T - 1 (T / k + 1 points; Luo et al. use k = 20 of 1000);
 *   - the student keeps the teacher's own prediction (eps, x0 or v) with the boundary on top,
 *     f = c_skip x + (1 - c_skip) D (core/precond.ts, boundaryCoefficients), so it starts as the
 *     teacher's denoiser, which is what lets a low-rank adapter on the frozen teacher learn it.
 *
 * @example
 *   const grid = skippingGrid(schedule, 20);                        // [sigma_0, sigma_19, sigma_39, ..., sigma_999]
 *   const teacherW = guidedTeacher(teacher.denoiser, 10, null);     // reads w from cond.guidance
 *   const { loss } = lcmLoss(student, { target, teacher: teacherW }, x0, { grid, generator, cond: { classLabels, guidance: w } });
 */
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { classifierFreeGuidance } from '../guidance/cfg';
import { LossResult } from '../training/losses';
import { consistencyLoss } from './consistency';
import { guidedTarget } from './guided';
import { ConsistencyForm } from './record';

/**
 * The learning rates `diffuse distill lcm` defaults to: every weight of the student at 2e-5 (the run's
 * 3e-4 wrecks the teacher's weights in the first Adam steps: the loss jumped from 0.01 to 20 on the
 * shipped model), LoRA adapters at 1e-4 (Luo et al.'s LCM-LoRA rate; B starts at zero). The new w
 * embedding (it starts at zero) learns at embeddingMult times the rate, 3e-4 at the default: at 2e-5
 * it hardly moved in 1000 steps (w = 1 and w = 5 gave FD 24.0 and 23.8, docs/distillation.md).
 */
export const LCM_LR = { full: 2e-5, lora: 1e-4, embeddingMult: 15 } as const;

/** Luo et al. 2023, Sec. 4.3: the skipping interval k (20 of T = 1000 timesteps). */
export const LCM_DEFAULT_SKIP = 20;

/**
 * Luo et al. 2023, Sec. 4.3 (skipping-step): the ascending grid sigma(0), sigma(k - 1), sigma(2k - 1), ...,
 * sigma(T - 1) of a discrete schedule (its sigmas[t] by timestep), as in their released DDIMSolver
 * (timesteps (1..T/k) k - 1, the lowest step going to timestep 0). k must divide T.
 *
 * @example
 *   skippingGrid({ sigmas, T: 1000 }, 20).length;   // 51
 */
export function skippingGrid(schedule: { sigmas: Float64Array; T: number }, k: number): number[] {
  const { T, sigmas } = schedule;
  if (!(Number.isSafeInteger(k) && k >= 1 && T % k === 0 && k < T)) throw new RangeError(`skippingGrid: skip must be an integer in [1, ${T}) that divides the teacher's ${T} timesteps, got ${k}`);
  return [sigmas[0], ...Array.from({ length: T / k }, (_, i) => sigmas[(i + 1) * k - 1])];
}

/** The LCM student's boundary: f(x, sigmaMin) = x over a width sigma_data = sigmaMin (the teacher's first noise level), the teacher's prediction elsewhere. */
export function lcmBoundary(sigmaMin: number): ConsistencyForm {
  return { sigmaMin, form: 'denoiser', sigmaData: sigmaMin };
}

/**
 * The guided teacher of LCM: D_u + w (D_c - D_u) with w per sample from cond.guidance ([B]; one batched
 * pass, guided.ts's guidedTarget), or a fixed w (classifierFreeGuidance) when `w` is a number. The
 * teacher's own pass never sees cond.guidance.
 */
export function guidedTeacher(teacher: Denoiser, nullClass: number, w: number | null): Denoiser {
  if (w !== null) return classifierFreeGuidance(teacher, { scale: w, nullClass });
  return (x: Tensor, sigma: Tensor, cond?: Conditioning) => {
    if (!cond?.classLabels || !cond.guidance) throw new TypeError('guidedTeacher: cond needs classLabels and guidance (the per-sample w)');
    return tidy(() => guidedTarget(teacher, x, sigma, cond.classLabels!, cond.guidance!, nullClass));
  };
}

/** What lcmLoss takes. */
export interface LcmLossOptions {
  /** The skipping grid (skippingGrid), ascending. */
  grid: readonly number[];
  generator: Generator;
  /** Class labels and, for a w-embedding student, the guidance weights [B] (the teacher reads the same). */
  cond?: Conditioning;
  distance?: 'l2' | 'pseudo-huber';
  /** The networks' dropout generator (target and student draw the same masks). */
  dropout?: Generator;
}

/**
 * Luo et al. 2023, Algorithm 1 (LCD): n uniform on the skipping grid, x_{n+1} = x0 + sigma_{n+1} z, one DDIM
 * step of the guided teacher to sigma_n (k teacher timesteps), target f_{theta-}(x^_n, sigma_n, w), loss
 * d(f_theta(x_{n+1}, sigma_{n+1}, w), target): consistencyLoss with method cd and the ddim solver.
 */
export function lcmLoss(student: Denoiser, how: { target: Denoiser; teacher: Denoiser }, x0: Tensor, o: LcmLossOptions): LossResult {
  return consistencyLoss(student, { method: 'cd', target: how.target, teacher: how.teacher, solver: 'ddim' }, x0, {
    sigmas: o.grid,
    generator: o.generator,
    cond: o.cond,
    distance: o.distance,
    dropout: o.dropout,
  });
}
