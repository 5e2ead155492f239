/**
 * A residual MLP denoiser for low-dimensional (2-D toy) data, told the noise level
 * through an embedding that is added before every hidden layer.
 *
 * The network does not know what the noise level means: the preconditioner passes
 * c_noise (DDPM's t, EDM's ln(sigma)/4, ...) and decides what the output is.
 *
 * @example
 *   const net = new MLPDenoiserNet({ dim: 2, hidden: 256, depth: 4 });
 *   const out = net.forward(x, cNoise);                 // x: [B, 2], cNoise: [B] -> [B, 2]
 *   const cond = new MLPDenoiserNet({ numClasses: 8 });
 *   cond.forward(x, cNoise, labels);                    // labels: [B] int64, 8 = no label
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { FourierFeatures, SinusoidalEmbedding } from '../nn/embeddings';
import { InitOptions, Embedding, Linear } from '../nn/layers';
import { Module } from '../nn/module';
import { checkNoiseLevel, classLabelsOrNull, noiseEmbedding, NoiseEmbeddingKind, positiveInt, rejectUnknownKeys } from './common';

export interface MLPDenoiserConfig {
  /** Data dimension (input and output width). Default 2. */
  dim: number;
  /** Hidden width. Default 256. */
  hidden: number;
  /** Number of hidden residual layers. Default 4. */
  depth: number;
  /** Size of the noise-level embedding (even). Default 64. */
  embedDim: number;
  /** 'sinusoidal' (DDPM, for t in [0, 1000)) or 'fourier' (EDM, for ln(sigma)/4). Default 'sinusoidal'. */
  embedding: NoiseEmbeddingKind;
  /** Std of the random Fourier frequencies (embedding 'fourier'). Default 16, as EDM. */
  fourierScale: number;
  /** Longest sinusoid period (embedding 'sinusoidal'). Default 10000, as DDPM. */
  maxPeriod: number;
  /** Number of classes for class conditioning, or null for none. Label numClasses is the null class. Default null. */
  numClasses: number | null;
}

/** The documented defaults. */
export const MLP_DENOISER_DEFAULTS: Readonly<MLPDenoiserConfig> = Object.freeze({
  dim: 2,
  hidden: 256,
  depth: 4,
  embedDim: 64,
  embedding: 'sinusoidal',
  fourierScale: 16,
  maxPeriod: 10000,
  numClasses: null,
});

/**
 * Fills defaults and checks every field (errors name the field and value).
 *
 * @example
 *   resolveMLPDenoiserConfig({ hidden: 128 }).depth // 4
 */
export function resolveMLPDenoiserConfig(config: Partial<MLPDenoiserConfig> = {}): MLPDenoiserConfig {
  const who = 'MLPDenoiserNet';
  rejectUnknownKeys(who, config, MLP_DENOISER_DEFAULTS);
  const c: MLPDenoiserConfig = { ...MLP_DENOISER_DEFAULTS, ...config };
  positiveInt(who, 'dim', c.dim);
  positiveInt(who, 'hidden', c.hidden);
  positiveInt(who, 'depth', c.depth);
  if (positiveInt(who, 'embedDim', c.embedDim) % 2) throw new TypeError(`${who}: embedDim must be even, got ${c.embedDim}`);
  if (c.embedding !== 'sinusoidal' && c.embedding !== 'fourier')
    throw new TypeError(`${who}: embedding must be 'sinusoidal' or 'fourier', got ${JSON.stringify(c.embedding)}`);
  if (!(c.fourierScale > 0)) throw new TypeError(`${who}: fourierScale must be positive, got ${c.fourierScale}`);
  if (!(c.maxPeriod > 0)) throw new TypeError(`${who}: maxPeriod must be positive, got ${c.maxPeriod}`);
  if (c.numClasses !== null) positiveInt(who, 'numClasses', c.numClasses);
  return c;
}

/**
 * emb = W_e phi(c_noise) (+ class row);  h_0 = W_in x;
 * h_{i+1} = h_i + W_i SiLU(h_i + emb);  out = W_out SiLU(h_depth).
 * Parameter names: map_noise, map_layer0, map_label, proj_in, layers.i, proj_out.
 *
 * @example
 *   const net = new MLPDenoiserNet({ hidden: 128, embedding: 'fourier' });
 *   net.forward(x, sigma.log().div(4)); // EDM's c_noise; x: [B, 2] -> [B, 2]
 */
export class MLPDenoiserNet extends Module {
  readonly config: MLPDenoiserConfig;
  map_noise: SinusoidalEmbedding | FourierFeatures;
  map_layer0: Linear;
  map_label: Embedding | null = null;
  proj_in: Linear;
  layers: Linear[];
  proj_out: Linear;

  constructor(config: Partial<MLPDenoiserConfig> = {}, { generator }: InitOptions = {}) {
    super();
    const c = (this.config = resolveMLPDenoiserConfig(config));
    this.map_noise = this.child('map_noise', noiseEmbedding(c.embedding, c.embedDim, { fourierScale: c.fourierScale, maxPeriod: c.maxPeriod, generator }));
    this.map_layer0 = this.child('map_layer0', new Linear(c.embedDim, c.hidden, { generator }));
    if (c.numClasses !== null) this.map_label = this.child('map_label', new Embedding(c.numClasses + 1, c.hidden, { generator }));
    this.proj_in = this.child('proj_in', new Linear(c.dim, c.hidden, { generator }));
    this.layers = this.children('layers', Array.from({ length: c.depth }, () => new Linear(c.hidden, c.hidden, { generator })));
    this.proj_out = this.child('proj_out', new Linear(c.hidden, c.dim, { generator }));
  }

  /** The class id that means "no label" (classifier-free guidance's unconditional branch); null without classes. */
  get nullClass(): number | null {
    return this.config.numClasses;
  }

  /** x: [B, dim], cNoise: [B] (float), classLabels: [B] int64 (default: the null class) -> [B, dim]. */
  forward(x: Tensor, cNoise: Tensor, classLabels?: Tensor): Tensor {
    const who = 'MLPDenoiserNet';
    if (x.ndim !== 2 || x.dim(1) !== this.config.dim) throw new TypeError(`${who}: x must have shape [B, ${this.config.dim}], got [${x.shape.join(', ')}]`);
    return tidy(() => {
      const B = x.dim(0);
      const c = checkNoiseLevel(cNoise, B, who);
      const labels = classLabelsOrNull(classLabels, this.config.numClasses, B, x.device, who);
      // The embedding is computed in float32; cast to the weights' dtype (float64 for gradcheck, ...).
      let emb = this.map_layer0.forward(this.map_noise.forward(c).to({ dtype: this.map_layer0.weight.dtype })); // [B, hidden]
      if (this.map_label && labels) emb = emb.add(this.map_label.forward(labels));
      let h = this.proj_in.forward(x); // [B, hidden]
      for (const layer of this.layers) h = h.add(layer.forward(h.add(emb).silu()));
      return this.proj_out.forward(h.silu()); // [B, dim]
    });
  }
}
