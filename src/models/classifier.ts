/**
 * A small CNN image classifier for 28 x 28 grayscale images (Fashion-MNIST), in two
 * roles: its penultimate layer `features(x)` is the metric space of the Frechet
 * distance / KID / precision-recall (a fixed, published net), and with
 * `noiseConditional: true` it is the noisy classifier p(y | x, sigma) of classifier
 * guidance (Dhariwal & Nichol 2021, Sec. 4; they use the U-Net's encoder half, this
 * one is smaller), in the Denoiser's coordinates x = x0 + sigma n.
 *
 * Layout (C = width, default 32; the sizes are those of the default 28 x 28 net):
 *   crop 32 -> 28  (a 32 x 32 input is the 28 x 28 image padded by 2: the border is dropped)
 *   x * c_in       (noise-conditional only; EDM Table 1: c_in = 1 / sqrt(sigma^2 + sigma_data^2))
 *   stem    space-to-depth 2x2 (pixel unshuffle, lossless)  [B, 4, 14, 14]  (stem s: s x s, [B, s^2 Cin, H/s, W/s])
 *   block0  conv3x3 4 -> C,   GN, (+ emb), SiLU            [B, C, 14, 14]
 *   block1  conv3x3 C -> 2C,  GN, (+ emb), SiLU, maxpool   [B, 2C, 7, 7]
 *   block2  conv3x3 2C -> 2C, GN, (+ emb), SiLU, maxpool   [B, 2C, 4, 4]   (padding 1: 7 -> 4)
 *   fc      linear 2C*16 -> F, (+ emb), SiLU               [B, F]   = features(x)
 *   head    linear F -> numClasses                         [B, K]   = forward(x) (logits)
 * Space-to-depth instead of a 28 x 28 conv layer keeps every feature map at 14 x 14 or
 * less: a training step costs half as much on a CPU, for ~5.8 M multiply-adds per image.
 * Color emoji at 64 x 64 use stem 4 (RGB -> 48 channels at 16 x 16, final maps 5 x 5).
 * "+ emb" adds a per-channel bias computed from the noise embedding of c_noise = ln(sigma)/4
 * (EDM Table 1), as the U-Net's residual blocks add theirs.
 *
 * @example
 *   const net = new Classifier({ width: 32, featureDim: 128 });
 *   net.features(x);                          // x: [B, 1, 28, 28] or [B, 1, 32, 32] in [-1, 1] -> [B, 128]
 *   net.forward(x);                           // -> logits [B, 10]
 *   const emoji = new Classifier({ inChannels: 3, numClasses: 9, imageSize: 64, stem: 4 }); // [B, 3, 64, 64] -> [B, 9]
 *   const noisy = new Classifier({ noiseConditional: true });
 *   noisy.forward(x0.add(n.mul(sigma)), sigma); // sigma: [B] (or a 0-d tensor)
 */
import * as F from '../engine/functional';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { FourierFeatures, SinusoidalEmbedding } from '../nn/embeddings';
import { Conv2d, GroupNorm, InitOptions, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { checkNoiseLevel, noiseEmbedding, NoiseEmbeddingKind, positiveInt, rejectUnknownKeys } from './common';

export interface ClassifierConfig {
  /** Image channels. Default 1. */
  inChannels: number;
  /** Output classes. Default 10. */
  numClasses: number;
  /** Base width C: the three conv blocks have C, 2C, 2C channels. Default 32. */
  width: number;
  /** Size F of the penultimate layer, the feature space. Default 128. */
  featureDim: number;
  /** GroupNorm groups; must divide C. Default 8. */
  groups: number;
  /** The image size the net works at; larger inputs are center-cropped to it. Default 28. */
  imageSize: number;
  /** Space-to-depth factor of the stem (2: 28 -> 14, 4: 64 -> 16); imageSize must be a multiple of 2 stem. Default 2. */
  stem: number;
  /** Condition on sigma (classifier guidance): scale x by c_in and add a noise embedding to each block. Default false. */
  noiseConditional: boolean;
  /** sigma_data of c_in = 1 / sqrt(sigma^2 + sigma_data^2) (EDM). Default 0.5. */
  sigmaData: number;
  /** Embedding of c_noise = ln(sigma)/4: 'sinusoidal' or 'fourier'. Default 'sinusoidal'. */
  noiseEmbedding: NoiseEmbeddingKind;
  /** Size of the noise embedding (even). Default 64. */
  embedDim: number;
}

/** The documented defaults: the shipped Fashion-MNIST feature net (fmnist-cnn-v1). */
export const CLASSIFIER_DEFAULTS: Readonly<ClassifierConfig> = Object.freeze({
  inChannels: 1,
  numClasses: 10,
  width: 32,
  featureDim: 128,
  groups: 8,
  imageSize: 28,
  stem: 2,
  noiseConditional: false,
  sigmaData: 0.5,
  noiseEmbedding: 'sinusoidal',
  embedDim: 64,
});

/**
 * Fills defaults and checks every field; errors name the field and the value.
 *
 * @example
 *   resolveClassifierConfig({ noiseConditional: true }).width // 32
 */
export function resolveClassifierConfig(config: Partial<ClassifierConfig> = {}): ClassifierConfig {
  const who = 'Classifier';
  rejectUnknownKeys(who, config, CLASSIFIER_DEFAULTS);
  const c: ClassifierConfig = { ...CLASSIFIER_DEFAULTS, ...config };
  for (const f of ['inChannels', 'numClasses', 'width', 'featureDim', 'groups', 'imageSize', 'stem', 'embedDim'] as const) positiveInt(who, f, c[f]);
  if (c.width % c.groups) throw new TypeError(`${who}: groups (${c.groups}) must divide width, got width ${c.width}`);
  if (c.embedDim % 2) throw new TypeError(`${who}: embedDim must be even, got ${c.embedDim}`);
  if (c.imageSize % (2 * c.stem))
    throw new TypeError(`${who}: imageSize must be a multiple of 2 stem = ${2 * c.stem} (space-to-depth by stem, then a 2x pooling), got imageSize ${c.imageSize}`);
  if (typeof c.noiseConditional !== 'boolean') throw new TypeError(`${who}: noiseConditional must be true or false, got ${JSON.stringify(c.noiseConditional)}`);
  if (!(c.sigmaData > 0)) throw new TypeError(`${who}: sigmaData must be positive, got ${c.sigmaData}`);
  if (c.noiseEmbedding !== 'sinusoidal' && c.noiseEmbedding !== 'fourier')
    throw new TypeError(`${who}: noiseEmbedding must be 'sinusoidal' or 'fourier', got ${JSON.stringify(c.noiseEmbedding)}`);
  return c;
}

/** One conv block: h = SiLU(GN(conv3x3(x)) + bias(emb)), the bias only when noise-conditional. */
export class ConvBlock extends Module {
  conv: Conv2d;
  norm: GroupNorm;
  emb_proj: Linear | null = null;

  constructor(inCh: number, outCh: number, groups: number, embDim: number | null, { generator }: InitOptions = {}) {
    super();
    this.conv = this.child('conv', new Conv2d(inCh, outCh, 3, { padding: 1, generator }));
    this.norm = this.child('norm', new GroupNorm(groups, outCh));
    if (embDim !== null) this.emb_proj = this.child('emb_proj', new Linear(embDim, outCh, { generator }));
  }

  /** x: [B, Cin, H, W], emb: [B, E] or null -> [B, Cout, H, W]. */
  forward(x: Tensor, emb: Tensor | null): Tensor {
    return tidy(() => {
      const h = this.norm.forward(this.conv.forward(x)); // [B, Cout, H, W]
      if (!this.emb_proj || !emb) return h.silu();
      return h.add(this.emb_proj.forward(emb).unsqueeze(-1).unsqueeze(-1)).silu();
    });
  }
}

/**
 * The classifier. Parameter names: map_noise, map_layer0, map_layer1 (noise-conditional
 * only), blocks.0-2 (conv, norm, emb_proj), fc, fc_emb, head.
 *
 * @example
 *   const net = new Classifier();
 *   const logits = net.forward(x);   // [B, 1, 28, 28] -> [B, 10]
 */
export class Classifier extends Module {
  readonly config: ClassifierConfig;
  map_noise: SinusoidalEmbedding | FourierFeatures | null = null;
  map_layer0: Linear | null = null;
  map_layer1: Linear | null = null;
  blocks: ConvBlock[];
  fc: Linear;
  fc_emb: Linear | null = null;
  head: Linear;

  constructor(config: Partial<ClassifierConfig> = {}, { generator }: InitOptions = {}) {
    super();
    const c = (this.config = resolveClassifierConfig(config));
    const E = c.noiseConditional ? c.embedDim : null;
    if (E !== null) {
      // As the U-Net: embedding(c_noise) -> Linear -> SiLU -> Linear.
      this.map_noise = this.child('map_noise', noiseEmbedding(c.noiseEmbedding, E, { generator }));
      this.map_layer0 = this.child('map_layer0', new Linear(E, E, { generator }));
      this.map_layer1 = this.child('map_layer1', new Linear(E, E, { generator }));
    }
    const C = c.width;
    this.blocks = this.children('blocks', [
      new ConvBlock(c.stem * c.stem * c.inChannels, C, c.groups, E, { generator }),
      new ConvBlock(C, 2 * C, c.groups, E, { generator }),
      new ConvBlock(2 * C, 2 * C, c.groups, E, { generator }),
    ]);
    const s = Math.floor(c.imageSize / (4 * c.stem)) + 1; // the final map size: imageSize / (2 stem), then a padded 2x2 pool
    this.fc = this.child('fc', new Linear(2 * C * s * s, c.featureDim, { generator }));
    if (E !== null) this.fc_emb = this.child('fc_emb', new Linear(E, c.featureDim, { generator }));
    this.head = this.child('head', new Linear(c.featureDim, c.numClasses, { generator }));
  }

  /** Size of features(x). */
  get featureDim(): number {
    return this.config.featureDim;
  }

  /**
   * The penultimate layer [B, featureDim]: the feature space of the image metrics.
   * x: [B, inChannels, H, W] in [-1, 1] with H, W >= imageSize (center-cropped to it);
   * sigma: [B] or 0-d, required exactly when the net is noise-conditional.
   */
  features(x: Tensor, sigma?: Tensor): Tensor {
    return tidy(() => {
      const [h, emb] = this.trunk(x, sigma); // [B, 2C * 16], [B, E] | null
      const f = this.fc.forward(h); // [B, F]
      return (this.fc_emb && emb ? f.add(this.fc_emb.forward(emb)) : f).silu();
    });
  }

  /** Logits [B, numClasses] (arguments as features()). */
  forward(x: Tensor, sigma?: Tensor): Tensor {
    return tidy(() => this.head.forward(this.features(x, sigma)));
  }

  /** The conv trunk: crop, c_in, three blocks, flattened -> [B, 2C s^2], and the embedding. */
  private trunk(x: Tensor, sigma: Tensor | undefined): [Tensor, Tensor | null] {
    const c = this.config;
    let h = centerCrop(this.checkInput(x), c.imageSize); // [B, Cin, 28, 28]
    let emb: Tensor | null = null;
    if (c.noiseConditional) {
      if (sigma === undefined) throw new TypeError('Classifier: this net is noise-conditional: pass sigma ([B] or a 0-d tensor)');
      const s = checkNoiseLevel(sigma, x.dim(0), 'Classifier: sigma').to({ dtype: h.dtype });
      h = h.mul(s.square().add(c.sigmaData ** 2).rsqrt().reshape([-1, 1, 1, 1])); // EDM Table 1: c_in
      emb = this.embed(s);
    } else if (sigma !== undefined) throw new TypeError('Classifier: sigma given, but this net is not noise-conditional (noiseConditional is false)');
    const [b0, b1, b2] = this.blocks;
    h = b0.forward(F.pixelUnshuffle(h, c.stem), emb); // [B, stem^2 Cin, 14, 14] -> [B, C, 14, 14]
    h = F.maxPool2d(b1.forward(h, emb), 2); // [B, 2C, 7, 7]
    h = F.maxPool2d(b2.forward(h, emb), 2, { padding: 1 }); // [B, 2C, 4, 4]
    return [h.flatten(1), emb]; // [B, 2C * 16]
  }

  /** EDM Table 1: c_noise = ln(sigma)/4, embedded, then an MLP -> [B, E]. */
  private embed(sigma: Tensor): Tensor {
    const cNoise = sigma.log().div(4); // [B]
    const phi = this.map_noise!.forward(cNoise).to({ dtype: this.map_layer0!.weight.dtype }); // [B, E]
    return this.map_layer1!.forward(this.map_layer0!.forward(phi).silu()).silu();
  }

  private checkInput(x: Tensor): Tensor {
    const { inChannels, imageSize } = this.config;
    if (x.ndim !== 4 || x.dim(1) !== inChannels) throw new TypeError(`Classifier: x must have shape [B, ${inChannels}, H, W], got [${x.shape.join(', ')}]`);
    const [H, W] = [x.dim(2), x.dim(3)];
    if (H < imageSize || W < imageSize || (H - imageSize) % 2 || (W - imageSize) % 2)
      throw new TypeError(`Classifier: input size ${H}x${W} cannot be center-cropped to ${imageSize}x${imageSize} (give ${imageSize}x${imageSize}, or a padded ${imageSize + 4}x${imageSize + 4})`);
    return x;
  }
}

/** The central size x size window of [B, C, H, W] (a view; identity when already that size). */
export function centerCrop(x: Tensor, size: number): Tensor {
  const top = (x.dim(2) - size) / 2;
  const left = (x.dim(3) - size) / 2;
  return top === 0 && left === 0 ? x : x.narrow(2, top, size).narrow(3, left, size);
}

/** log p(y | x, sigma) [N] of a noise-conditional classifier: the function classifier guidance takes. */
export type ClassifierLogProb = (x: Tensor, sigma: Tensor, labels: Tensor) => Tensor;

/**
 * The guidance adapter (Dhariwal & Nichol 2021, Algorithm 1 needs grad_x log p_phi(y | x_t)):
 * x [N, C, H, W] noisy in the Denoiser's coordinates x0 + sigma n, sigma [N] (or 0-d),
 * labels [N] int64 -> log_softmax(logits)[y] [N], differentiable in x.
 *
 * @example
 *   const logp = classifierLogProb(loadClassifier(shippedClassifierDir()).net);
 *   const [g] = grad(logp(x.requiresGrad_(), sigma, labels).sum(), x); // grad_x log p(y | x, sigma)
 */
export function classifierLogProb(net: Classifier): ClassifierLogProb {
  if (!net.config.noiseConditional)
    throw new TypeError('classifierLogProb: the classifier must be noise-conditional (noiseConditional: true; train it with --noise ddpm)');
  const K = net.config.numClasses;
  return (x, sigma, labels) =>
    tidy(() => {
      if ((labels.dtype !== 'int64' && labels.dtype !== 'int32') || labels.ndim !== 1 || labels.dim(0) !== x.dim(0))
        throw new TypeError(`classifierLogProb: labels must be int64 [${x.dim(0)}] (one class per sample), got ${labels.dtype} [${labels.shape.join(', ')}]`);
      const [lo, hi] = [labels.min().item(), labels.max().item()];
      if (lo < 0 || hi >= K) throw new RangeError(`classifierLogProb: labels must be in [0, ${K - 1}], got values in [${lo}, ${hi}]`);
      return net.forward(x, sigma).logSoftmax(1).gather(1, labels.long().reshape([-1, 1])).reshape([-1]); // [N]
    });
}
