/**
 * Pieces the networks share: the noise-level embedding choice, class labels with a
 * null class, and config checks that name the offending field.
 *
 * @example
 *   const mapNoise = noiseEmbedding('fourier', 64, { fourierScale: 16 }); // EDM-style
 *   const labels = classLabelsOrNull(undefined, 10, 8, 'cpu');          // [8] of 10 (the null class)
 */
import { full } from '../engine/create';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Generator } from '../engine/random';
import { FourierFeatures, SinusoidalEmbedding } from '../nn/embeddings';

/** How c_noise becomes a vector: DDPM/ADM sinusoids (for t in [0, 1000)) or EDM's random Fourier features (for ln(sigma)/4). */
export type NoiseEmbeddingKind = 'sinusoidal' | 'fourier';

/** Builds the noise-level embedding module of size `dim` (no parameters; Fourier keeps its frequencies as a buffer). */
export function noiseEmbedding(
  kind: NoiseEmbeddingKind,
  dim: number,
  { fourierScale = 16, maxPeriod = 10000, generator }: { fourierScale?: number; maxPeriod?: number; generator?: Generator } = {},
): SinusoidalEmbedding | FourierFeatures {
  if (kind === 'sinusoidal') return new SinusoidalEmbedding(dim, { maxPeriod });
  if (kind === 'fourier') return new FourierFeatures(dim, fourierScale, { generator });
  throw new TypeError(`noiseEmbedding: kind must be 'sinusoidal' or 'fourier', got ${JSON.stringify(kind)}`);
}

/**
 * The class ids a network embeds: `labels` checked (integer [B], each in [0, numClasses],
 * where numClasses is the null class "no label"), or all null when omitted. Returns null
 * for a network without class conditioning (and rejects labels given to one).
 */
export function classLabelsOrNull(labels: Tensor | undefined, numClasses: number | null, batch: number, device: string, who = 'network'): Tensor | null {
  if (numClasses === null) {
    if (labels !== undefined) throw new TypeError(`${who}: class labels given, but this network has no class embedding (numClasses is null)`);
    return null;
  }
  if (labels === undefined) return full([batch], numClasses, { dtype: 'int64', device });
  if (labels.dtype !== 'int64' && labels.dtype !== 'int32') throw new TypeError(`${who}: class labels must be int64 (or int32), got ${labels.dtype}`);
  if (labels.ndim !== 1 || labels.dim(0) !== batch)
    throw new TypeError(`${who}: class labels must have shape [${batch}] (one per sample), got [${labels.shape.join(', ')}]`);
  const [lo, hi] = noGrad(() => tidy(() => [labels.min().item(), labels.max().item()]));
  if (batch > 0 && (lo < 0 || hi > numClasses))
    throw new RangeError(`${who}: class labels must be in [0, ${numClasses}] (${numClasses} = the null class), got values in [${lo}, ${hi}]`);
  return labels;
}

/** Checks c_noise: one float per sample ([B]); a 0-d tensor is broadcast to [B]. */
export function checkNoiseLevel(cNoise: Tensor, batch: number, who = 'network'): Tensor {
  if (cNoise.dtype !== 'float32' && cNoise.dtype !== 'float64' && cNoise.dtype !== 'float16' && cNoise.dtype !== 'bfloat16')
    throw new TypeError(`${who}: cNoise must be a float tensor, got ${cNoise.dtype}`);
  if (cNoise.ndim === 0) return cNoise.expand([batch]);
  if (cNoise.ndim !== 1 || cNoise.dim(0) !== batch)
    throw new TypeError(`${who}: cNoise must have shape [${batch}] (one noise level per sample), got [${cNoise.shape.join(', ')}]`);
  return cNoise;
}

/** Throws unless v is a positive integer; names the config field. */
export function positiveInt(who: string, field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new TypeError(`${who}: ${field} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** Throws on config keys the network does not know (a typo would otherwise fall back to a default silently). */
export function rejectUnknownKeys(who: string, given: object, known: object): void {
  const unknown = Object.keys(given).filter((k) => !(k in known));
  if (unknown.length) throw new TypeError(`${who}: unknown config field(s) ${unknown.join(', ')} (known: ${Object.keys(known).join(', ')})`);
}
