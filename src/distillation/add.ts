/**
 * Adversarial diffusion distillation (Sauer et al. 2023, "Adversarial Diffusion Distillation",
 * ADD): a student x_theta(x_s, s), started from the teacher, that samples in 1 to 4 steps, trained
 * with two losses (Eq. 1):
 *
 *   L = L_adv^G(x^_theta) + lambda L_distill(x^_theta),  lambda = 2.5
 *
 *   x^_theta = x_theta(x_s, s),  x_s = x0 + sigma_s eps with s on the student's grid, the first
 *              point pure noise (x_s = sigma_max eps: zero terminal SNR, see addStudentInput)
 *   L_adv^G  = - E sum_k D_k(x^_theta, c)                          (hinge, generator side, Eq. 3)
 *   L_distill = E c(t) d(x^_theta, sg(x^_psi(x^_theta,t, t)))       (Eq. 4)
 *              x^_theta,t = x^_theta + sigma_t eps' the RE-NOISED student output (not noised real data:
 *              that is a bug of public re-implementations), x^_psi the teacher's x0 estimate,
 *              c(t) = alpha-bar_t = 1 / (1 + sigma_t^2) (the paper's exponential weighting), d the
 *              per-element mean squared distance.
 *
 * The discriminator D_k = head_k(F_k(x)) is a FROZEN feature network F (the teacher U-Net's own
 * encoder and middle, UNet.features, on the image at the teacher's smallest sigma; the paper's
 * DINOv2 is not available, and the FD evaluator is never used) with small trainable heads, class-
 * conditional by projection (Miyato & Koyama 2018), trained with the hinge loss and an R1 penalty
 * on its inputs (Eq. 2; Mescheder et al. 2018) computed with double backward (createGraph):
 *
 *   L_D = E [ sum_k max(0, 1 - D_k(x0)) + max(0, 1 + D_k(x^_theta)) ] + gamma/2 E ||grad_x0 sum_k D_k(x0)||^2
 *
 * @example
 *   const heads = new AddHeads([16, 32, 32], { numClasses: 10, generator });
 *   const disc: AddDiscriminator = { features: teacherFeatures(teacherNet, schedule), heads };
 *   const g = addGeneratorLoss(student, teacher, disc, x0, { studentSigmas, teacherSigmas, generator });
 *   const d = addDiscriminatorLoss(student, disc, x0, { studentSigmas, generator, r1Gamma: 1e-4 });
 */
import { grad } from '../engine/autograd';
import { cat, tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser, expandSigma } from '../core/denoiser';
import { DiscreteVP, sigmaToT } from '../core/schedules';
import { UNet } from '../models/unet';
import { Conv2d, Embedding, InitOptions, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { meanSquared } from './consistency';

/** The paper's distillation weight lambda (Sauer et al. 2023, Sec. 4). */
export const ADD_LAMBDA = 2.5;

/** Hinge loss, discriminator side (Lim & Ye 2017; ADD Eq. 2): E max(0, 1 - D(real)) + E max(0, 1 + D(fake)), summed over heads ([B, K] logits). */
export function hingeDiscriminatorLoss(realLogits: Tensor, fakeLogits: Tensor): Tensor {
  return tidy(() =>
    realLogits
      .neg()
      .add(1)
      .relu()
      .mean([0])
      .sum()
      .add(fakeLogits.add(1).relu().mean([0]).sum()),
  );
}

/** Hinge loss, generator side (ADD Eq. 3): -E D(fake), summed over heads ([B, K] logits). */
export function hingeGeneratorLoss(fakeLogits: Tensor): Tensor {
  return tidy(() => fakeLogits.mean([0]).sum().neg());
}

/**
 * The R1 penalty (Mescheder et al. 2018, Eq. 9; ADD Eq. 2): gamma/2 E_x ||grad_x sum_k D_k(x)||^2 on
 * the real inputs x [B, ...], a leaf that requires grad, from which realLogits [B, K] were computed
 * (so the hinge loss and the penalty share one forward pass). The gradient is taken with
 * createGraph: the penalty's own gradient in the discriminator's parameters is exact double
 * backward, not a finite-difference approximation.
 *
 * @example
 *   const xr = x0.detach().requiresGrad_();
 *   const r1 = r1Penalty(discriminate(disc, xr), xr, 1e-4); // scalar, differentiable in the heads
 */
export function r1Penalty(realLogits: Tensor, x: Tensor, gamma: number): Tensor {
  if (!(Number.isFinite(gamma) && gamma >= 0)) throw new RangeError(`r1Penalty: gamma must be a number >= 0, got ${gamma}`);
  if (!x.requiresGrad) throw new TypeError('r1Penalty: x must require grad (x0.detach().requiresGrad_()) and be the input realLogits were computed from');
  return tidy(() => {
    const [g] = grad(realLogits.sum(), x, { createGraph: true, retainGraph: true }); // [B, ...]
    const sq = g!.square().sum(Array.from({ length: x.ndim - 1 }, (_, i) => i + 1)); // ||grad||^2 per sample, [B]
    return sq.mean().mul(gamma / 2);
  });
}

/** A frozen feature network: an image [B, C, H, W] -> feature maps [B, C_k, H_k, W_k], one per head. */
export type FeatureNet = (x: Tensor) => Tensor[];

/**
 * The teacher U-Net's encoder and middle features (UNet.features) of a clean image x in [-1, 1],
 * read at the teacher's smallest noise level sigma_0 (input c_in x, c_noise its timestep) and the
 * null class: the discriminator's frozen feature network. The network's parameters are frozen
 * (requiresGrad off) so gradients reach the input only; the caller owns the network.
 *
 * @example
 *   const F = teacherFeatures(teacher.net as UNet, schedule);  // F(x0): [B, 16, 32, 32], [B, 32, 16, 16], [B, 32, 8, 8]
 */
export function teacherFeatures(net: UNet, schedule: DiscreteVP, sigma = schedule.sigmas[0]): FeatureNet {
  freeze(net);
  const cIn = 1 / Math.sqrt(1 + sigma * sigma); // VP c_in (EDM Table 1)
  const t = tidy(() => sigmaToT(schedule, tensor([sigma], { dtype: 'float64' })).item());
  return (x) =>
    tidy(() => {
      const cNoise = tensor(new Array<number>(x.dim(0)).fill(t), { dtype: x.dtype }); // [B]
      return net.features(x.mul(cIn), cNoise);
    });
}

/** Turns off gradients of every parameter of `m` (a frozen network: it never changes, gradients still flow through it). */
export function freeze(m: Module): void {
  for (const p of m.parameters()) p.requiresGrad_(false);
}

/**
 * The discriminator's trainable heads, one per feature map: conv 3x3 -> SiLU -> global average
 * pool -> phi [B, H], then the logit w^T phi + b + <embed(c), phi> (projection discriminator,
 * Miyato & Koyama 2018, for a class-conditional teacher; the null class has its own embedding).
 *
 * @example
 *   const heads = new AddHeads([16, 32, 32], { numClasses: 10 });
 *   heads.forward(features, labels); // [B, 3] logits
 */
export class AddHeads extends Module {
  readonly convs: Conv2d[];
  readonly outs: Linear[];
  readonly embeds: Embedding[] | null;

  constructor(channels: readonly number[], { hidden = 64, numClasses = null, generator }: InitOptions & { hidden?: number; numClasses?: number | null } = {}) {
    super();
    if (!channels.length) throw new RangeError('AddHeads: channels must name at least one feature map');
    this.convs = channels.map((c, k) => this.child(`conv${k}`, new Conv2d(c, hidden, 3, { padding: 1, generator })));
    this.outs = channels.map((_, k) => this.child(`out${k}`, new Linear(hidden, 1, { generator })));
    this.embeds = numClasses === null ? null : channels.map((_, k) => this.child(`embed${k}`, new Embedding(numClasses + 1, hidden, { generator })));
  }

  /** Features (one per head) and class labels [B] (null class allowed; omit for an unconditional teacher) -> logits [B, K]. */
  forward(features: readonly Tensor[], labels?: Tensor): Tensor {
    if (features.length !== this.convs.length) throw new RangeError(`AddHeads: expected ${this.convs.length} feature maps, got ${features.length}`);
    return tidy(() => {
      const logits = features.map((f, k) => {
        const phi = this.convs[k].forward(f).silu().mean([2, 3]); // [B, H]
        let y = this.outs[k].forward(phi); // [B, 1]
        if (this.embeds && labels) y = y.add(this.embeds[k].forward(labels).mul(phi).sum(1, true)); // projection <embed(c), phi>
        return y;
      });
      return cat(logits, 1); // [B, K]
    });
  }
}

/** The frozen feature network and the trainable heads. */
export interface AddDiscriminator {
  features: FeatureNet;
  heads: AddHeads;
}

/** D_k(x, c) for every head: [B, K] logits. */
export function discriminate(d: AddDiscriminator, x: Tensor, labels?: Tensor): Tensor {
  return tidy(() => d.heads.forward(d.features(x), labels));
}

/** What the ADD losses take. */
export interface AddLossOptions {
  /** The student's grid, descending; its first point (the teacher's sigma_max) is treated as pure noise. One point is drawn per sample. */
  studentSigmas: readonly number[];
  /** The teacher's sigmas (all its timesteps); t of the re-noising is drawn uniformly from them. */
  teacherSigmas: readonly number[];
  /** Draws s, t and the noise. */
  generator: Generator;
  cond?: Conditioning;
  /** The distillation weight (default ADD_LAMBDA = 2.5). */
  lambda?: number;
}

/**
 * The student's input x_s per sample (ADD Sec. 3.1): s uniform on the student's grid, x_s = x0 +
 * sigma_s eps, except at the grid's first point, where x_s = sigma_max eps: no data term, as the
 * sampler starts (zero terminal SNR: our discrete schedule ends at SNR 4e-5, not 0, and the first
 * point is treated as pure noise in training and in sampling alike). sigma: [B] float64.
 */
export function addStudentInput(x0: Tensor, studentSigmas: readonly number[], generator: Generator): { x: Tensor; sigma: Tensor } {
  if (!studentSigmas.length || studentSigmas.some((s, i) => !(s > 0) || (i > 0 && !(s < studentSigmas[i - 1]))))
    throw new RangeError(`addStudentInput: studentSigmas must be descending and > 0, got ${JSON.stringify(studentSigmas)}`);
  return tidy(() => {
    const idx = Array.from(generator.randint(0, studentSigmas.length, [x0.dim(0)]).toFloat64Array());
    const sigma = tensor(
      idx.map((i) => studentSigmas[i]),
      { dtype: 'float64' },
    ); // [B]
    const signal = tensor(
      idx.map((i) => (i === 0 ? 0 : 1)),
      { dtype: x0.dtype },
    ); // [B]: 0 at sigma_max
    const eps = generator.randnLike(x0);
    return { x: x0.mul(expandSigma(signal, x0)).add(eps.mul(expandSigma(sigma, x0).to({ dtype: x0.dtype }))), sigma };
  });
}

/** ADD's exponential weighting c(t) = alpha-bar_t = 1 / (1 + sigma_t^2) (Sec. 3.2): less weight at high noise. */
export function addWeight(sigma: Tensor): Tensor {
  return tidy(() => sigma.square().add(1).reciprocal());
}

/**
 * ADD Eq. 4's target, sg(x^_psi(x^_theta,t, t)): the teacher's x0 estimate of the student's output
 * re-noised to sigma_t, x^_theta,t = x^_theta + sigma_t noise (VE form of alpha_t x^ + sigma_t eps).
 * Built from the student output, never from noised real data. No gradient.
 */
export function addDistillationTarget(teacher: Denoiser, xStudent: Tensor, sigmaT: Tensor, noise: Tensor, cond?: Conditioning): Tensor {
  return noGrad(() => tidy(() => teacher(xStudent.detach().add(noise.mul(expandSigma(sigmaT, noise).to({ dtype: noise.dtype }))), sigmaT, cond)));
}

/** ADD Eq. 4 per sample [B]: c(t) d(x^_theta, target), t uniform over the teacher's sigmas, d the per-element mean squared distance. */
export function addDistillationLoss(teacher: Denoiser, xStudent: Tensor, o: Pick<AddLossOptions, 'teacherSigmas' | 'generator' | 'cond'>): Tensor {
  return tidy(() => {
    const B = xStudent.dim(0);
    const idx = Array.from(o.generator.randint(0, o.teacherSigmas.length, [B]).toFloat64Array());
    const sigmaT = tensor(
      idx.map((i) => o.teacherSigmas[i]),
      { dtype: 'float64' },
    ); // [B]
    const target = addDistillationTarget(teacher, xStudent, sigmaT, o.generator.randnLike(xStudent), o.cond);
    return meanSquared(xStudent, target).mul(addWeight(sigmaT).to({ dtype: xStudent.dtype }));
  });
}

/** ADD Eq. 1, the student's loss L_adv^G + lambda L_distill on one batch of real data x0 (which only gives the student's inputs x_s). */
export function addGeneratorLoss(student: Denoiser, teacher: Denoiser, disc: AddDiscriminator, x0: Tensor, o: AddLossOptions): { loss: Tensor; adversarial: Tensor; distill: Tensor } {
  return tidy(() => {
    const { x, sigma } = addStudentInput(x0, o.studentSigmas, o.generator);
    const xHat = student(x, sigma, o.cond); // x^_theta
    const adversarial = hingeGeneratorLoss(discriminate(disc, xHat, o.cond?.classLabels));
    const distill = addDistillationLoss(teacher, xHat, o).mean();
    return { loss: adversarial.add(distill.mul(o.lambda ?? ADD_LAMBDA)), adversarial, distill };
  });
}

/** ADD Eq. 2, the discriminator's loss: hinge on real x0 and the student's samples (no gradient to the student), plus R1 (gamma/2) on x0. */
export function addDiscriminatorLoss(
  student: Denoiser,
  disc: AddDiscriminator,
  x0: Tensor,
  o: Pick<AddLossOptions, 'studentSigmas' | 'generator' | 'cond'> & { r1Gamma: number },
): { loss: Tensor; hinge: Tensor; r1: Tensor } {
  return tidy(() => {
    const { x, sigma } = addStudentInput(x0, o.studentSigmas, o.generator);
    const fake = noGrad(() => student(x, sigma, o.cond));
    const labels = o.cond?.classLabels;
    const xr = x0.detach().requiresGrad_(o.r1Gamma > 0);
    const real = discriminate(disc, xr, labels); // [B, K]
    const hinge = hingeDiscriminatorLoss(real, discriminate(disc, fake, labels));
    const r1 = o.r1Gamma > 0 ? r1Penalty(real, xr, o.r1Gamma) : tensor(0, { dtype: hinge.dtype });
    return { loss: hinge.add(r1), hinge, r1 };
  });
}
