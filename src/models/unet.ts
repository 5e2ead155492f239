/**
 * The DDPM / ADM U-Net (Ho et al. 2020, App. B; Dhariwal & Nichol 2021, "ADM", Sec. 3):
 * residual blocks conditioned on the noise level by scale-shift normalization, self-
 * attention at chosen resolutions, channel multipliers per level, and encoder features
 * concatenated into the decoder.
 *
 * @example
 *   const net = new UNet({ inChannels: 1, modelChannels: 64, channelMult: [1, 2, 2] });
 *   const out = net.forward(x, cNoise);          // x: [B, 1, 32, 32], cNoise: [B] -> [B, 1, 32, 32]
 *   const cond = new UNet({ ...UNET_BENCH_2M, numClasses: 10 });
 *   cond.forward(x, cNoise, labels);             // labels [B] int64; 10 = the null class
 */
import { cat } from '../engine/create';
import { noGrad, tidy } from '../engine/scope';
import { Generator } from '../engine/random';
import * as F from '../engine/functional';
import { Tensor } from '../engine/tensor';
import { FourierFeatures, SinusoidalEmbedding } from '../nn/embeddings';
import { Conv2d, Dropout, Embedding, GroupNorm, InitOptions, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { Downsample, Upsample } from '../nn/resample';
import { checkNoiseLevel, classLabelsOrNull, noiseEmbedding, NoiseEmbeddingKind, positiveInt, rejectUnknownKeys } from './common';

export interface UNetConfig {
  /** Image channels in: 1 (grayscale) or 3 (RGB); any positive count works (e.g. latents). Default 1. */
  inChannels: number;
  /** Channels out; null = inChannels. Default null. */
  outChannels: number | null;
  /** Nominal input size, only used to place attention (attentionResolutions); inputs of any size divisible by 2^(levels-1) work. Default 32. */
  imageSize: number;
  /** Base width C; level i has C * channelMult[i] channels. Default 64. */
  modelChannels: number;
  /** Channel multiplier per level; its length is the number of levels. Default [1, 2, 2]. */
  channelMult: number[];
  /** Residual blocks per level in the encoder (the decoder has one more). Default 2. */
  numResBlocks: number;
  /** Feature-map sizes (at imageSize) with self-attention after each residual block, e.g. [8] = at 8x8. Default [8]. */
  attentionResolutions: number[];
  /** Attention heads. Default 4. */
  numHeads: number;
  /** Channels per head instead of a fixed head count (ADM's num_head_channels); null = use numHeads. Default null. */
  headChannels: number | null;
  /** Self-attention between the two middle residual blocks. Default true (as ADM). */
  midAttention: boolean;
  /** Dropout before each block's second conv (training mode only). Default 0. */
  dropout: number;
  /** Number of classes for class conditioning, or null. Class id numClasses is the null class ("no label"). Default null. */
  numClasses: number | null;
  /** GroupNorm groups; must divide every level's width. Default 32. */
  groups: number;
  /** 'conv': strided 3x3 conv down, nearest + 3x3 conv up (ADM conv_resample); 'avgpool': 2x2 average down, nearest up. Default 'conv'. */
  resample: 'conv' | 'avgpool';
  /** Noise-level embedding: 'sinusoidal' (DDPM/ADM, t in [0, 1000)) or 'fourier' (EDM, ln(sigma)/4). Default 'sinusoidal'. */
  noiseEmbedding: NoiseEmbeddingKind;
  /** Std of the Fourier frequencies when noiseEmbedding is 'fourier'. Default 16. */
  fourierScale: number;
  /**
   * Embed a guidance weight w too (guided distillation, Meng et al. 2023, Sec. 4.1): sinusoids of w
   * -> Linear -> SiLU -> zero-initialized Linear, added to the noise embedding. Optional and off by
   * default: a config without it (every checkpoint before it) resolves to the same JSON and network.
   */
  guidanceEmbedding?: boolean;
  /**
   * Super-resolution (Ho et al. 2021, "Cascaded Diffusion Models", Sec. 3): the channels of a
   * low-resolution condition, upsampled (bilinear) to the input's size and concatenated to it
   * before conv_in. Optional and off (0) by default, like guidanceEmbedding.
   */
  condChannels?: number;
  /**
   * Super-resolution: embed the condition's augmentation level s in [0, 1] as a second noise level
   * (CDM Sec. 4.2): sinusoids of 1000 s -> Linear -> SiLU -> Linear, added to the
   * noise embedding. Optional and off by default.
   */
  augEmbedding?: boolean;
  /**
   * SDXL's micro-conditioning (Podell et al. 2023, Sec. 2.2): embed the original image size and
   * the crop offsets, (h, w, top, left) in pixels: sinusoids of each -> concatenated -> Linear ->
   * SiLU -> Linear (zero-initialized), added to the noise embedding. Optional and off by default.
   */
  microConditioning?: boolean;
}

/** The optional fields: known to resolveUNetConfig, absent from the resolved config when off. */
const UNET_OPTIONAL = Object.freeze({ guidanceEmbedding: false, condChannels: 0, augEmbedding: false, microConditioning: false });

/** The micro-conditioning values per sample: original height and width, crop top and left (SDXL's c_size and c_crop). */
export const MICRO_VALUES = 4;

/** The documented defaults: a 32x32 grayscale U-Net. */
export const UNET_DEFAULTS: Readonly<UNetConfig> = Object.freeze({
  inChannels: 1,
  outChannels: null,
  imageSize: 32,
  modelChannels: 64,
  channelMult: [1, 2, 2],
  numResBlocks: 2,
  attentionResolutions: [8],
  numHeads: 4,
  headChannels: null,
  midAttention: true,
  dropout: 0,
  numClasses: null,
  groups: 32,
  resample: 'conv',
  noiseEmbedding: 'sinusoidal',
  fourierScale: 16,
});

/**
 * The benchmark's network ("about 2M parameters, batch 64, 32x32 grayscale"): the defaults
 * at half width, 1,742,881 parameters. Attention only at 8x8: on a CPU, 16x16 attention
 * (256 positions) would cost more than all the convolutions together.
 * test/models.test.ts derives the count from the PyTorch twin in scripts/fixtures/nn.py.
 */
export const UNET_BENCH_2M: Readonly<Partial<UNetConfig>> = Object.freeze({
  inChannels: 1,
  imageSize: 32,
  modelChannels: 32,
  channelMult: [1, 2, 2],
  numResBlocks: 2,
  attentionResolutions: [8],
  numHeads: 4,
});

/**
 * Fills defaults and checks every field; errors name the field and the value.
 *
 * @example
 *   resolveUNetConfig({ channelMult: [1, 2] }).modelChannels // 64
 */
export function resolveUNetConfig(config: Partial<UNetConfig> = {}): UNetConfig {
  const who = 'UNet';
  rejectUnknownKeys(who, config, { ...UNET_DEFAULTS, ...UNET_OPTIONAL });
  const c: UNetConfig = { ...UNET_DEFAULTS, ...config };
  if (c.guidanceEmbedding !== undefined && typeof c.guidanceEmbedding !== 'boolean') throw new TypeError(`${who}: guidanceEmbedding must be true or false, got ${JSON.stringify(c.guidanceEmbedding)}`);
  if (c.guidanceEmbedding === false) delete c.guidanceEmbedding; // off: the config of every earlier checkpoint
  if (c.augEmbedding !== undefined && typeof c.augEmbedding !== 'boolean') throw new TypeError(`${who}: augEmbedding must be true or false, got ${JSON.stringify(c.augEmbedding)}`);
  if (c.augEmbedding === false) delete c.augEmbedding;
  if (c.microConditioning !== undefined && typeof c.microConditioning !== 'boolean') throw new TypeError(`${who}: microConditioning must be true or false, got ${JSON.stringify(c.microConditioning)}`);
  if (c.microConditioning === false) delete c.microConditioning;
  if (c.condChannels !== undefined && !(Number.isSafeInteger(c.condChannels) && c.condChannels >= 0))
    throw new TypeError(`${who}: condChannels must be a non-negative integer, got ${JSON.stringify(c.condChannels)}`);
  if (c.condChannels === 0) delete c.condChannels;
  for (const f of ['channelMult', 'attentionResolutions'] as const)
    if (!Array.isArray(c[f])) throw new TypeError(`${who}: ${f} must be a list of numbers, got ${JSON.stringify(c[f])}`);
  c.channelMult = [...c.channelMult];
  c.attentionResolutions = [...c.attentionResolutions];
  for (const f of ['inChannels', 'imageSize', 'modelChannels', 'numResBlocks', 'numHeads', 'groups'] as const) positiveInt(who, f, c[f]);
  for (const f of ['outChannels', 'headChannels', 'numClasses'] as const) if (c[f] !== null) positiveInt(who, f, c[f]);
  if (c.channelMult.length === 0) throw new TypeError(`${who}: channelMult must be a non-empty list, got ${JSON.stringify(c.channelMult)}`);
  c.channelMult.forEach((m, i) => positiveInt(who, `channelMult[${i}]`, m));
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new RangeError(`${who}: dropout must be in [0, 1), got ${c.dropout}`);
  if (c.resample !== 'conv' && c.resample !== 'avgpool') throw new TypeError(`${who}: resample must be 'conv' or 'avgpool', got ${JSON.stringify(c.resample)}`);
  if (c.noiseEmbedding !== 'sinusoidal' && c.noiseEmbedding !== 'fourier')
    throw new TypeError(`${who}: noiseEmbedding must be 'sinusoidal' or 'fourier', got ${JSON.stringify(c.noiseEmbedding)}`);
  if (c.modelChannels % 2) throw new TypeError(`${who}: modelChannels must be even (it is the noise embedding size), got ${c.modelChannels}`);
  if (!(c.fourierScale > 0)) throw new TypeError(`${who}: fourierScale must be positive, got ${c.fourierScale}`);
  const factor = downsamplingFactor(c);
  if (c.imageSize % factor) throw new TypeError(`${who}: imageSize ${c.imageSize} is not divisible by ${factor} (2^(levels-1) with ${c.channelMult.length} levels)`);
  const sizes = c.channelMult.map((_, i) => c.imageSize / 2 ** i);
  for (const r of c.attentionResolutions)
    if (!sizes.includes(r))
      throw new TypeError(`${who}: attentionResolutions has ${r}, which is not a feature-map size of this U-Net (sizes ${sizes.join(', ')} for imageSize ${c.imageSize})`);
  c.channelMult.forEach((m, i) => {
    const ch = c.modelChannels * m;
    if (ch % c.groups) throw new TypeError(`${who}: groups (${c.groups}) must divide every level's channels, but level ${i} has ${ch} (modelChannels ${c.modelChannels} x ${m})`);
    if (attentionAt(c, i) || (c.midAttention && i === c.channelMult.length - 1)) headsFor(c, ch);
  });
  return c;
}

/** 2^(levels-1): input heights and widths must be multiples of it. */
export function downsamplingFactor(c: Pick<UNetConfig, 'channelMult'>): number {
  return 2 ** (c.channelMult.length - 1);
}

function attentionAt(c: UNetConfig, level: number): boolean {
  return c.attentionResolutions.includes(c.imageSize / 2 ** level);
}

function headsFor(c: UNetConfig, channels: number): number {
  const heads = c.headChannels === null ? c.numHeads : channels / c.headChannels;
  if (!Number.isInteger(heads) || channels % heads)
    throw new TypeError(
      c.headChannels === null
        ? `UNet: numHeads (${c.numHeads}) must divide the channels of every attention block, got ${channels}`
        : `UNet: headChannels (${c.headChannels}) must divide the channels of every attention block, got ${channels}`,
    );
  return heads;
}

/** ADM's GroupNorm32: normalizes in the weights' precision (float32 under autocast) and returns x's dtype. */
export class GroupNorm32 extends GroupNorm {
  override forward(x: Tensor): Tensor {
    const w = this.weight;
    if (!w || w.dtype === x.dtype) return super.forward(x);
    return tidy(() => super.forward(x.to({ dtype: w.dtype })).to({ dtype: x.dtype }));
  }
}

/** Zeroes a layer's weights and bias, as ADM's zero_module: the block starts as the identity. */
export function zeroInit<M extends Conv2d | Linear>(m: M): M {
  noGrad(() => {
    m.weight.zero_();
    m.bias?.zero_();
  });
  return m;
}

/**
 * ADM's residual block with use_scale_shift_norm (Dhariwal & Nichol 2021, Sec. 3, "AdaGN"):
 * h = conv1(SiLU(GN(x))); (s, b) = W SiLU(emb); h = conv2(drop(SiLU(GN(h) (1 + s) + b))); out = skip(x) + h.
 *
 * @example
 *   const block = new ResBlock(64, 128, 256, { groups: 32, dropout: 0, dropoutGenerator: new Generator(0) });
 *   block.forward(x, emb); // x: [B, 64, H, W], emb: [B, 256] -> [B, 128, H, W]
 */
export class ResBlock extends Module {
  norm1: GroupNorm32;
  conv1: Conv2d;
  emb_proj: Linear;
  norm2: GroupNorm32;
  dropout: Dropout;
  conv2: Conv2d;
  skip: Conv2d | null = null;

  constructor(inCh: number, outCh: number, embDim: number, o: InitOptions & { groups: number; dropout: number; dropoutGenerator: Generator }) {
    super();
    const { generator, groups } = o;
    this.norm1 = this.child('norm1', new GroupNorm32(groups, inCh));
    this.conv1 = this.child('conv1', new Conv2d(inCh, outCh, 3, { padding: 1, generator }));
    this.emb_proj = this.child('emb_proj', new Linear(embDim, 2 * outCh, { generator }));
    this.norm2 = this.child('norm2', new GroupNorm32(groups, outCh));
    this.dropout = this.child('dropout', new Dropout(o.dropout, o.dropoutGenerator));
    this.conv2 = this.child('conv2', zeroInit(new Conv2d(outCh, outCh, 3, { padding: 1, generator })));
    if (inCh !== outCh) this.skip = this.child('skip', new Conv2d(inCh, outCh, 1, { generator }));
  }

  /** x: [B, Cin, H, W], emb: [B, E] -> [B, Cout, H, W]. */
  forward(x: Tensor, emb: Tensor): Tensor {
    return tidy(() => {
      const h = this.conv1.forward(this.norm1.forward(x).silu()); // [B, Cout, H, W]
      const [scale, shift] = this.emb_proj.forward(emb.silu()).unsqueeze(-1).unsqueeze(-1).chunk(2, 1); // [B, Cout, 1, 1] each
      const g = this.norm2.forward(h).mul(scale.add(1)).add(shift);
      const out = this.conv2.forward(this.dropout.forward(g.silu()));
      return (this.skip ? this.skip.forward(x) : x).add(out);
    });
  }
}

/**
 * Multi-head self-attention over the H x W positions (ADM's AttentionBlock, "new" qkv order):
 * out = x + proj_out(Attention(qkv(GN(x)))), proj_out zero-initialized.
 *
 * @example
 *   new AttentionBlock(128, 4, { groups: 32 }).forward(h); // [B, 128, 8, 8] -> [B, 128, 8, 8]
 */
export class AttentionBlock extends Module {
  norm: GroupNorm32;
  qkv: Conv2d;
  proj_out: Conv2d;

  constructor(readonly channels: number, readonly numHeads: number, { generator, groups }: InitOptions & { groups: number }) {
    super();
    this.norm = this.child('norm', new GroupNorm32(groups, channels));
    this.qkv = this.child('qkv', new Conv2d(channels, 3 * channels, 1, { generator }));
    this.proj_out = this.child('proj_out', zeroInit(new Conv2d(channels, channels, 1, { generator })));
  }

  /** x: [B, C, H, W] -> [B, C, H, W]. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [B, C, H, W] = x.shape;
      const heads = this.numHeads;
      const qkv = this.qkv.forward(this.norm.forward(x)).reshape([B, 3, heads, C / heads, H * W]); // [B, 3, heads, d, HW]
      const [q, k, v] = [0, 1, 2].map((i) => qkv.select(1, i).transpose(-1, -2)); // [B, heads, HW, d]
      const a = F.scaledDotProductAttention(q, k, v); // [B, heads, HW, d]
      return x.add(this.proj_out.forward(a.transpose(-1, -2).reshape([B, C, H, W])));
    });
  }
}

/**
 * One U-Net stage: a residual block, then optionally attention, then optionally a 2x upsample (decoder).
 *
 * @example
 *   const stage = new UNetBlock(resBlock, new AttentionBlock(128, 4, { groups: 32 }), null);
 *   stage.forward(h, emb);
 */
export class UNetBlock extends Module {
  res: ResBlock;
  attn: AttentionBlock | null = null;
  up: Upsample | null = null;

  constructor(res: ResBlock, attn: AttentionBlock | null, up: Upsample | null) {
    super();
    this.res = this.child('res', res);
    if (attn) this.attn = this.child('attn', attn);
    if (up) this.up = this.child('up', up);
  }

  forward(x: Tensor, emb: Tensor): Tensor {
    return tidy(() => {
      let h = this.res.forward(x, emb);
      if (this.attn) h = this.attn.forward(h);
      return this.up ? this.up.forward(h) : h;
    });
  }
}

/**
 * The U-Net. Parameter names: map_noise, map_layer0, map_layer1, map_label, conv_in,
 * enc.i (UNetBlock or Downsample), mid.0 (res + attn), mid.1, dec.i, out_norm, out_conv.
 *
 * Channel flow as ADM's UNetModel: every encoder output (conv_in's included) is kept
 * and concatenated onto the decoder input in reverse order, so the decoder has
 * numResBlocks + 1 blocks per level; out_conv is zero-initialized.
 *
 * @example
 *   const net = new UNet({ inChannels: 3, imageSize: 32, numClasses: 10 });
 *   net.forward(x, cNoise, labels);          // [B, 3, 32, 32] -> [B, 3, 32, 32]
 *   net.forward(x, cNoise);                  // unconditional: every label is net.nullClass (10)
 */
export class UNet extends Module {
  readonly config: UNetConfig;
  map_noise: SinusoidalEmbedding | FourierFeatures;
  map_layer0: Linear;
  map_layer1: Linear;
  map_label: Embedding | null = null;
  /** The guidance-weight embedding (config.guidanceEmbedding): sinusoids of w, then two layers. */
  map_guidance: SinusoidalEmbedding | null = null;
  map_guidance0: Linear | null = null;
  map_guidance1: Linear | null = null;
  /** The augmentation-level embedding (config.augEmbedding): sinusoids of 1000 s, then two layers. */
  map_aug: SinusoidalEmbedding | null = null;
  map_aug0: Linear | null = null;
  map_aug1: Linear | null = null;
  /** SDXL's micro-conditioning embedding (config.microConditioning): sinusoids of (h, w, top, left), then two layers. */
  map_micro: SinusoidalEmbedding | null = null;
  map_micro0: Linear | null = null;
  map_micro1: Linear | null = null;
  conv_in: Conv2d;
  enc: (UNetBlock | Downsample)[];
  mid: UNetBlock[];
  dec: UNetBlock[];
  out_norm: GroupNorm32;
  out_conv: Conv2d;
  /** The generator of every dropout layer in the network (seed it for reproducible training). */
  readonly dropoutGenerator: Generator;

  constructor(config: Partial<UNetConfig> = {}, { generator, dropoutGenerator = new Generator(0) }: InitOptions & { dropoutGenerator?: Generator } = {}) {
    super();
    const c = (this.config = resolveUNetConfig(config));
    this.dropoutGenerator = dropoutGenerator;
    const C = c.modelChannels;
    const E = 4 * C; // ADM: time_embed_dim = 4 * model_channels
    const { groups } = c;
    // Ho et al. 2020, App. B: sinusoidal position embedding -> Linear -> SiLU -> Linear.
    this.map_noise = this.child('map_noise', noiseEmbedding(c.noiseEmbedding, C, { fourierScale: c.fourierScale, generator }));
    this.map_layer0 = this.child('map_layer0', new Linear(C, E, { generator }));
    this.map_layer1 = this.child('map_layer1', new Linear(E, E, { generator }));
    if (c.numClasses !== null) this.map_label = this.child('map_label', new Embedding(c.numClasses + 1, E, { generator }));

    const res = (i: number, o: number) => new ResBlock(i, o, E, { generator, groups, dropout: c.dropout, dropoutGenerator });
    const attn = (ch: number) => new AttentionBlock(ch, headsFor(c, ch), { generator, groups });
    this.conv_in = this.child('conv_in', new Conv2d(c.inChannels + (c.condChannels ?? 0), C * c.channelMult[0], 3, { padding: 1, generator }));
    let ch = C * c.channelMult[0];
    const skips = [ch];
    const enc: (UNetBlock | Downsample)[] = [];
    c.channelMult.forEach((mult, level) => {
      for (let k = 0; k < c.numResBlocks; k++) {
        enc.push(new UNetBlock(res(ch, C * mult), attentionAt(c, level) ? attn(C * mult) : null, null));
        ch = C * mult;
        skips.push(ch);
      }
      if (level < c.channelMult.length - 1) {
        enc.push(new Downsample(ch, { mode: c.resample, generator }));
        skips.push(ch);
      }
    });
    this.enc = this.children('enc', enc);
    this.mid = this.children('mid', [new UNetBlock(res(ch, ch), c.midAttention ? attn(ch) : null, null), new UNetBlock(res(ch, ch), null, null)]);
    const dec: UNetBlock[] = [];
    [...c.channelMult.entries()].reverse().forEach(([level, mult]) => {
      for (let k = 0; k <= c.numResBlocks; k++) {
        const up = level > 0 && k === c.numResBlocks ? new Upsample(C * mult, { withConv: c.resample === 'conv', generator }) : null;
        dec.push(new UNetBlock(res(ch + skips.pop()!, C * mult), attentionAt(c, level) ? attn(C * mult) : null, up));
        ch = C * mult;
      }
    });
    this.dec = this.children('dec', dec);
    this.out_norm = this.child('out_norm', new GroupNorm32(groups, ch));
    this.out_conv = this.child('out_conv', zeroInit(new Conv2d(ch, c.outChannels ?? c.inChannels, 3, { padding: 1, generator })));
    // Last, so a network without it draws its initial weights exactly as before; zero-initialized,
    // so a student built from a teacher's weights starts as the teacher at every w.
    if (c.guidanceEmbedding) {
      this.map_guidance = this.child('map_guidance', new SinusoidalEmbedding(C));
      this.map_guidance0 = this.child('map_guidance0', new Linear(C, E, { generator }));
      this.map_guidance1 = this.child('map_guidance1', zeroInit(new Linear(E, E, { generator })));
    }
    if (c.augEmbedding) {
      this.map_aug = this.child('map_aug', new SinusoidalEmbedding(C));
      this.map_aug0 = this.child('map_aug0', new Linear(C, E, { generator }));
      this.map_aug1 = this.child('map_aug1', new Linear(E, E, { generator }));
    }
    if (c.microConditioning) {
      this.map_micro = this.child('map_micro', new SinusoidalEmbedding(C));
      this.map_micro0 = this.child('map_micro0', new Linear(MICRO_VALUES * C, E, { generator }));
      this.map_micro1 = this.child('map_micro1', zeroInit(new Linear(E, E, { generator })));
    }
  }

  /** The class id that means "no label" (classifier-free guidance's unconditional branch); null without classes. */
  get nullClass(): number | null {
    return this.config.numClasses;
  }

  /**
   * x: [B, inChannels, H, W] with H and W multiples of 2^(levels-1); cNoise: [B] float
   * (the preconditioner's c_noise); classLabels: [B] int64 in [0, numClasses]
   * (default: the null class); guidance: [B] float guidance weights w, required by (and only
   * taken by) a network with guidanceEmbedding; lowRes: [B, condChannels, h, w], required by (and
   * only taken by) a network with condChannels; augLevel: [B] in [0, 1], required by a network with
   * augEmbedding; micro: [B, 4] (original h, w, crop top, left in pixels), required by a network
   * with microConditioning. Returns [B, outChannels, H, W].
   */
  forward(x: Tensor, cNoise: Tensor, classLabels?: Tensor, guidance?: Tensor, lowRes?: Tensor, augLevel?: Tensor, micro?: Tensor): Tensor {
    this.checkInput(x);
    return tidy(() => {
      const emb = this.embed(cNoise, classLabels, x, guidance, augLevel, micro); // [B, 4C]
      let h = this.conv_in.forward(this.withCondition(x, lowRes)); // [B, C mult_0, H, W]
      const skips = [h];
      for (const b of this.enc) {
        h = b instanceof Downsample ? b.forward(h) : b.forward(h, emb);
        skips.push(h);
      }
      for (const b of this.mid) h = b.forward(h, emb);
      for (const b of this.dec) h = b.forward(cat([h, skips.pop()!], 1), emb); // [B, ch + skip ch, h, w] in
      return this.out_conv.forward(this.out_norm.forward(h).silu()); // [B, outChannels, H, W]
    });
  }

  /**
   * The encoder's and middle's feature maps: the output of each level's last block (before its
   * downsampling), then the middle's, coarsest last. x and cNoise as in forward(). ADD's frozen
   * discriminator features (src/distillation/add.ts; Sauer et al. 2023 use DINOv2, the teacher's
   * own encoder stands in for it here).
   *
   * @example
   *   net.features(x, cNoise); // shipped model: [B, 16, 32, 32], [B, 32, 16, 16], [B, 32, 8, 8]
   */
  features(x: Tensor, cNoise: Tensor, classLabels?: Tensor, guidance?: Tensor): Tensor[] {
    this.checkInput(x);
    return tidy(() => {
      const emb = this.embed(cNoise, classLabels, x, guidance); // [B, 4C]
      let h = this.conv_in.forward(x);
      const out: Tensor[] = [];
      for (const b of this.enc) {
        if (b instanceof Downsample) out.push(h); // a level's last block
        h = b instanceof Downsample ? b.forward(h) : b.forward(h, emb);
      }
      for (const b of this.mid) h = b.forward(h, emb);
      out.push(h);
      return out;
    });
  }

  /** CDM Sec. 3: x with the low-resolution condition upsampled (bilinear) to its size concatenated, [B, inChannels + condChannels, H, W]. */
  withCondition(x: Tensor, lowRes: Tensor | undefined): Tensor {
    const k = this.config.condChannels ?? 0;
    if (k === 0) {
      if (lowRes !== undefined) throw new TypeError('UNet: a low-resolution condition was given, but this network takes none (condChannels is 0)');
      return x;
    }
    if (lowRes === undefined) throw new TypeError(`UNet: this network is a super-resolution stage: pass the low-resolution image (cond.lowRes), [B, ${k}, h, w]`);
    if (lowRes.ndim !== 4 || lowRes.dim(0) !== x.dim(0) || lowRes.dim(1) !== k)
      throw new TypeError(`UNet: lowRes must have shape [${x.dim(0)}, ${k}, h, w], got [${lowRes.shape.join(', ')}]`);
    return tidy(() => {
      const same = lowRes.dim(2) === x.dim(2) && lowRes.dim(3) === x.dim(3);
      const up = same ? lowRes : F.interpolate(lowRes, { size: [x.dim(2), x.dim(3)], mode: 'bilinear' }); // [B, k, H, W]
      return cat([x, up.to({ dtype: x.dtype })], 1);
    });
  }

  /** The conditioning vector: MLP(embedding(c_noise)) + class embedding (+ guidance and augmentation-level embeddings). [B, 4C]. */
  embed(cNoise: Tensor, classLabels: Tensor | undefined, x: Tensor, guidance?: Tensor, augLevel?: Tensor, micro?: Tensor): Tensor {
    return tidy(() => {
      const B = x.dim(0);
      const c = checkNoiseLevel(cNoise, B, 'UNet');
      const labels = classLabelsOrNull(classLabels, this.config.numClasses, B, x.device, 'UNet');
      // The embedding is computed in float32; cast to the weights' dtype (float64 for gradcheck, ...).
      const dtype = this.map_layer0.weight.dtype;
      const phi = this.map_noise.forward(c).to({ dtype }); // [B, C]
      let emb = this.map_layer1.forward(this.map_layer0.forward(phi).silu()); // [B, 4C]
      if (this.map_label && labels) emb = emb.add(this.map_label.forward(labels));
      emb = this.#addAugLevel(emb, augLevel, B);
      emb = this.#addMicro(emb, micro, B);
      if (!this.map_guidance) {
        if (guidance !== undefined) throw new TypeError('UNet: a guidance weight was given, but this network does not embed one (guidanceEmbedding is off)');
        return emb;
      }
      if (guidance === undefined) throw new TypeError('UNet: this network embeds the guidance weight w (guidanceEmbedding): pass it, [B] floats (cond.guidance)');
      const w = checkNoiseLevel(guidance, B, 'UNet (guidance)');
      const psi = this.map_guidance.forward(w).to({ dtype }); // [B, C]
      return emb.add(this.map_guidance1!.forward(this.map_guidance0!.forward(psi).silu())); // Meng et al. 2023: w's embedding added to the noise embedding
    });
  }

  /** SDXL Sec. 2.2: Fourier features of (h, w, top, left), concatenated, through two layers, added to the noise embedding. */
  #addMicro(emb: Tensor, micro: Tensor | undefined, B: number): Tensor {
    if (!this.map_micro) {
      if (micro !== undefined) throw new TypeError('UNet: micro-conditioning values were given, but this network does not embed them (microConditioning is off)');
      return emb;
    }
    if (micro === undefined) throw new TypeError('UNet: this network embeds the original size and crop (microConditioning): pass them, [B, 4] floats (h, w, top, left) in pixels (cond.micro)');
    if (micro.ndim !== 2 || micro.dim(0) !== B || micro.dim(1) !== MICRO_VALUES) throw new TypeError(`UNet: micro must have shape [${B}, ${MICRO_VALUES}] (h, w, top, left), got [${micro.shape.join(', ')}]`);
    return tidy(() => {
      const psi = this.map_micro!.forward(micro.reshape([-1])).reshape([B, -1]).to({ dtype: emb.dtype }); // [B, 4C]
      return emb.add(this.map_micro1!.forward(this.map_micro0!.forward(psi).silu()));
    });
  }

  /** CDM Sec. 4.2: the augmentation level s as a second noise embedding, added to the first. */
  #addAugLevel(emb: Tensor, augLevel: Tensor | undefined, B: number): Tensor {
    if (!this.map_aug) {
      if (augLevel !== undefined) throw new TypeError('UNet: an augmentation level was given, but this network does not embed one (augEmbedding is off)');
      return emb;
    }
    if (augLevel === undefined) throw new TypeError('UNet: this network embeds the augmentation level s of its low-resolution condition (augEmbedding): pass it, [B] floats in [0, 1] (cond.augLevel)');
    return tidy(() => {
      const s = checkNoiseLevel(augLevel, B, 'UNet (augLevel)');
      const psi = this.map_aug!.forward(s.mul(1000)).to({ dtype: emb.dtype }); // [B, C]: s on DDPM's timestep scale
      return emb.add(this.map_aug1!.forward(this.map_aug0!.forward(psi).silu()));
    });
  }

  private checkInput(x: Tensor): void {
    const { inChannels } = this.config;
    if (x.ndim !== 4 || x.dim(1) !== inChannels)
      throw new TypeError(`UNet: x must have shape [B, ${inChannels}, H, W], got [${x.shape.join(', ')}]`);
    const f = downsamplingFactor(this.config);
    const [H, W] = [x.dim(2), x.dim(3)];
    if (H % f || W % f || H === 0 || W === 0)
      throw new TypeError(
        `UNet: input size ${H}x${W} is not divisible by ${f} (2^(levels-1) with ${this.config.channelMult.length} levels); pad or resize it to a multiple of ${f}`,
      );
  }
}
