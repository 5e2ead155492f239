/**
 * The basic layers, with PyTorch's parameter names, shapes and default
 * initializations (so their state dicts load into torch.nn and back).
 *
 * @example
 *   const conv = new Conv2d(3, 64, 3, { padding: 1 });
 *   const norm = new GroupNorm(32, 64);
 *   const y = norm.forward(conv.forward(x)).silu();
 */
import { zeros, ones } from '../engine/create';
import * as F from '../engine/functional';
import { Generator } from '../engine/random';
import { Tensor } from '../engine/tensor';
import { initGenerator, kaimingUniform, normal } from './init';
import { Module } from './module';

type Pair = number | [number, number];
const prod = (p: Pair) => (typeof p === 'number' ? p * p : p[0] * p[1]);
const positive = (layer: string, name: string, v: number) => {
  if (!Number.isSafeInteger(v) || v < 1) throw new TypeError(`${layer}: ${name} must be a positive integer, got ${v}`);
};

export interface InitOptions {
  /** Generator for the initial weights (default: the shared init generator). */
  generator?: Generator;
}

/**
 * Something added to a Linear's or Conv2d's output, y = layer(x) + delta(x): LoRA's
 * low-rank update (src/nn/lora.ts). `apply` returns y itself when it adds nothing (merged).
 */
export interface LayerAdapter {
  apply(x: Tensor, y: Tensor): Tensor;
}

/** y = x W^T + b; weight [out, in]. */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  /** An adapter added to the output (LoRA), or null. */
  adapter: LayerAdapter | null = null;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    { bias = true, generator = initGenerator() }: InitOptions & { bias?: boolean } = {},
  ) {
    super();
    positive('Linear', 'inFeatures', inFeatures);
    positive('Linear', 'outFeatures', outFeatures);
    this.weight = this.param('weight', kaimingUniform([outFeatures, inFeatures], inFeatures, generator));
    this.bias = bias ? this.param('bias', kaimingUniform([outFeatures], inFeatures, generator)) : null;
  }
  forward(x: Tensor): Tensor {
    const y = F.linear(x, this.weight, this.bias);
    return this.adapter ? this.adapter.apply(x, y) : y;
  }
}

export interface ConvOptions extends InitOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  groups?: number;
  bias?: boolean;
}

/** 2-D convolution; weight [out, in/groups, kh, kw]. */
export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly opts: F.Conv2dOptions;
  /** An adapter added to the output (LoRA), or null. */
  adapter: LayerAdapter | null = null;
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    kernel: Pair,
    o: ConvOptions = {},
  ) {
    super();
    const groups = o.groups ?? 1;
    positive('Conv2d', 'inChannels', inChannels);
    positive('Conv2d', 'outChannels', outChannels);
    if (inChannels % groups || outChannels % groups) throw new TypeError(`Conv2d: channels (${inChannels} -> ${outChannels}) must be divisible by groups (${groups})`);
    const k = typeof kernel === 'number' ? [kernel, kernel] : kernel;
    const fanIn = (inChannels / groups) * prod(kernel);
    const gen = o.generator ?? initGenerator();
    this.weight = this.param('weight', kaimingUniform([outChannels, inChannels / groups, k[0], k[1]], fanIn, gen));
    this.bias = (o.bias ?? true) ? this.param('bias', kaimingUniform([outChannels], fanIn, gen)) : null;
    this.opts = { stride: o.stride ?? 1, padding: o.padding ?? 0, dilation: o.dilation ?? 1, groups };
  }
  forward(x: Tensor): Tensor {
    const y = F.conv2d(x, this.weight, { ...this.opts, bias: this.bias });
    return this.adapter ? this.adapter.apply(x, y) : y;
  }
}

/** Transposed 2-D convolution; weight [in, out/groups, kh, kw]. */
export class ConvTranspose2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly opts: F.ConvTranspose2dOptions;
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    kernel: Pair,
    o: ConvOptions & { outputPadding?: Pair } = {},
  ) {
    super();
    const groups = o.groups ?? 1;
    if (inChannels % groups || outChannels % groups) throw new TypeError(`ConvTranspose2d: channels (${inChannels} -> ${outChannels}) must be divisible by groups (${groups})`);
    const k = typeof kernel === 'number' ? [kernel, kernel] : kernel;
    // PyTorch computes fan_in from weight dim 1 (out/groups) for transposed convs.
    const fanIn = (outChannels / groups) * prod(kernel);
    const gen = o.generator ?? initGenerator();
    this.weight = this.param('weight', kaimingUniform([inChannels, outChannels / groups, k[0], k[1]], fanIn, gen));
    this.bias = (o.bias ?? true) ? this.param('bias', kaimingUniform([outChannels], fanIn, gen)) : null;
    this.opts = { stride: o.stride ?? 1, padding: o.padding ?? 0, dilation: o.dilation ?? 1, groups, outputPadding: o.outputPadding ?? 0 };
  }
  forward(x: Tensor): Tensor {
    return F.convTranspose2d(x, this.weight, { ...this.opts, bias: this.bias });
  }
}

/** Group normalization (Wu & He 2018) with a per-channel affine. */
export class GroupNorm extends Module {
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(
    readonly groups: number,
    readonly channels: number,
    { eps = 1e-5, affine = true }: { eps?: number; affine?: boolean } = {},
  ) {
    super();
    if (channels % groups) throw new TypeError(`GroupNorm: channels (${channels}) must be divisible by groups (${groups})`);
    this.eps = eps;
    this.weight = affine ? this.param('weight', ones([channels])) : null;
    this.bias = affine ? this.param('bias', zeros([channels])) : null;
  }
  readonly eps: number;
  forward(x: Tensor): Tensor {
    return F.groupNorm(x, this.groups, { weight: this.weight, bias: this.bias, eps: this.eps });
  }
}

/** Layer normalization over the trailing dims. */
export class LayerNorm extends Module {
  weight: Tensor | null;
  bias: Tensor | null;
  readonly shape: number[];
  constructor(shape: number | number[], { eps = 1e-5, affine = true }: { eps?: number; affine?: boolean } = {}) {
    super();
    this.shape = typeof shape === 'number' ? [shape] : shape;
    this.eps = eps;
    this.weight = affine ? this.param('weight', ones(this.shape)) : null;
    this.bias = affine ? this.param('bias', zeros(this.shape)) : null;
  }
  readonly eps: number;
  forward(x: Tensor): Tensor {
    return F.layerNorm(x, this.shape, { weight: this.weight, bias: this.bias, eps: this.eps });
  }
}

/** Dropout, active in training mode; its randomness comes from `generator`. */
export class Dropout extends Module {
  constructor(
    readonly p: number,
    public generator: Generator = new Generator(0),
  ) {
    super();
    if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout: p must be in [0, 1), got ${p}`);
  }
  forward(x: Tensor): Tensor {
    return F.dropout(x, this.p, { training: this.training, generator: this.generator });
  }
}

/** A lookup table of `count` vectors of size `dim` (init N(0, 1) as PyTorch). */
export class Embedding extends Module {
  weight: Tensor;
  constructor(
    readonly count: number,
    readonly dim: number,
    { generator = initGenerator() }: InitOptions = {},
  ) {
    super();
    positive('Embedding', 'count', count);
    positive('Embedding', 'dim', dim);
    this.weight = this.param('weight', normal([count, dim], 1, generator));
  }
  forward(indices: Tensor): Tensor {
    return F.embedding(this.weight, indices);
  }
}

export class SiLU extends Module {
  forward(x: Tensor): Tensor {
    return x.silu();
  }
}

export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') {
    super();
  }
  forward(x: Tensor): Tensor {
    return x.gelu(this.approximate);
  }
}
