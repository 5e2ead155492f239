/**
 * The functional layers of neural networks (torch.nn.functional), over libtorch's
 * kernels. Options objects carry PyTorch's defaults; arguments are checked at this
 * edge so a mistake names the argument and its value.
 *
 * @example
 *   const y = conv2d(x, w, { bias: b, padding: 1 });          // [N, Cout, H, W]
 *   const h = groupNorm(y, 32, { weight: g, bias: beta });
 *   const a = scaledDotProductAttention(q, k, v);              // softmax(q k^T / sqrt(d)) v
 */
import { Generator } from './random';
import { native } from './native';
import { Tensor } from './tensor';

type Pair = number | [number, number];
const pair = (name: string, v: Pair): number[] => {
  const p = typeof v === 'number' ? [v, v] : v;
  if (p.length !== 2 || !p.every((x) => Number.isSafeInteger(x) && x >= 0)) throw new TypeError(`${name} must be a non-negative integer or a pair of them, got ${JSON.stringify(v)}`);
  return p;
};
const positive = (name: string, v: number) => {
  if (!Number.isSafeInteger(v) || v < 1) throw new TypeError(`${name} must be a positive integer, got ${v}`);
  return v;
};
const rank = (op: string, x: Tensor, n: number, layout: string) => {
  if (x.ndim !== n) throw new TypeError(`${op}: input must be ${n}-D ${layout}, got shape [${x.shape.join(', ')}]`);
};

/** y = x W^T + b (W: [out, in]). */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return new Tensor(native.linear(x.handle, weight.handle, bias?.handle ?? null));
}

export interface Conv2dOptions {
  bias?: Tensor | null;
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  groups?: number;
}

/** 2-D convolution of x [N, Cin, H, W] with weight [Cout, Cin/groups, kh, kw]. */
export function conv2d(x: Tensor, weight: Tensor, o: Conv2dOptions = {}): Tensor {
  rank('conv2d', x, 4, '[N, C, H, W]');
  return new Tensor(
    native.conv2d(
      x.handle,
      weight.handle,
      o.bias?.handle ?? null,
      pair('stride', o.stride ?? 1),
      pair('padding', o.padding ?? 0),
      pair('dilation', o.dilation ?? 1),
      positive('groups', o.groups ?? 1),
    ),
  );
}

export interface ConvTranspose2dOptions extends Conv2dOptions {
  outputPadding?: Pair;
}

/** Transposed 2-D convolution; weight [Cin, Cout/groups, kh, kw]. */
export function convTranspose2d(x: Tensor, weight: Tensor, o: ConvTranspose2dOptions = {}): Tensor {
  rank('convTranspose2d', x, 4, '[N, C, H, W]');
  return new Tensor(
    native.convTranspose2d(
      x.handle,
      weight.handle,
      o.bias?.handle ?? null,
      pair('stride', o.stride ?? 1),
      pair('padding', o.padding ?? 0),
      pair('outputPadding', o.outputPadding ?? 0),
      positive('groups', o.groups ?? 1),
      pair('dilation', o.dilation ?? 1),
    ),
  );
}

/** Group normalization over channel groups (Wu & He 2018). */
export function groupNorm(x: Tensor, groups: number, { weight, bias, eps = 1e-5 }: { weight?: Tensor | null; bias?: Tensor | null; eps?: number } = {}): Tensor {
  positive('groups', groups);
  if (x.ndim < 2 || x.dim(1) % groups !== 0) throw new TypeError(`groupNorm: channels (${x.shape[1]}) must be divisible by groups (${groups})`);
  return new Tensor(native.groupNorm(x.handle, groups, weight?.handle ?? null, bias?.handle ?? null, eps));
}

/** Layer normalization over the trailing `normalizedShape` dims. */
export function layerNorm(x: Tensor, normalizedShape: number[], { weight, bias, eps = 1e-5 }: { weight?: Tensor | null; bias?: Tensor | null; eps?: number } = {}): Tensor {
  return new Tensor(native.layerNorm(x.handle, normalizedShape, weight?.handle ?? null, bias?.handle ?? null, eps));
}

export function softmax(x: Tensor, dim: number): Tensor {
  return x.softmax(dim);
}

export function logSoftmax(x: Tensor, dim: number): Tensor {
  return x.logSoftmax(dim);
}

/** Inverted dropout: zeroes with probability p and scales by 1/(1-p) when training. */
export function dropout(x: Tensor, p: number, { training = true, generator }: { training?: boolean; generator?: Generator } = {}): Tensor {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`dropout: p must be in [0, 1], got ${p}`);
  if (!training || p === 0) return new Tensor(native.dropout(x.handle, 0, null)); // a new handle on x (an alias)
  if (!generator) throw new TypeError('dropout: pass a generator (training dropout is random; Diffuse keeps randomness explicit)');
  return new Tensor(native.dropout(x.handle, p, generator.handle));
}

export type InterpolateMode = 'nearest' | 'bilinear' | 'bicubic' | 'area';

/** Resizes [N, C, H, W] to `size` or by `scaleFactor` (as torch.nn.functional.interpolate). */
export function interpolate(
  x: Tensor,
  { size, scaleFactor, mode = 'nearest', alignCorners = false }: { size?: Pair; scaleFactor?: number | [number, number]; mode?: InterpolateMode; alignCorners?: boolean },
): Tensor {
  rank('interpolate', x, 4, '[N, C, H, W]');
  if ((size === undefined) === (scaleFactor === undefined)) throw new TypeError('interpolate: give exactly one of size and scaleFactor');
  if (!['nearest', 'bilinear', 'bicubic', 'area'].includes(mode)) throw new TypeError(`interpolate: mode must be nearest, bilinear, bicubic or area, got ${mode}`);
  if (alignCorners && (mode === 'nearest' || mode === 'area')) throw new TypeError(`interpolate: alignCorners only applies to bilinear and bicubic, not ${mode}`);
  if (mode === 'area' && size === undefined) {
    const s = typeof scaleFactor === 'number' ? [scaleFactor, scaleFactor] : scaleFactor!;
    size = [Math.floor(x.dim(2) * s[0]), Math.floor(x.dim(3) * s[1])];
  }
  return new Tensor(native.interpolate(x.handle, mode, size === undefined ? null : pair('size', size), size === undefined ? scaleFactor! : null, alignCorners));
}

/** Average pooling (stride defaults to the kernel size). */
export function avgPool2d(x: Tensor, kernel: Pair, { stride, padding = 0 }: { stride?: Pair; padding?: Pair } = {}): Tensor {
  return new Tensor(native.avgPool2d(x.handle, pair('kernel', kernel), pair('stride', stride ?? kernel), pair('padding', padding)));
}

/** Max pooling (stride defaults to the kernel size). */
export function maxPool2d(x: Tensor, kernel: Pair, { stride, padding = 0 }: { stride?: Pair; padding?: Pair } = {}): Tensor {
  return new Tensor(native.maxPool2d(x.handle, pair('kernel', kernel), pair('stride', stride ?? kernel), pair('padding', padding)));
}

export function adaptiveAvgPool2d(x: Tensor, size: Pair): Tensor {
  return new Tensor(native.adaptiveAvgPool2d(x.handle, pair('size', size)));
}

/** [N, C r^2, H, W] -> [N, C, H r, W r] (Shi et al. 2016). */
export function pixelShuffle(x: Tensor, r: number): Tensor {
  return new Tensor(native.pixelShuffle(x.handle, positive('r', r)));
}

/** [N, C, H r, W r] -> [N, C r^2, H, W]. */
export function pixelUnshuffle(x: Tensor, r: number): Tensor {
  return new Tensor(native.pixelUnshuffle(x.handle, positive('r', r)));
}

/** Rows of weight [V, D] picked by integer indices. */
export function embedding(weight: Tensor, indices: Tensor): Tensor {
  return new Tensor(native.embedding(weight.handle, indices.handle));
}

export interface AttentionOptions {
  /** Boolean mask (true = attend) or additive float mask, broadcast to [..., Lq, Lk]. */
  mask?: Tensor | null;
  dropoutP?: number;
  isCausal?: boolean;
  /** Logit scale (default 1/sqrt(d)). */
  scale?: number;
  /** Required when dropoutP > 0. */
  generator?: Generator;
}

/** softmax(q k^T scale + mask) v over [..., L, d] (Vaswani et al. 2017, Eq. 1). */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions = {}): Tensor {
  const p = o.dropoutP ?? 0;
  if (!(p >= 0 && p < 1)) throw new RangeError(`scaledDotProductAttention: dropoutP must be in [0, 1), got ${p}`);
  if (p > 0 && !o.generator) throw new TypeError('scaledDotProductAttention: dropoutP > 0 needs a generator');
  return new Tensor(native.sdpa(q.handle, k.handle, v.handle, o.mask?.handle ?? null, p, o.isCausal ?? false, o.scale ?? null, o.generator?.handle ?? null));
}

export type Reduction = 'mean' | 'sum' | 'none';
const reduction = (r: Reduction) => {
  if (r !== 'mean' && r !== 'sum' && r !== 'none') throw new TypeError(`reduction must be mean, sum or none, got ${r}`);
  return r;
};

/** Mean squared error. */
export function mseLoss(x: Tensor, target: Tensor, { reduction: r = 'mean' }: { reduction?: Reduction } = {}): Tensor {
  return new Tensor(native.mseLoss(x.handle, target.handle, reduction(r)));
}

/** Cross-entropy of logits [N, C] against class indices [N] (int64) or probabilities [N, C]. */
export function crossEntropy(logits: Tensor, target: Tensor, { reduction: r = 'mean', labelSmoothing = 0, weight }: { reduction?: Reduction; labelSmoothing?: number; weight?: Tensor } = {}): Tensor {
  return new Tensor(native.crossEntropy(logits.handle, target.handle, reduction(r), labelSmoothing, weight?.handle ?? null));
}
