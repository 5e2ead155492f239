/**
 * Noise-level embeddings: how a network is told sigma (or t).
 *
 * @example
 *   const emb = new SinusoidalEmbedding(128);   // DDPM/ADM timestep embedding
 *   emb.forward(t);                              // t: [B] -> [B, 128]
 *   const ff = new FourierFeatures(128, 16);    // EDM's random Fourier features
 */
import { arange, cat } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { initGenerator, normal } from './init';
import { InitOptions } from './layers';
import { Module } from './module';

/**
 * Transformer-style sinusoids (Vaswani et al. 2017, Sec. 3.5) as DDPM and ADM embed
 * the timestep: freqs_i = maxPeriod^(-i / (half - endpoint)), out = [cos(t f), sin(t f)].
 * endpoint = true is EDM's PositionalEmbedding.
 */
export class SinusoidalEmbedding extends Module {
  constructor(
    readonly dim: number,
    readonly opts: { maxPeriod?: number; endpoint?: boolean } = {},
  ) {
    super();
    if (!Number.isSafeInteger(dim) || dim < 2 || dim % 2) throw new TypeError(`SinusoidalEmbedding: dim must be an even integer >= 2, got ${dim}`);
  }
  /** t: [B] -> [B, dim] (frequencies are computed on t's device; nothing is stored). */
  forward(t: Tensor): Tensor {
    return tidy(() => {
      const half = this.dim / 2;
      const { maxPeriod = 10000, endpoint = false } = this.opts;
      const freqs = arange(0, half, 1, { dtype: 'float32', device: t.device })
        .div(half - (endpoint ? 1 : 0))
        .mul(-Math.log(maxPeriod))
        .exp();
      const args = t.float().unsqueeze(1).mul(freqs.unsqueeze(0)); // [B, half]
      return cat([args.cos(), args.sin()], 1);
    });
  }
}

/**
 * Random Fourier features (Tancik et al. 2020) as EDM embeds ln(sigma)/4:
 * out = [cos(2 pi f x), sin(2 pi f x)], f ~ N(0, scale^2), a saved buffer.
 */
export class FourierFeatures extends Module {
  freqs: Tensor;
  constructor(
    readonly dim: number,
    scale = 16,
    { generator = initGenerator() }: InitOptions = {},
  ) {
    super();
    if (!Number.isSafeInteger(dim) || dim < 2 || dim % 2) throw new TypeError(`FourierFeatures: dim must be an even integer >= 2, got ${dim}`);
    this.freqs = this.buffer('freqs', normal([dim / 2], scale, generator));
  }
  /** x: [B] -> [B, dim] */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const args = x
        .float()
        .unsqueeze(1)
        .mul(this.freqs.mul(2 * Math.PI).unsqueeze(0));
      return cat([args.cos(), args.sin()], 1);
    });
  }
}
