/**
 * The KL-regularized convolutional autoencoder of latent diffusion (Rombach et al. 2022,
 * "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3 and App. G; the
 * reference's ldm/modules/diffusionmodules/model.py Encoder/Decoder and AutoencoderKL),
 * at CPU size: an image x [B, 3, H, W] is encoded to a diagonal Gaussian posterior
 * q(z | x) = N(mean, exp(logvar)) over latents z [B, 4, H/f, W/f] (f = 4 or 8), a sample
 * z = mean + exp(logvar / 2) eps is decoded back to an image.
 *
 * Encoder: conv_in -> per level (numResBlocks residual blocks, then a strided conv down,
 * except at the last level) -> mid (block, self-attention, block) -> GroupNorm, SiLU, conv_out
 * to 2 x latentChannels -> quant_conv (1 x 1): mean and logvar. Decoder: post_quant_conv
 * (1 x 1) -> conv_in -> mid -> per level in reverse (numResBlocks + 1 blocks, then nearest x2
 * and a conv, except at level 0) -> GroupNorm, SiLU, conv_out. The residual block is the
 * reference's ResnetBlock without the time embedding: GN, SiLU, conv, GN, SiLU, conv, plus a
 * 1 x 1 shortcut when the width changes. (The reference pads right/bottom and convolves
 * without padding to downsample; here a padded stride-2 conv gives the same sizes.)
 *
 * @example
 *   const ae = new Autoencoder({ factor: 4 });                // 3 x 64 x 64 <-> 4 x 16 x 16
 *   const { mean, logvar } = ae.encode(x);                    // [B, 4, 16, 16] each
 *   const z = sampleLatent(mean, logvar, generator);          // reparameterized sample
 *   const xr = ae.decode(z);                                  // [B, 3, 64, 64]
 *   const kl = klDivergence(mean, logvar);                    // [B]: KL(q(z|x) || N(0, I))
 */
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conv2d, GroupNorm, InitOptions } from '../nn/layers';
import { Module } from '../nn/module';
import { Downsample, Upsample } from '../nn/resample';
import { positiveInt, rejectUnknownKeys } from './common';
import { AttentionBlock } from './unet';

export interface AutoencoderConfig {
  /** Image channels (3: RGB). Default 3. */
  inChannels: number;
  /** Latent channels (the reference's embed_dim; 4 as in LDM's KL-f4 and KL-f8). Default 4. */
  latentChannels: number;
  /** Downsampling factor f: 4 or 8 (levels = log2(f) + 1). Default 4. */
  factor: 4 | 8;
  /** Base width C; level i has C * channelMult[i] channels. Default 16. */
  channels: number;
  /** Width multiplier per level, log2(factor) + 1 of them (null: [1, 2, 4] for f = 4, [1, 2, 4, 4] for f = 8). Default null. */
  channelMult: number[] | null;
  /** Residual blocks per level in the encoder (the decoder has one more, as the reference). Default 1. */
  numResBlocks: number;
  /** GroupNorm groups; must divide every width. Default 8. */
  groups: number;
  /** Self-attention between the two middle blocks (as the reference). Default true. */
  midAttention: boolean;
}

export const AUTOENCODER_DEFAULTS: Readonly<AutoencoderConfig> = Object.freeze({
  inChannels: 3,
  latentChannels: 4,
  factor: 4,
  channels: 16,
  channelMult: null,
  numResBlocks: 1,
  groups: 8,
  midAttention: true,
});

/** The downsampling factors the model supports. */
export const AUTOENCODER_FACTORS: readonly number[] = [4, 8];

/**
 * Fills defaults (channelMult by factor) and checks every field; errors name the field and the value.
 *
 * @example
 *   resolveAutoencoderConfig({ factor: 8 }).channelMult // [1, 2, 4, 4]
 */
export function resolveAutoencoderConfig(config: Partial<AutoencoderConfig> = {}): AutoencoderConfig & { channelMult: number[] } {
  const who = 'Autoencoder';
  rejectUnknownKeys(who, config, AUTOENCODER_DEFAULTS);
  const c = { ...AUTOENCODER_DEFAULTS, ...config };
  if (!AUTOENCODER_FACTORS.includes(c.factor)) throw new RangeError(`${who}: factor must be 4 or 8, got ${JSON.stringify(c.factor)}`);
  for (const f of ['inChannels', 'latentChannels', 'channels', 'numResBlocks', 'groups'] as const) positiveInt(who, f, c[f]);
  if (typeof c.midAttention !== 'boolean') throw new TypeError(`${who}: midAttention must be true or false, got ${JSON.stringify(c.midAttention)}`);
  const levels = Math.log2(c.factor) + 1;
  const mult = c.channelMult ?? (c.factor === 4 ? [1, 2, 4] : [1, 2, 4, 4]);
  if (!Array.isArray(mult) || mult.length !== levels)
    throw new TypeError(`${who}: channelMult must list ${levels} multipliers for factor ${c.factor} (log2(factor) + 1 levels), got ${JSON.stringify(mult)}`);
  mult.forEach((m, i) => positiveInt(who, `channelMult[${i}]`, m));
  for (const m of mult)
    if ((c.channels * m) % c.groups) throw new TypeError(`${who}: groups (${c.groups}) must divide every level's width, but ${c.channels} x ${m} = ${c.channels * m} is not a multiple`);
  return { ...c, channelMult: [...mult] };
}

/** The reference's ResnetBlock without a time embedding: out = shortcut(x) + conv2(SiLU(GN(conv1(SiLU(GN(x)))))). */
export class AEResBlock extends Module {
  norm1: GroupNorm;
  conv1: Conv2d;
  norm2: GroupNorm;
  conv2: Conv2d;
  shortcut: Conv2d | null = null;
  constructor(inCh: number, outCh: number, { groups, generator }: InitOptions & { groups: number }) {
    super();
    this.norm1 = this.child('norm1', new GroupNorm(groups, inCh, { eps: 1e-6 }));
    this.conv1 = this.child('conv1', new Conv2d(inCh, outCh, 3, { padding: 1, generator }));
    this.norm2 = this.child('norm2', new GroupNorm(groups, outCh, { eps: 1e-6 }));
    this.conv2 = this.child('conv2', new Conv2d(outCh, outCh, 3, { padding: 1, generator }));
    if (inCh !== outCh) this.shortcut = this.child('shortcut', new Conv2d(inCh, outCh, 1, { generator }));
  }
  /** [B, Cin, H, W] -> [B, Cout, H, W]. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = this.conv1.forward(this.norm1.forward(x).silu());
      const out = this.conv2.forward(this.norm2.forward(h).silu());
      return (this.shortcut ? this.shortcut.forward(x) : x).add(out);
    });
  }
}

/** The middle of encoder and decoder: block, self-attention (one head), block. */
class MidBlock extends Module {
  block_1: AEResBlock;
  attn_1: AttentionBlock | null = null;
  block_2: AEResBlock;
  constructor(ch: number, o: InitOptions & { groups: number; attention: boolean }) {
    super();
    this.block_1 = this.child('block_1', new AEResBlock(ch, ch, o));
    if (o.attention) this.attn_1 = this.child('attn_1', new AttentionBlock(ch, 1, o));
    this.block_2 = this.child('block_2', new AEResBlock(ch, ch, o));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = this.block_1.forward(x);
      return this.block_2.forward(this.attn_1 ? this.attn_1.forward(h) : h);
    });
  }
}

/** x [B, inChannels, H, W] -> moments [B, 2 latentChannels, H/f, W/f] (before quant_conv). */
class Encoder extends Module {
  conv_in: Conv2d;
  blocks: AEResBlock[];
  down: Downsample[];
  mid: MidBlock;
  norm_out: GroupNorm;
  conv_out: Conv2d;
  readonly #perLevel: number;
  constructor(c: AutoencoderConfig & { channelMult: number[] }, generator: Generator) {
    super();
    const o = { groups: c.groups, generator };
    const widths = c.channelMult.map((m) => c.channels * m);
    this.conv_in = this.child('conv_in', new Conv2d(c.inChannels, c.channels, 3, { padding: 1, generator }));
    const blocks: AEResBlock[] = [];
    const down: Downsample[] = [];
    let ch = c.channels;
    widths.forEach((w, i) => {
      for (let b = 0; b < c.numResBlocks; b++, ch = w) blocks.push(new AEResBlock(ch, w, o));
      if (i < widths.length - 1) down.push(new Downsample(w, { mode: 'conv', generator }));
    });
    this.#perLevel = c.numResBlocks;
    this.blocks = this.children('blocks', blocks);
    this.down = this.children('down', down);
    this.mid = this.child('mid', new MidBlock(ch, { ...o, attention: c.midAttention }));
    this.norm_out = this.child('norm_out', new GroupNorm(c.groups, ch, { eps: 1e-6 }));
    this.conv_out = this.child('conv_out', new Conv2d(ch, 2 * c.latentChannels, 3, { padding: 1, generator }));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.conv_in.forward(x);
      this.blocks.forEach((b, k) => {
        h = b.forward(h);
        const level = Math.floor(k / this.#perLevel);
        if ((k + 1) % this.#perLevel === 0 && level < this.down.length) h = this.down[level].forward(h);
      });
      h = this.mid.forward(h);
      return this.conv_out.forward(this.norm_out.forward(h).silu());
    });
  }
}

/** z [B, latentChannels, h, w] (after post_quant_conv) -> x [B, inChannels, f h, f w]. */
class Decoder extends Module {
  conv_in: Conv2d;
  mid: MidBlock;
  blocks: AEResBlock[];
  up: Upsample[];
  norm_out: GroupNorm;
  conv_out: Conv2d;
  readonly #perLevel: number;
  constructor(c: AutoencoderConfig & { channelMult: number[] }, generator: Generator) {
    super();
    const o = { groups: c.groups, generator };
    const widths = c.channelMult.map((m) => c.channels * m).reverse(); // deepest first
    let ch = widths[0];
    this.conv_in = this.child('conv_in', new Conv2d(c.latentChannels, ch, 3, { padding: 1, generator }));
    this.mid = this.child('mid', new MidBlock(ch, { ...o, attention: c.midAttention }));
    const blocks: AEResBlock[] = [];
    const up: Upsample[] = [];
    widths.forEach((w, i) => {
      for (let b = 0; b < c.numResBlocks + 1; b++, ch = w) blocks.push(new AEResBlock(ch, w, o));
      if (i < widths.length - 1) up.push(new Upsample(w, { generator }));
    });
    this.#perLevel = c.numResBlocks + 1;
    this.blocks = this.children('blocks', blocks);
    this.up = this.children('up', up);
    this.norm_out = this.child('norm_out', new GroupNorm(c.groups, ch, { eps: 1e-6 }));
    this.conv_out = this.child('conv_out', new Conv2d(ch, c.inChannels, 3, { padding: 1, generator }));
  }
  forward(z: Tensor): Tensor {
    return tidy(() => {
      let h = this.mid.forward(this.conv_in.forward(z));
      this.blocks.forEach((b, k) => {
        h = b.forward(h);
        const level = Math.floor(k / this.#perLevel);
        if ((k + 1) % this.#perLevel === 0 && level < this.up.length) h = this.up[level].forward(h);
      });
      return this.conv_out.forward(this.norm_out.forward(h).silu());
    });
  }
}

/** The diagonal Gaussian posterior q(z | x): its mean and log-variance, [B, latentChannels, H/f, W/f] each. */
export interface Posterior {
  mean: Tensor;
  logvar: Tensor;
}

/** The autoencoder (see the module comment). */
export class Autoencoder extends Module {
  readonly config: AutoencoderConfig & { channelMult: number[] };
  encoder: Encoder;
  quant_conv: Conv2d;
  post_quant_conv: Conv2d;
  decoder: Decoder;

  constructor(config: Partial<AutoencoderConfig> = {}, { generator = new Generator(0) }: InitOptions = {}) {
    super();
    this.config = resolveAutoencoderConfig(config);
    const z = this.config.latentChannels;
    this.encoder = this.child('encoder', new Encoder(this.config, generator));
    this.quant_conv = this.child('quant_conv', new Conv2d(2 * z, 2 * z, 1, { generator }));
    this.post_quant_conv = this.child('post_quant_conv', new Conv2d(z, z, 1, { generator }));
    this.decoder = this.child('decoder', new Decoder(this.config, generator));
  }

  /** The downsampling factor f. */
  get factor(): number {
    return this.config.factor;
  }

  /** The decoder's last conv weight: where the adaptive GAN weight measures gradients (Esser et al. 2021, Eq. 7). */
  get lastLayerWeight(): Tensor {
    return this.decoder.conv_out.weight;
  }

  /** x [B, C, H, W] in [-1, 1] (H, W multiples of f) -> the posterior; logvar clamped to [-30, 20] as the reference. */
  encode(x: Tensor): Posterior {
    const { inChannels, factor } = this.config;
    if (x.ndim !== 4 || x.dim(1) !== inChannels) throw new TypeError(`Autoencoder.encode: x must have shape [B, ${inChannels}, H, W], got [${x.shape.join(', ')}]`);
    if (x.dim(2) % factor || x.dim(3) % factor) throw new TypeError(`Autoencoder.encode: H and W must be multiples of the factor ${factor}, got [${x.shape.join(', ')}]`);
    return tidy(() => {
      const [mean, logvar] = this.quant_conv.forward(this.encoder.forward(x)).chunk(2, 1);
      return { mean, logvar: logvar.clamp(-30, 20) };
    });
  }

  /** z [B, latentChannels, h, w] -> x [B, C, f h, f w] (unbounded; images are in [-1, 1]). */
  decode(z: Tensor): Tensor {
    const zc = this.config.latentChannels;
    if (z.ndim !== 4 || z.dim(1) !== zc) throw new TypeError(`Autoencoder.decode: z must have shape [B, ${zc}, h, w], got [${z.shape.join(', ')}]`);
    return tidy(() => this.decoder.forward(this.post_quant_conv.forward(z)));
  }

  /** Encode, draw z from the posterior (or take its mean with generator null), decode. */
  forward(x: Tensor, generator: Generator | null): { reconstruction: Tensor } & Posterior {
    return tidy(() => {
      const p = this.encode(x);
      const z = generator ? sampleLatent(p.mean, p.logvar, generator) : p.mean;
      return { reconstruction: this.decode(z), ...p };
    });
  }
}

/** The reparameterization trick (Kingma & Welling 2014, Eq. 10): z = mean + exp(logvar / 2) eps, eps ~ N(0, I). */
export function sampleLatent(mean: Tensor, logvar: Tensor, generator: Generator): Tensor {
  return tidy(() => mean.add(logvar.mul(0.5).exp().mul(generator.randnLike(mean))));
}

/** KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over the latent's elements: 1/2 sum(mean^2 + var - 1 - logvar) (Kingma & Welling 2014, App. B). [B]. */
export function klDivergence(mean: Tensor, logvar: Tensor): Tensor {
  return tidy(() => mean.square().add(logvar.exp()).sub(1).sub(logvar).sum([1, 2, 3]).mul(0.5));
}
