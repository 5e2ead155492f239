/**
 * EDM2's magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and Improving the
 * Training Dynamics of Diffusion Models", arXiv 2312.02696, CONFIG G / Figure 21): every
 * layer keeps unit expected magnitude — forced weight normalization, no biases, no
 * normalization layers, mp_silu, mp_sum, mp_cat, magnitude-preserving Fourier features.
 * Parameter names follow NVlabs/edm2 `training/networks_edm2.py` (`UNet`), so a state dict
 * reads the same in both (e.g. `enc.32x32_block0.conv_res0.weight`); the uncertainty head of
 * EDM2's `Precond` (`logvar_fourier`, `logvar_linear`) lives here too, see `logvar()`.
 *
 * @example
 *   const net = new EDM2UNet({ imgResolution: 32, imgChannels: 3, labelDim: 10, modelChannels: 64 });
 *   const Fx = net.forward(x, sigma.log().div(4), labels);   // x [B, 3, 32, 32], labels int64 [B]
 *   const u = net.logvar(sigma.log().div(4));                 // [B, 1, 1, 1], u(sigma) of Eq. 21
 */
import { cat, eye, onesLike, zeros } from '../engine/create';
import * as F from '../engine/functional';
import { Generator } from '../engine/random';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { initGenerator, normal } from '../nn/init';
import { Module } from '../nn/module';

// ---- magnitude-preserving functions ----

/** float32 for the magnitude arithmetic (float64 stays float64, for gradcheck). */
const wide = (x: Tensor): Tensor => (x.dtype === 'float64' ? x : x.float());
const allButFirst = (x: Tensor): number[] => Array.from({ length: x.ndim - 1 }, (_, i) => i + 1);

/**
 * Scales each slice to unit magnitude (RMS 1) over `dims` (default: all but the first):
 * x / (eps + ||x|| / sqrt(N)), N the slice size. Over a weight's input dims this is forced
 * weight normalization (Eq. 66); over channels it is pixel norm.
 *
 * @example
 *   normalize(w);        // w [Cout, Cin, 3, 3]: every w[i] has norm sqrt(Cin * 9)
 *   normalize(x, 1);     // x [B, C, H, W]: every pixel's channel vector has norm sqrt(C)
 */
export function normalize(x: Tensor, dims?: number | number[], eps = 1e-4): Tensor {
  return tidy(() => {
    const d = dims === undefined ? allButFirst(x) : ([] as number[]).concat(dims);
    const n = d.reduce((s, i) => s * x.dim(i), 1);
    const norm = wide(x).norm(2, d, true).mul(1 / Math.sqrt(n)).add(eps); // [.., 1, ..]
    return x.div(norm.to(x.dtype));
  });
}

/**
 * Magnitude-preserving SiLU (Eq. 81): silu(x) / 0.596, unit second moment for x ~ N(0, 1).
 *
 * @example
 *   mpSilu(g.randn([1e6])).square().mean(); // ~1
 */
export function mpSilu(x: Tensor): Tensor {
  return tidy(() => x.silu().div(0.596));
}

/**
 * Magnitude-preserving sum (Eq. 88): lerp(a, b, t) / sqrt((1 - t)^2 + t^2), unit variance
 * for uncorrelated unit-variance a and b; t = 0 is a, t = 1 is b.
 *
 * @example
 *   mpSum(main, residual, 0.3); // EDM2's residual balance
 */
export function mpSum(a: Tensor, b: Tensor, t = 0.5): Tensor {
  return tidy(() => a.lerp(b, t).div(Math.sqrt((1 - t) ** 2 + t ** 2)));
}

/**
 * Magnitude-preserving concatenation (Eq. 103): scales a and b so that the result has unit
 * magnitude and b's share of it is t, whatever their channel counts Na, Nb.
 *
 * @example
 *   mpCat(x, skip, { t: 0.5 }); // [B, Na + Nb, H, W], EDM2's decoder skip connection
 */
export function mpCat(a: Tensor, b: Tensor, { dim = 1, t = 0.5 }: { dim?: number; t?: number } = {}): Tensor {
  return tidy(() => {
    const [na, nb] = [a.dim(dim), b.dim(dim)];
    const C = Math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2));
    return cat([a.mul((C / Math.sqrt(na)) * (1 - t)), b.mul((C / Math.sqrt(nb)) * t)], dim);
  });
}

/**
 * The magnitude-preserving effective weight (Eq. 47 with Eq. 66): normalize(w) * gain / sqrt(fan_in),
 * so every output channel has norm |gain| and unit-magnitude inputs give outputs of magnitude |gain|.
 *
 * @example
 *   mpWeight(conv.weight, 1); // [Cout, Cin, k, k], each w[i] of unit norm
 */
export function mpWeight(w: Tensor, gain: number | Tensor = 1): Tensor {
  return tidy(() => {
    const fanIn = w.size / w.dim(0);
    const scale = gain instanceof Tensor ? gain.div(Math.sqrt(fanIn)) : gain / Math.sqrt(fanIn);
    return normalize(w).mul(scale);
  });
}

/** Resampling by 2 with EDM2's [1, 1] filter: a 2x2 box down (average), nearest up (Figure 21). */
export type ResampleMode = 'keep' | 'down' | 'up';
function resample(x: Tensor, mode: ResampleMode): Tensor {
  if (mode === 'keep') return x;
  return mode === 'down' ? F.avgPool2d(x, 2) : F.interpolate(x, { scaleFactor: 2, mode: 'nearest' });
}

// ---- layers ----

/**
 * Magnitude-preserving Fourier features (Eq. 75): sqrt(2) cos(2 pi (f x + phi)), f ~ N(0, 1),
 * phi ~ U[0, 1), fixed buffers `freqs` (2 pi f) and `phases` (2 pi phi); unit magnitude for any x.
 *
 * @example
 *   new MPFourier(192).forward(cNoise); // [B] -> [B, 192]
 */
export class MPFourier extends Module {
  freqs: Tensor;
  phases: Tensor;
  constructor(readonly channels: number, { bandwidth = 1, generator = initGenerator() }: { bandwidth?: number; generator?: Generator } = {}) {
    super();
    positiveInt('MPFourier', 'channels', channels);
    this.freqs = this.buffer('freqs', normal([channels], 2 * Math.PI * bandwidth, generator));
    this.phases = this.buffer('phases', tidy(() => generator.rand([channels]).mul(2 * Math.PI)));
  }
  /** x [B] -> [B, channels] */
  forward(x: Tensor): Tensor {
    if (x.ndim !== 1) throw new TypeError(`MPFourier: input must be 1-D [B], got shape [${x.shape.join(', ')}]`);
    return tidy(() => wide(x).unsqueeze(1).mul(this.freqs.unsqueeze(0)).add(this.phases).cos().mul(Math.SQRT2));
  }
}

/**
 * Magnitude-preserving convolution or linear layer (Eq. 47), no bias, weight ~ N(0, 1)
 * [out, in, ...kernel]. In training mode the stored weight is first re-normalized in place
 * (forced weight normalization, Eq. 66; without gradient), then normalized again inside the
 * graph, so the optimizer's updates never change the weight's norm. Like EDM2's MPConv, a
 * training-mode forward must be followed by its backward before the next training-mode
 * forward through the same layer (the in-place update invalidates saved tensors).
 *
 * @example
 *   const conv = new MPConv(64, 128, [3, 3]);   // 3x3, 'same' padding
 *   const lin = new MPConv(256, 512, []);       // fully connected
 *   conv.forward(x);                            // [B, 64, H, W] -> [B, 128, H, W]
 *   lin.forward(emb, gainParam);                // outputs scaled by a learned gain
 */
export class MPConv extends Module {
  weight: Tensor;
  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernel: [] | [number, number], { generator = initGenerator() }: { generator?: Generator } = {}) {
    super();
    positiveInt('MPConv', 'inChannels', inChannels);
    positiveInt('MPConv', 'outChannels', outChannels);
    if (kernel.length !== 0 && !(kernel.length === 2 && kernel.every((k) => Number.isSafeInteger(k) && k >= 1 && k % 2 === 1)))
      throw new TypeError(`MPConv: kernel must be [] (linear) or [kh, kw] of odd positive integers, got ${JSON.stringify(kernel)}`);
    this.weight = this.param('weight', normal([outChannels, inChannels, ...kernel], 1, generator));
  }
  /** x [B, in] (linear) or [B, in, H, W] (conv) -> out channels, scaled by `gain`. */
  forward(x: Tensor, gain: number | Tensor = 1): Tensor {
    return tidy(() => {
      const w = wide(this.weight); // the weight itself when float32/float64, so the update below is seen
      if (this.training) noGrad(() => this.weight.copy_(normalize(w))); // forced weight normalization (Eq. 66)
      const wx = mpWeight(w, gain).to(x.dtype); // [out, in, ...kernel]
      if (this.kernel.length === 0) return F.linear(x, wx); // x w^T
      return F.conv2d(x, wx, { padding: [this.kernel[0] >> 1, this.kernel[1] >> 1] });
    });
  }
}

export interface BlockOptions {
  /** 'enc': skip conv + pixel norm before the residual branch; 'dec': skip conv after it. */
  flavor?: 'enc' | 'dec';
  resample?: ResampleMode;
  /** Self-attention after the residual branch (default false). */
  attention?: boolean;
  /** Channels per attention head (default 64). */
  channelsPerHead?: number;
  /** Dropout probability in the residual branch (default 0). */
  dropout?: number;
  /** Balance between main (0) and residual (1) branch (default 0.3). */
  resBalance?: number;
  /** Balance between main (0) and attention (1) branch (default 0.3). */
  attnBalance?: number;
  /** Clip output activations to [-clipAct, clipAct]; null = no clip (default 256). */
  clipAct?: number | null;
  /** Initial weights (default: the shared init generator). */
  generator?: Generator;
  /** Randomness for dropout (default: Generator(0)). */
  dropoutGenerator?: Generator;
}

/**
 * EDM2's U-Net encoder/decoder block (Figure 21): resample, (enc) skip conv + pixel norm,
 * residual branch conv-silu-(x (1 + emb))-silu-conv joined with mp_sum (t = 0.3), then
 * optional cosine self-attention (pixel-normed q, k, v) joined with mp_sum, then clipping.
 *
 * @example
 *   const b = new Block(64, 128, 256, { flavor: 'enc', attention: true });
 *   b.forward(x, emb); // x [B, 64, H, W], emb [B, 256] -> [B, 128, H, W]
 */
export class Block extends Module {
  emb_gain: Tensor;
  conv_res0: MPConv;
  emb_linear: MPConv;
  conv_res1: MPConv;
  conv_skip: MPConv | null;
  attn_qkv: MPConv | null;
  attn_proj: MPConv | null;
  readonly flavor: 'enc' | 'dec';
  readonly resampleMode: ResampleMode;
  readonly numHeads: number;
  readonly dropout: number;
  readonly resBalance: number;
  readonly attnBalance: number;
  readonly clipAct: number | null;
  dropoutGenerator: Generator;

  constructor(readonly inChannels: number, readonly outChannels: number, readonly embChannels: number, o: BlockOptions = {}) {
    super();
    this.flavor = o.flavor ?? 'enc';
    this.resampleMode = o.resample ?? 'keep';
    if (this.flavor !== 'enc' && this.flavor !== 'dec') throw new TypeError(`Block: flavor must be enc or dec, got ${this.flavor}`);
    if (!['keep', 'down', 'up'].includes(this.resampleMode)) throw new TypeError(`Block: resample must be keep, down or up, got ${this.resampleMode}`);
    const cph = o.channelsPerHead ?? 64;
    positiveInt('Block', 'channelsPerHead', cph);
    if (o.attention && outChannels % cph)
      throw new TypeError(`Block: attention needs outChannels (${outChannels}) to be a multiple of channelsPerHead (${cph})`);
    this.numHeads = o.attention ? outChannels / cph : 0;
    this.dropout = unitInterval('Block', 'dropout', o.dropout ?? 0, true);
    this.resBalance = unitInterval('Block', 'resBalance', o.resBalance ?? 0.3);
    this.attnBalance = unitInterval('Block', 'attnBalance', o.attnBalance ?? 0.3);
    this.clipAct = o.clipAct === undefined ? 256 : o.clipAct;
    if (this.clipAct !== null && !(this.clipAct > 0)) throw new RangeError(`Block: clipAct must be positive or null, got ${this.clipAct}`);
    this.dropoutGenerator = o.dropoutGenerator ?? new Generator(0);
    const g = { generator: o.generator ?? initGenerator() };
    this.emb_gain = this.param('emb_gain', zeros([])); // zero init: c = 1 at start
    this.conv_res0 = this.child('conv_res0', new MPConv(this.flavor === 'enc' ? outChannels : inChannels, outChannels, [3, 3], g));
    this.emb_linear = this.child('emb_linear', new MPConv(embChannels, outChannels, [], g));
    this.conv_res1 = this.child('conv_res1', new MPConv(outChannels, outChannels, [3, 3], g));
    this.conv_skip = inChannels !== outChannels ? this.child('conv_skip', new MPConv(inChannels, outChannels, [1, 1], g)) : null;
    this.attn_qkv = this.numHeads ? this.child('attn_qkv', new MPConv(outChannels, outChannels * 3, [1, 1], g)) : null;
    this.attn_proj = this.numHeads ? this.child('attn_proj', new MPConv(outChannels, outChannels, [1, 1], g)) : null;
  }

  /** x [B, in, H, W], emb [B, embChannels] -> [B, out, H', W'] */
  forward(x: Tensor, emb: Tensor): Tensor {
    return tidy(() => {
      // Main branch.
      x = resample(x, this.resampleMode);
      if (this.flavor === 'enc') {
        if (this.conv_skip) x = this.conv_skip.forward(x);
        x = normalize(x, 1); // pixel norm
      }
      // Residual branch; c = 1 + learned-gain projection of the embedding.
      let y = this.conv_res0.forward(mpSilu(x)); // [B, out, H, W]
      const c = this.emb_linear.forward(emb, this.emb_gain).add(1); // [B, out]
      y = mpSilu(y.mul(c.unsqueeze(2).unsqueeze(3).to(y.dtype)));
      if (this.training && this.dropout > 0) y = F.dropout(y, this.dropout, { generator: this.dropoutGenerator });
      y = this.conv_res1.forward(y);
      // Join the branches.
      if (this.flavor === 'dec' && this.conv_skip) x = this.conv_skip.forward(x);
      x = mpSum(x, y, this.resBalance);
      if (this.numHeads) x = mpSum(x, this.attention(x), this.attnBalance);
      return this.clipAct === null ? x : x.clamp(-this.clipAct, this.clipAct);
    });
  }

  /** Cosine self-attention: q, k, v pixel-normed per head, softmax(q^T k / sqrt(c)). */
  private attention(x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const c = C / this.numHeads;
    const qkv = this.attn_qkv!.forward(x).reshape([B, this.numHeads, c, 3, H * W]); // [B, heads, c, 3, HW]
    const [q, k, v] = normalize(qkv, 2).unbind(3); // pixel norm & split: [B, heads, c, HW] each
    const w = q.transpose(2, 3).matmul(k.div(Math.sqrt(c))).softmax(3); // [B, heads, HW_q, HW_k]
    const y = v.matmul(w.transpose(2, 3)); // [B, heads, c, HW_q]
    return this.attn_proj!.forward(y.reshape([B, C, H, W]));
  }
}

// ---- the network ----

/** EDM2 U-Net configuration; defaults are EDM2-S (ImageNet-512 latents: 64x64x4, labelDim 1000). */
export interface EDM2Config {
  /** Input height and width (must be divisible by 2^(levels - 1)). */
  imgResolution: number;
  /** Input (and output) channels. */
  imgChannels: number;
  /** Number of classes; 0 = unconditional (default 0). */
  labelDim?: number;
  /** Base channel count (default 192, EDM2-S). */
  modelChannels?: number;
  /** Channel multiplier per resolution level (default [1, 2, 3, 4]). */
  channelMult?: number[];
  /** Residual blocks per resolution in the encoder; the decoder has one more (default 3). */
  numBlocks?: number;
  /** Resolutions with self-attention (default [16, 8]); the innermost decoder block always has it. */
  attnResolutions?: number[];
  /** Balance between noise (0) and class (1) embedding (default 0.5). */
  labelBalance?: number;
  /** Balance between skip connection (0) and main path (1) in the decoder (default 0.5). */
  concatBalance?: number;
  /** Balance between main path (0) and residual branch (1) (default 0.3). */
  resBalance?: number;
  /** Balance between main path (0) and self-attention (1) (default 0.3). */
  attnBalance?: number;
  /** Channels per attention head (default 64). */
  channelsPerHead?: number;
  /** Clip block outputs to [-clipAct, clipAct]; null = no clip (default 256). */
  clipAct?: number | null;
  /** Dropout in the residual branches (default 0; EDM2 uses 0.1 for its larger models). */
  dropout?: number;
  /** Fourier channels of the uncertainty head u(sigma) (default 128). */
  logvarChannels?: number;
}

export type ResolvedEDM2Config = Required<EDM2Config>;

/** The documented defaults (EDM2-S) of every field but the input's shape. */
export const EDM2_DEFAULTS: Readonly<Omit<ResolvedEDM2Config, 'imgResolution' | 'imgChannels'>> = Object.freeze({
  labelDim: 0,
  modelChannels: 192,
  channelMult: [1, 2, 3, 4],
  numBlocks: 3,
  attnResolutions: [16, 8],
  labelBalance: 0.5,
  concatBalance: 0.5,
  resBalance: 0.3,
  attnBalance: 0.3,
  channelsPerHead: 64,
  clipAct: 256,
  dropout: 0,
  logvarChannels: 128,
});

/** Fills in defaults and checks the configuration; every mistake names the field. */
export function resolveEDM2Config(config: EDM2Config): ResolvedEDM2Config {
  const c: ResolvedEDM2Config = { ...EDM2_DEFAULTS, ...(Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)) as EDM2Config) };
  const where = 'EDM2UNet config';
  positiveInt(where, 'imgResolution', c.imgResolution);
  positiveInt(where, 'imgChannels', c.imgChannels);
  if (!Number.isSafeInteger(c.labelDim) || c.labelDim < 0) throw new TypeError(`${where}: labelDim must be a non-negative integer, got ${c.labelDim}`);
  positiveInt(where, 'modelChannels', c.modelChannels);
  if (!Array.isArray(c.channelMult) || c.channelMult.length === 0) throw new TypeError(`${where}: channelMult must be a non-empty array, got ${JSON.stringify(c.channelMult)}`);
  c.channelMult.forEach((m) => positiveInt(where, 'channelMult entries', m));
  if (!Number.isSafeInteger(c.numBlocks) || c.numBlocks < 0) throw new TypeError(`${where}: numBlocks must be a non-negative integer, got ${c.numBlocks}`);
  const down = 2 ** (c.channelMult.length - 1);
  if (c.imgResolution % down)
    throw new TypeError(`${where}: imgResolution (${c.imgResolution}) must be divisible by 2^(levels - 1) = ${down} for ${c.channelMult.length} levels`);
  const resolutions = c.channelMult.map((_, level) => c.imgResolution >> level);
  for (const r of c.attnResolutions)
    if (!resolutions.includes(r)) throw new TypeError(`${where}: attnResolutions entry ${r} is not one of the U-Net's resolutions [${resolutions.join(', ')}]`);
  positiveInt(where, 'channelsPerHead', c.channelsPerHead);
  c.channelMult.forEach((m, level) => {
    const attn = c.attnResolutions.includes(resolutions[level]) || level === c.channelMult.length - 1;
    if (attn && (c.modelChannels * m) % c.channelsPerHead)
      throw new TypeError(`${where}: ${c.modelChannels * m} channels at ${resolutions[level]}x${resolutions[level]} (with attention) are not a multiple of channelsPerHead (${c.channelsPerHead})`);
  });
  for (const k of ['labelBalance', 'concatBalance', 'resBalance', 'attnBalance'] as const) unitInterval(where, k, c[k]);
  unitInterval(where, 'dropout', c.dropout, true);
  if (c.clipAct !== null && !(c.clipAct > 0)) throw new RangeError(`${where}: clipAct must be positive or null, got ${c.clipAct}`);
  positiveInt(where, 'logvarChannels', c.logvarChannels);
  return c;
}

/**
 * EDM2's magnitude-preserving U-Net (Figure 21): returns the raw network output F_x; the
 * EDM preconditioning (c_skip, c_out, c_in, c_noise = ln(sigma) / 4) is applied outside.
 *
 * State-dict names are those of networks_edm2.py's `UNet`; an EDM2 `Precond` checkpoint maps
 * onto this module by dropping the `unet.` prefix (`logvar_*` names are the same in both).
 *
 * @example
 *   const net = new EDM2UNet({ imgResolution: 16, imgChannels: 2, labelDim: 3, modelChannels: 16, channelMult: [1, 2], numBlocks: 1, attnResolutions: [8], channelsPerHead: 16 });
 *   const Fx = net.forward(x, cNoise, tensor([0, 2, 3], { dtype: 'int64' })); // 3 = labelDim: the null class
 *   const u = net.logvar(cNoise);                                               // [B, 1, 1, 1]
 */
export class EDM2UNet extends Module {
  out_gain: Tensor;
  emb_fourier: MPFourier;
  emb_noise: MPConv;
  emb_label: MPConv | null;
  /** Encoder layers in order, by their names under `enc.` (e.g. '16x16_conv', '8x8_down'). */
  readonly enc = new Map<string, MPConv | Block>();
  /** Decoder blocks in order, by their names under `dec.` (e.g. '8x8_in0', '16x16_block1'). */
  readonly dec = new Map<string, Block>();
  out_conv: MPConv;
  logvar_fourier: MPFourier;
  logvar_linear: MPConv;
  readonly config: ResolvedEDM2Config;

  constructor(config: EDM2Config, { generator = initGenerator(), dropoutGenerator = new Generator(0) }: { generator?: Generator; dropoutGenerator?: Generator } = {}) {
    super();
    const c = (this.config = resolveEDM2Config(config));
    const g = { generator };
    const cblock = c.channelMult.map((m) => c.modelChannels * m);
    const [cnoise, cemb] = [cblock[0], Math.max(...cblock)];
    const blockOpts: BlockOptions = {
      channelsPerHead: c.channelsPerHead, dropout: c.dropout, resBalance: c.resBalance, attnBalance: c.attnBalance, clipAct: c.clipAct, generator, dropoutGenerator,
    };
    this.out_gain = this.param('out_gain', zeros([])); // zero init: F_x = 0 at start

    // Embedding.
    this.emb_fourier = this.child('emb_fourier', new MPFourier(cnoise, g));
    this.emb_noise = this.child('emb_noise', new MPConv(cnoise, cemb, [], g));
    this.emb_label = c.labelDim ? this.child('emb_label', new MPConv(c.labelDim, cemb, [], g)) : null;

    // Encoder: a conv at full resolution, a downsampling block at the others, then numBlocks blocks.
    const addEnc = (name: string, m: MPConv | Block) => this.enc.set(name, this.child(`enc.${name}`, m));
    let cout = c.imgChannels + 1; // + a constant channel of ones
    cblock.forEach((channels, level) => {
      const res = c.imgResolution >> level;
      if (level === 0) {
        addEnc(`${res}x${res}_conv`, new MPConv(cout, channels, [3, 3], g));
        cout = channels;
      } else addEnc(`${res}x${res}_down`, new Block(cout, cout, cemb, { ...blockOpts, flavor: 'enc', resample: 'down' }));
      for (let i = 0; i < c.numBlocks; i++) {
        addEnc(`${res}x${res}_block${i}`, new Block(cout, channels, cemb, { ...blockOpts, flavor: 'enc', attention: c.attnResolutions.includes(res) }));
        cout = channels;
      }
    });

    // Decoder: two blocks at the lowest resolution, an upsampling block at the others, then numBlocks + 1 blocks eating skips.
    const skips = [...this.enc.values()].map((m) => m.outChannels);
    [...cblock.entries()].reverse().forEach(([level, channels]) => {
      const res = c.imgResolution >> level;
      const dec = (name: string, cin: number, cOut: number, o: BlockOptions) =>
        this.dec.set(name, this.child(`dec.${name}`, new Block(cin, cOut, cemb, { ...blockOpts, flavor: 'dec', ...o })));
      if (level === cblock.length - 1) {
        dec(`${res}x${res}_in0`, cout, cout, { attention: true });
        dec(`${res}x${res}_in1`, cout, cout, {});
      } else dec(`${res}x${res}_up`, cout, cout, { resample: 'up' });
      for (let i = 0; i <= c.numBlocks; i++) {
        dec(`${res}x${res}_block${i}`, cout + skips.pop()!, channels, { attention: c.attnResolutions.includes(res) });
        cout = channels;
      }
    });
    this.out_conv = this.child('out_conv', new MPConv(cout, c.imgChannels, [3, 3], g));

    // Uncertainty head u(sigma) (EDM2 Eq. 21; `Precond.logvar_*` in networks_edm2.py).
    this.logvar_fourier = this.child('logvar_fourier', new MPFourier(c.logvarChannels, g));
    this.logvar_linear = this.child('logvar_linear', new MPConv(c.logvarChannels, 1, [], g));
  }

  /** The class id that means "no label" (a zero class embedding): labelDim; null when unconditional. */
  get nullClass(): number | null {
    return this.config.labelDim || null;
  }

  /**
   * The raw network output F_x [B, C, H, W] for x [B, C, H, W] and cNoise [B] (EDM: ln(sigma) / 4).
   * classLabels (when labelDim > 0): int64/int32 [B] in [0, labelDim], where labelDim is the null
   * class (a zero embedding, for classifier-free guidance), or float [B, labelDim] (one-hot or
   * soft); omitted = all null.
   */
  forward(x: Tensor, cNoise: Tensor, classLabels?: Tensor): Tensor {
    this.checkInputs(x, cNoise, classLabels);
    const c = this.config;
    return tidy(() => {
      // Embedding.
      let emb = this.emb_noise.forward(this.emb_fourier.forward(cNoise)); // [B, cemb]
      if (this.emb_label) {
        const labels = this.oneHot(classLabels, x); // [B, labelDim]
        emb = mpSum(emb, this.emb_label.forward(labels.mul(Math.sqrt(c.labelDim))), c.labelBalance);
      }
      emb = mpSilu(emb);

      // Encoder.
      let h = cat([x, onesLike(x.narrow(1, 0, 1))], 1); // [B, C + 1, H, W]
      const skips: Tensor[] = [];
      for (const m of this.enc.values()) {
        h = m instanceof MPConv ? m.forward(h) : m.forward(h, emb);
        skips.push(h);
      }

      // Decoder.
      for (const [name, block] of this.dec) {
        if (name.includes('block')) h = mpCat(h, skips.pop()!, { t: c.concatBalance }); // [B, C + Cskip, H, W]
        h = block.forward(h, emb);
      }
      return this.out_conv.forward(h, this.out_gain); // [B, C, H, W]
    });
  }

  /**
   * The learned uncertainty u(sigma) [B, 1, 1, 1] for cNoise [B] (EDM2 Eq. 21: the loss is
   * weighted L / e^u + u); a linear map of MP-Fourier features of cNoise.
   *
   * @example
   *   const u = net.logvar(sigma.log().div(4));
   *   const loss = weightedMse.div(u.exp()).add(u).mean();
   */
  logvar(cNoise: Tensor): Tensor {
    if (cNoise.ndim !== 1) throw new TypeError(`EDM2UNet.logvar: cNoise must be 1-D [B], got shape [${cNoise.shape.join(', ')}]`);
    return tidy(() => this.logvar_linear.forward(this.logvar_fourier.forward(cNoise)).reshape([-1, 1, 1, 1]));
  }

  /** Class labels as float rows: int labels through eye(labelDim + 1, labelDim), whose last row (the null class) is zero. */
  private oneHot(labels: Tensor | undefined, x: Tensor): Tensor {
    const n = this.config.labelDim;
    const opts = { dtype: x.dtype === 'float64' ? ('float64' as const) : ('float32' as const), device: x.device };
    if (labels === undefined) return zeros([x.dim(0), n], opts); // all null
    if (labels.ndim === 2) return labels.to(opts);
    return eye(n + 1, n, opts).indexSelect(0, labels.long());
  }

  private checkInputs(x: Tensor, cNoise: Tensor, labels: Tensor | undefined): void {
    const c = this.config;
    const where = 'EDM2UNet.forward';
    const shape = (t: Tensor) => `[${t.shape.join(', ')}]`;
    if (x.ndim !== 4 || x.dim(1) !== c.imgChannels)
      throw new TypeError(`${where}: x must be [B, ${c.imgChannels}, H, W], got ${shape(x)}`);
    const down = 2 ** (c.channelMult.length - 1);
    if (x.dim(2) % down || x.dim(3) % down || x.dim(2) === 0 || x.dim(3) === 0)
      throw new TypeError(`${where}: H and W must be positive multiples of ${down} (${c.channelMult.length} levels), got ${x.dim(2)}x${x.dim(3)}`);
    const B = x.dim(0);
    if (cNoise.ndim !== 1 || cNoise.dim(0) !== B) throw new TypeError(`${where}: cNoise must be [${B}] (one per sample), got ${shape(cNoise)}`);
    if (labels === undefined) return;
    if (c.labelDim === 0) throw new TypeError(`${where}: the network is unconditional (labelDim 0) but classLabels were given`);
    if (labels.dtype === 'int64' || labels.dtype === 'int32') {
      if (labels.ndim !== 1 || labels.dim(0) !== B) throw new TypeError(`${where}: integer classLabels must be [${B}], got ${shape(labels)}`);
      const [lo, hi] = noGrad(() => tidy(() => [labels.min().item(), labels.max().item()]));
      if (B > 0 && (lo < 0 || hi > c.labelDim))
        throw new RangeError(`${where}: class labels must be in [0, ${c.labelDim}] (${c.labelDim} = null class), got values in [${lo}, ${hi}]`);
    } else if (labels.ndim !== 2 || labels.dim(0) !== B || labels.dim(1) !== c.labelDim)
      throw new TypeError(`${where}: float classLabels must be [${B}, ${c.labelDim}] (one-hot), got ${shape(labels)} ${labels.dtype}`);
  }
}

// ---- argument checks ----

function positiveInt(where: string, name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 1) throw new TypeError(`${where}: ${name} must be a positive integer, got ${v}`);
}

function unitInterval(where: string, name: string, v: number, halfOpen = false): number {
  if (!(v >= 0 && (halfOpen ? v < 1 : v <= 1))) throw new RangeError(`${where}: ${name} must be in [0, 1${halfOpen ? ')' : ']'}, got ${v}`);
  return v;
}
