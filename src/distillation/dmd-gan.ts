/**
 * DMD2's optional GAN head (Yin et al. 2024, "Improved Distribution Matching Distillation for Fast
 * Image Synthesis", Sec. 4.3): a small classification head on the bottleneck (middle) features of
 * the FAKE score U-Net, read at a noised input, tells real data from generator samples. The head
 * and the fake score's own encoder train together on the fake-score side; the generator gets the
 * non-saturating generator loss through them:
 *
 *   x_t = x + sigma_t n,  t ~ U{0 .. T-1} (as the denoising loss draws it; DMD2's "diffusion GAN")
 *   D(x_t, t, c) = head(F_mid(c_in x_t, c_noise(t), c))                   (logit, [B])
 *   L_D = E softplus(-D(real_t)) + E softplus(D(sg(G(z))_t))              (fake-score side)
 *   L_G = E softplus(-D(G(z)_t))                                          (generator side)
 *
 *   fake-score phase: L_denoise + lambda_D L_D;  generator phase: L_DMD + lambda_G L_G.
 *
 * @example
 *   const head = new AddHeads([bottleneckChannels(fake)], { numClasses: null, generator });
 *   fake.attach('gan_head', head);                          // its weights travel in the fake's checkpoint file
 *   const D = bottleneckClassifier(fake, head, schedule);
 *   const g = ganGeneratorLoss(classifyNoised(D, x0, { sampleSigma: discreteSigma(schedule), generator, labels }));
 *   const d = ganDiscriminatorLoss(classifyNoised(D, real, o), classifyNoised(D, x0.detach(), o));
 */
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { expandSigma } from '../core/denoiser';
import { DiscreteVP, sigmaToT } from '../core/schedules';
import { UNet } from '../models/unet';
import { SigmaSampler } from '../training/sigma-sampling';
import { AddHeads } from './add';

/** The fake-score side's weight lambda_D when none is given (DMD2's released ImageNet-64 script: --cls_loss_weight 1e-2). */
export const DMD2_GAN_DISC_WEIGHT = 1e-2;

/** The generator side's weight lambda_G the docs suggest (DMD2's released ImageNet-64 script: --gen_cls_loss_weight 3e-3); the run's default is 0, off. */
export const DMD2_GAN_WEIGHT = 3e-3;

/**
 * The non-saturating logistic GAN loss, discriminator side (Goodfellow et al. 2014; DMD2 Sec. 4.3):
 * E softplus(-D(real)) + E softplus(D(fake)), logits [B] each (-log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))).
 *
 * @example
 *   ganDiscriminatorLoss(tensor([0]), tensor([0])).item(); // 2 ln 2
 */
export function ganDiscriminatorLoss(realLogits: Tensor, fakeLogits: Tensor): Tensor {
  return tidy(() => realLogits.neg().softplus().mean().add(fakeLogits.softplus().mean()));
}

/**
 * The non-saturating logistic GAN loss, generator side: E softplus(-D(fake)) = -E log sigmoid(D(fake)).
 *
 * @example
 *   ganGeneratorLoss(tensor([0, 0])).item(); // ln 2
 */
export function ganGeneratorLoss(fakeLogits: Tensor): Tensor {
  return tidy(() => fakeLogits.neg().softplus().mean());
}

/** A classifier of noised images: x_t [B, C, H, W], sigma [B] (float64), class labels [B] (optional) -> logits [B]. */
export type NoisedClassifier = (xt: Tensor, sigma: Tensor, labels?: Tensor) => Tensor;

/**
 * The channels of a U-Net's bottleneck (its middle blocks' output, the last of UNet.features).
 *
 * @example
 *   bottleneckChannels(fake); // shipped model: 32
 */
export function bottleneckChannels(net: UNet): number {
  const { modelChannels, channelMult } = net.config;
  return modelChannels * channelMult[channelMult.length - 1]; // the middle keeps the last level's width
}

/**
 * D(x_t, sigma, c) = head(F_mid(c_in x_t, c_noise, c)): the head on the bottleneck features of `net`
 * (a discrete-time VP U-Net: c_in = 1 / sqrt(1 + sigma^2), c_noise = t(sigma), as its denoiser reads
 * it). Gradients reach the head, the network's encoder and middle, and x_t.
 *
 * @example
 *   const D = bottleneckClassifier(fake, head, schedule);
 *   D(xt, sigma, labels); // [B] logits
 */
export function bottleneckClassifier(net: UNet, head: AddHeads, schedule: DiscreteVP): NoisedClassifier {
  return (xt, sigma, labels) =>
    tidy(() => {
      const cIn = sigma.square().add(1).rsqrt().to({ dtype: xt.dtype }); // [B] VP c_in (EDM Table 1)
      const cNoise = sigmaToT(schedule, sigma).to({ dtype: xt.dtype }); // [B]
      const f = net.features(xt.mul(expandSigma(cIn, xt)), cNoise, labels);
      return head.forward([f[f.length - 1]]).reshape([-1]); // [B, 1] -> [B]
    });
}

/** What classifyNoised takes. */
export interface NoisedOptions {
  /** The noise level per sample (DMD2: as the denoising loss, discreteSigma). */
  sampleSigma: SigmaSampler;
  /** Draws sigma, then the noise n. */
  generator: Generator;
  labels?: Tensor;
}

/**
 * D(x + sigma n) with sigma ~ sampleSigma and n ~ N(0, I) drawn from `generator` (sigma first):
 * logits [B]. Gradients flow into x unless the caller detaches it.
 *
 * @example
 *   classifyNoised(D, x0, { sampleSigma: discreteSigma(schedule), generator, labels }); // [B]
 */
export function classifyNoised(D: NoisedClassifier, x: Tensor, { sampleSigma, generator, labels }: NoisedOptions): Tensor {
  return tidy(() => {
    const sigma = sampleSigma(x.dim(0), generator, { dtype: 'float64', device: x.device }); // [B]
    const xt = x.add(generator.randnLike(x).mul(expandSigma(sigma, x).to({ dtype: x.dtype })));
    return D(xt, sigma, labels);
  });
}
