/**
 * The published Fashion-MNIST feature network: the metric space of the image metrics
 * (Frechet distance, KID, precision-recall). Its features are the 128-dim penultimate
 * layer of the CNN classifier in src/models/classifier.ts, with the weights shipped in
 * models/fashion-mnist-features. The name "fmnist-cnn-v1" stands for exactly those
 * weights: numbers measured in this space are comparable only under the same name, and
 * a changed net must be published under a new one.
 *
 * 28 x 28 images and their 32 x 32 padded versions (the shipped diffusion model's format,
 * padded with -1 = black) give identical features: the net center-crops 32 -> 28.
 *
 * Color emoji have their own net, "emoji-cnn-v1" (models/emoji-features, 64 x 64 RGB);
 * featureNetFor(data) picks the net for a model's data. Images smaller than the net's size
 * (emoji samples at 16 or 32 px) are upsampled bilinearly to it, so samples of every
 * resolution are measured in one space (issue 13).
 *
 * @example
 *   const fnet = loadFeatureNet();                                  // fmnist-cnn-v1
 *   const f = extractFeatures(fnet, images, { batchSize: 500 });    // uint8 or [-1, 1] float [N, 1, 28|32, 28|32] -> float32 [N, 128]
 *   fnet.net.dispose();
 *   const enet = featureNetFor('emoji');                           // emoji-cnn-v1: [N, 3, 16|32|64, same] -> [N, 128]
 */
import { empty } from '../engine/create';
import { interpolate } from '../engine/functional';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Classifier } from '../models/classifier';
import { ClassifierMeta, loadClassifier } from '../training/classifier';
import { shippedDir } from '../util/shipped';

/** The name of the shipped feature space. */
export const FEATURE_NET_NAME = 'fmnist-cnn-v1';

/** A feature network: the classifier, its published name and the feature size. */
export interface FeatureNet {
  name: string;
  net: Classifier;
  dim: number;
  meta: ClassifierMeta;
}

/** The name of the shipped emoji feature space. */
export const EMOJI_FEATURE_NET_NAME = 'emoji-cnn-v1';

/** Where the shipped emoji feature net lives (models/emoji-features of the repository). */
export function emojiFeatureNetDir(): string {
  return shippedDir('emoji-features');
}

/** Whether a data name (a checkpoint's config.data) is the emoji dataset, either style or both. */
export function isEmojiData(data: string): boolean {
  return data === 'emoji' || data.startsWith('emoji:');
}

/**
 * The shipped feature net that measures a model trained on `data`: emoji-cnn-v1 for
 * emoji (any style), fmnist-cnn-v1 otherwise. Dispose `.net` when done.
 *
 * @example
 *   const fnet = featureNetFor(meta.config.data); // 'emoji:google' -> emoji-cnn-v1
 */
export function featureNetFor(data: string): FeatureNet {
  return isEmojiData(data) ? loadFeatureNet(emojiFeatureNetDir(), { expectName: EMOJI_FEATURE_NET_NAME }) : loadFeatureNet();
}

/** Where the shipped feature net lives (models/fashion-mnist-features of the repository). */
export function featureNetDir(): string {
  return shippedDir('fashion-mnist-features');
}

/**
 * Loads a feature net (default: the shipped one, checked to be FEATURE_NET_NAME) in eval
 * mode. Dispose `.net` when done.
 */
export function loadFeatureNet(dir: string = featureNetDir(), { expectName = dir === featureNetDir() ? FEATURE_NET_NAME : null }: { expectName?: string | null } = {}): FeatureNet {
  const { meta, net } = loadClassifier(dir);
  if (net.config.noiseConditional || (expectName !== null && meta.name !== expectName)) {
    net.dispose();
    throw new Error(`loadFeatureNet: ${dir} holds ${meta.name}${net.config.noiseConditional ? ' (noise-conditional)' : ''}, expected the clean feature net ${expectName ?? ''}`.trimEnd());
  }
  return { name: meta.name, net, dim: net.featureDim, meta };
}

/**
 * Features [N, dim] float32 of images [N, C, H, W]: uint8 (0..255, scaled to [-1, 1]) or
 * float in [-1, 1]. Images smaller than the net's imageSize are upsampled bilinearly to it
 * (16 or 32 px emoji for the 64 px net). No grad; batches of `batchSize` are written into
 * one preallocated output, so memory is the output plus one batch.
 */
export function extractFeatures(fnet: FeatureNet | Classifier, images: Tensor, { batchSize = 500 }: { batchSize?: number } = {}): Tensor {
  const net = fnet instanceof Classifier ? fnet : fnet.net;
  if (net.config.noiseConditional) throw new TypeError('extractFeatures: the net is noise-conditional; use a clean feature net (loadFeatureNet())');
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`extractFeatures: batchSize must be a positive integer, got ${batchSize}`);
  if (images.ndim !== 4) throw new TypeError(`extractFeatures: images must be [N, C, H, W], got [${images.shape.join(', ')}]`);
  const n = images.dim(0);
  const out = empty([n, net.featureDim]);
  noGrad(() => {
    for (let i = 0; i < n; i += batchSize)
      tidy(() => {
        const raw = images.narrow(0, i, Math.min(batchSize, n - i));
        const x = raw.dtype === 'uint8' ? raw.float().div(127.5).sub(1) : raw.to({ dtype: net.fc.weight.dtype });
        const size = net.config.imageSize;
        const up = x.dim(2) < size || x.dim(3) < size ? interpolate(x, { size: [size, size], mode: 'bilinear' }) : x; // [b, C, size, size]
        out.narrow(0, i, raw.dim(0)).copy_(net.features(up));
      });
  });
  return out;
}
