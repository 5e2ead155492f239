/**
 * Latent diffusion, part 2 (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
 * Diffusion Models", Sec. 3 and 4.3.2): a denoiser trained on the latents z of a frozen
 * autoencoder (src/models/autoencoder.ts) instead of on pixels. The latent model is an
 * ordinary Denoiser in its own space; only encode and decode sit at the two ends, so every
 * sampler and every guidance method works unchanged.
 *
 * - The latents are rescaled before diffusion. The reference multiplies posterior samples by
 *   one scale factor 1 / std(z) (its `scale_factor`, Sec. 4.3.2 and App. G), measured once over
 *   the training data; EDM2 (Karras et al. 2024) normalizes each channel instead,
 *   z_norm = (z - mean_c) / std_c. Both are z_norm = (z - shift_c) scale_c here: 'scalar' has
 *   shift 0 and scale 1 / std(z) for every channel, 'channel' the per-channel mean and 1 / std.
 * - Training encodes each image once up front (its posterior mean and log-variance, of the
 *   flipped image too when flips are on) and draws z = mean + exp(logvar / 2) eps per batch
 *   from a generator seeded by (run seed, step), so a resumed run sees the same latents.
 * - Sampling draws normalized latents and decodes them: x = D(z_norm / scale_c + shift_c),
 *   clamped to [-1, 1] (images). Latents are not clipped while sampling (they are unbounded).
 *
 * @example
 *   const stats = measureLatents(ae, trainImages, { seed: 0 });       // over the training split
 *   const norm = latentNormalization(stats, 'scalar');                // shift 0, scale 1 / std(z)
 *   const codec = new LatentCodec(ae, { ...norm, autoencoder: dir, sha256, factor: 4, imageSize: 32, latentShape: [4, 8, 8] });
 *   const moments = codec.encodePosteriors(trainImages);              // [N, 8, 8, 8]: mean and logvar
 *   const z = codec.sample(moments, new Generator(0));                // [N, 4, 8, 8], normalized
 *   const x = codec.decode(z);                                        // [N, 3, 32, 32] in [-1, 1]
 */
import { cat, tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Autoencoder, sampleLatent } from '../models/autoencoder';

// ---- statistics ------------------------------------------------------------------------

/** Statistics of posterior samples z ~ q(z | x) over a set of images. */
export interface LatentStats {
  /** Per channel: the mean and std of posterior samples z. */
  mean: number[];
  std: number[];
  /** Per channel: the mean posterior std exp(logvar / 2) (how much the encoder is unsure). */
  posteriorStd: number[];
  /** The std of z over all elements and channels, and its inverse: LDM's scale factor. */
  globalStd: number;
  scaleFactor: number;
}

/**
 * LatentStats of posterior samples z [N, C, h, w] and posterior stds exp(logvar / 2) of the same
 * shape: per-channel mean and std (unbiased, as torch.std), and the global std over every element
 * (the reference's `1 / z.flatten().std()`).
 *
 * @example
 *   const s = summarizeLatents(z, logvar.mul(0.5).exp()); // s.scaleFactor === 1 / s.globalStd
 */
export function summarizeLatents(z: Tensor, posteriorStd: Tensor): LatentStats {
  return tidy(() => {
    const perChannel = (t: Tensor) => t.transpose(0, 1).flatten(1); // [C, N h w]
    const globalStd = z.std().item();
    return {
      mean: Array.from(perChannel(z).mean(1).toFloat64Array()),
      std: Array.from(perChannel(z).std(1).toFloat64Array()),
      posteriorStd: Array.from(perChannel(posteriorStd).mean(1).toFloat64Array()),
      globalStd,
      scaleFactor: 1 / globalStd,
    };
  });
}

/**
 * Encodes uint8 images [N, C, H, W] in batches (noGrad) and summarizes posterior samples drawn
 * with Generator(seed) (summarizeLatents): how latent diffusion measures its scale factor over
 * the training split.
 *
 * @example
 *   measureLatents(ae, loadEmoji({ split: 'train', size: 32 }).images).scaleFactor; // 1 / std(z)
 */
export function measureLatents(net: Autoencoder, images: Tensor, { batchSize = 64, seed = 0 }: { batchSize?: number; seed?: number } = {}): LatentStats {
  const moments = encodePosteriors(net, images, { batchSize });
  try {
    return tidy(() => {
      const [mean, logvar] = moments.chunk(2, 1);
      return summarizeLatents(sampleLatent(mean, logvar, new Generator(seed)), logvar.mul(0.5).exp());
    });
  } finally {
    moments.dispose();
  }
}

/**
 * The posteriors of uint8 (or [-1, 1] float) images [N, C, H, W], in batches (noGrad): mean and
 * logvar concatenated on the channel axis, [N, 2 latentChannels, H/f, W/f].
 *
 * @example
 *   const [mean, logvar] = encodePosteriors(ae, images).chunk(2, 1);
 */
export function encodePosteriors(
  net: Autoencoder,
  images: Tensor,
  { batchSize = 64, onBatch }: { batchSize?: number; /** Called after each batch with its size (progress). */ onBatch?: (size: number) => void } = {},
): Tensor {
  return noGrad(() =>
    tidy(() => {
      const parts: Tensor[] = [];
      for (let i = 0; i < images.dim(0); i += batchSize) {
        const raw = images.narrow(0, i, Math.min(batchSize, images.dim(0) - i));
        const x = raw.dtype === 'uint8' ? raw.float().div(127.5).sub(1) : raw.float();
        const { mean, logvar } = net.encode(x);
        parts.push(cat([mean, logvar], 1));
        onBatch?.(raw.dim(0));
      }
      return cat(parts, 0);
    }),
  );
}

// ---- normalization -----------------------------------------------------------------------

/** How latents are normalized for diffusion: 'scalar' (LDM's one scale factor) or 'channel' (EDM2's per-channel mean and std). */
export type LatentNormKind = 'scalar' | 'channel';
export const LATENT_NORMS: readonly LatentNormKind[] = ['scalar', 'channel'];

/** z_norm = (z - shift_c) scale_c, one shift and scale per latent channel. */
export interface LatentNormalization {
  norm: LatentNormKind;
  shift: number[];
  scale: number[];
}

/**
 * The normalization of a kind from measured statistics: 'scalar': shift 0 and scale 1 / std(z)
 * for every channel (Rombach et al. 2022, Sec. 4.3.2); 'channel': shift mean_c, scale 1 / std_c
 * (EDM2's per-channel normalization, to unit rather than EDM2's 0.5 std).
 *
 * @example
 *   latentNormalization({ mean: [1, 2], std: [2, 4], posteriorStd: [0, 0], globalStd: 2.5, scaleFactor: 0.4 }, 'channel');
 *   // { norm: 'channel', shift: [1, 2], scale: [0.5, 0.25] }
 */
export function latentNormalization(stats: LatentStats, norm: LatentNormKind): LatentNormalization {
  if (norm === 'scalar') return { norm, shift: stats.mean.map(() => 0), scale: stats.mean.map(() => stats.scaleFactor) };
  if (norm === 'channel') return { norm, shift: [...stats.mean], scale: stats.std.map((s) => 1 / s) };
  throw new RangeError(`latentNormalization: norm must be 'scalar' or 'channel', got ${JSON.stringify(norm)}`);
}

/** [C] numbers as a [1, C, 1, 1] tensor, to broadcast over [B, C, h, w]. */
const perChannel = (v: number[]) => tensor(v).reshape([1, v.length, 1, 1]);

/**
 * z [B, C, h, w] -> (z - shift_c) scale_c.
 *
 * @example
 *   normalizeLatents(z, { norm: 'scalar', shift: [0, 0, 0, 0], scale: [0.2, 0.2, 0.2, 0.2] }); // z / 5
 */
export function normalizeLatents(z: Tensor, n: LatentNormalization): Tensor {
  return tidy(() => z.sub(perChannel(n.shift)).mul(perChannel(n.scale)));
}

/**
 * The inverse of normalizeLatents: z_norm / scale_c + shift_c.
 *
 * @example
 *   denormalizeLatents(normalizeLatents(z, n), n); // z (to rounding)
 */
export function denormalizeLatents(zNorm: Tensor, n: LatentNormalization): Tensor {
  return tidy(() => zNorm.div(perChannel(n.scale)).add(perChannel(n.shift)));
}

// ---- the record a latent run keeps ---------------------------------------------------------

/** What a latent run's checkpoint records about its autoencoder (checkpoint.json "latent"): enough to decode, and to notice a replaced autoencoder. */
export interface LatentRecord extends LatentNormalization {
  /** The autoencoder folder (absolute path). */
  autoencoder: string;
  /** The SHA-256 of its weights file, as its autoencoder.json records it. */
  sha256: string;
  /** Its downsampling factor f, the image side it was trained at, and the latent shape [C, S/f, S/f]. */
  factor: number;
  imageSize: number;
  latentShape: number[];
}

/**
 * What is wrong with a LatentRecord read from a file (null: nothing).
 *
 * @example
 *   latentRecordProblem(JSON.parse(text).latent); // null, or e.g. '"latent.norm" must be ...'
 */
export function latentRecordProblem(v: unknown): string | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return `"latent" must be an object, got ${JSON.stringify(v)}`;
  const r = v as Record<string, unknown>;
  const posInt = (x: unknown) => Number.isSafeInteger(x) && (x as number) > 0;
  if (typeof r.autoencoder !== 'string' || typeof r.sha256 !== 'string') return '"latent" must name its autoencoder folder and the SHA-256 of its weights';
  if (!posInt(r.factor) || !posInt(r.imageSize)) return '"latent.factor" and "latent.imageSize" must be positive integers';
  if (!(Array.isArray(r.latentShape) && r.latentShape.length === 3 && r.latentShape.every(posInt))) return `"latent.latentShape" must be [C, h, w], got ${JSON.stringify(r.latentShape)}`;
  if (!(LATENT_NORMS as readonly unknown[]).includes(r.norm)) return `"latent.norm" must be 'scalar' or 'channel', got ${JSON.stringify(r.norm)}`;
  const c = r.latentShape[0] as number;
  const nums = (x: unknown) => Array.isArray(x) && x.length === c && x.every((y) => typeof y === 'number' && Number.isFinite(y));
  if (!nums(r.shift) || !nums(r.scale) || (r.scale as number[]).some((s) => s <= 0)) return `"latent.shift" and "latent.scale" must be ${c} finite numbers each (scales > 0)`;
  return null;
}

// ---- the codec -----------------------------------------------------------------------------

/**
 * A frozen autoencoder with a run's normalization: images <-> normalized latents. It owns the
 * network (dispose() frees it).
 *
 * @example
 *   const codec = new LatentCodec(ae, record);
 *   const x = codec.decode(z); // [B, 3, S, S] in [-1, 1] from normalized latents [B, 4, S/f, S/f]
 */
export class LatentCodec {
  constructor(
    readonly net: Autoencoder,
    readonly record: LatentRecord,
  ) {
    net.eval();
  }

  /** The posteriors of uint8 images (encodePosteriors): [N, 2C, h, w], mean and logvar. */
  encodePosteriors(images: Tensor, opts: { batchSize?: number; onBatch?: (size: number) => void } = {}): Tensor {
    return encodePosteriors(this.net, images, opts);
  }

  /** A posterior sample z = mean + exp(logvar / 2) eps from moments [B, 2C, h, w], normalized: [B, C, h, w]. */
  sample(moments: Tensor, generator: Generator): Tensor {
    return tidy(() => {
      const [mean, logvar] = moments.chunk(2, 1);
      return normalizeLatents(sampleLatent(mean, logvar, generator), this.record);
    });
  }

  /** Normalized latents [B, C, h, w] -> images [B, 3, S, S], clamped to [-1, 1] (noGrad). */
  decode(zNorm: Tensor): Tensor {
    return noGrad(() => tidy(() => this.net.decode(denormalizeLatents(zNorm, this.record)).clamp(-1, 1)));
  }

  dispose(): void {
    this.net.dispose();
  }
}
