/**
 * The super-resolution stage of a cascade (Ho et al. 2021, "Cascaded Diffusion Models", CDM;
 * Saharia et al. 2022, Imagen): a denoiser of the high-resolution image conditioned on a
 * low-resolution one, which travels in `cond.lowRes` with its augmentation level in
 * `cond.augLevel` (the network upsamples and concatenates it: models/unet.ts, condChannels), so
 * every sampler and guidance method runs an SR stage unchanged.
 *
 * Noise-conditioning augmentation (CDM Sec. 4.2): the condition is corrupted by a forward
 * process at level s in [0, 1] before the network sees it, and s is a second noise embedding:
 *
 *   z_s = alpha_s x_low + sigma_s eps,   alpha_s = cos(pi s / 2),  sigma_s = sin(pi s / 2)   (cosine VP)
 *
 * In training s ~ U[0, augMax] (a bounded range: levels never used at sampling waste capacity)
 * and the low-res image is the training image average-pooled (optionally blurred first); at
 * sampling s is a chosen constant, applied to the previous stage's samples. A model trained
 * with augMax 0 only ever sees true low-res images and breaks on a base model's samples,
 * which differ from them; the augmentation teaches it to denoise the mismatch away.
 *
 * @example
 *   const c = trainingCondition(x64, 16, { augMax: 0.5, blur: false, generator });   // { lowRes [B, 3, 16, 16], augLevel [B] }
 *   const D = ...;                                                                    // an SR stage's denoiser
 *   const z = samplingCondition(base16, 0.2, seededNoise(7, B));                     // the cascade at s = 0.2
 *   D(x, sigma, { ...z, classLabels });
 */
import { cat, full, zeros } from '../engine/create';
import { avgPool2d, interpolate } from '../engine/functional';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { expandSigma } from '../core/denoiser';
import { Noise, randnLike } from '../sampling/noise';

/** The low-res condition of a super-resolution stage and its augmentation level. */
export interface SuperResCondition {
  /** [B, C, h, w] the (augmented) low-resolution image. */
  lowRes: Tensor;
  /** [B] its augmentation level s. */
  augLevel: Tensor;
}

/** The range of the blur's std (in low-res pixels) when augBlur is on, as CDM's blurring augmentation (App. B: a 3 x 3 kernel, sigma in [0.4, 0.6]). */
export const BLUR_STD: readonly [number, number] = [0.4, 0.6];

/** The probability that a training condition is blurred when augBlur is on (the rest stay sharp: at sampling there is no blur). */
export const BLUR_PROBABILITY = 0.5;

/** CDM Sec. 4.2, the cosine VP forward process of the augmentation: alpha_s = cos(pi s / 2), sigma_s = sin(pi s / 2), each [B]. */
export function augCoefficients(s: Tensor): { alpha: Tensor; sigma: Tensor } {
  return tidy(() => {
    const u = s.mul(Math.PI / 2);
    return { alpha: u.cos(), sigma: u.sin() };
  });
}

/**
 * z_s = alpha_s x + sigma_s eps (CDM Sec. 4.2): x [B, C, h, w] corrupted at levels s [B], eps from
 * `noise` (one Generator, or one per sample).
 *
 * @example
 *   noiseAugment(x, full([B], 0.3), generator); // E z = cos(0.15 pi) x, Var z = sin^2(0.15 pi)
 */
export function noiseAugment(x: Tensor, s: Tensor, noise: Noise): Tensor {
  checkLevels('noiseAugment', s, x.dim(0));
  return tidy(() => {
    const { alpha, sigma } = augCoefficients(s.to({ dtype: x.dtype }));
    return x.mul(expandSigma(alpha, x)).add(randnLike(noise, x).mul(expandSigma(sigma, x)));
  });
}

/** x [B, C, H, W] average-pooled to size x size (the way the emoji data makes its 16 and 32 px images). */
export function downsample(x: Tensor, size: number): Tensor {
  const H = x.dim(-1);
  if (!(Number.isSafeInteger(size) && size >= 1 && H % size === 0 && x.dim(-2) === H))
    throw new RangeError(`downsample: size must divide the image side ${H} (square images), got ${size} for [${x.shape.join(', ')}]`);
  return size === H ? x.clone() : avgPool2d(x, H / size);
}

/**
 * A 3 x 3 Gaussian blur of x [B, C, H, W] with std [B] per sample (separable: taps [w, 1 - 2w, w],
 * w = e^(-1/(2 std^2)) / (1 + 2 e^(-1/(2 std^2))), edges replicated).
 */
export function gaussianBlur3(x: Tensor, std: Tensor): Tensor {
  checkLevels('gaussianBlur3', std, x.dim(0));
  return tidy(() => {
    const g = std.to({ dtype: x.dtype }).square().mul(-2).reciprocal().exp(); // e^(-1/(2 std^2))
    const w = expandSigma(g.div(g.mul(2).add(1)), x); // [B, 1, 1, 1]
    return blurAxis(blurAxis(x, 2, w), 3, w);
  });
}

/** One axis of gaussianBlur3: (1 - 2w) x + w (x shifted by -1 and +1, edges replicated). */
function blurAxis(x: Tensor, dim: number, w: Tensor): Tensor {
  const n = x.dim(dim);
  if (n < 2) return x.clone();
  return tidy(() => {
    const prev = cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim);
    const next = cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim);
    return x.mul(w.mul(-2).add(1)).add(prev.add(next).mul(w));
  });
}

/**
 * The training condition of a batch x [B, C, H, W]: x average-pooled to lowRes px, blurred with
 * probability BLUR_PROBABILITY when `blur` (std ~ U[BLUR_STD]), then z_s with s ~ U[0, augMax]
 * (CDM Sec. 4.2). All randomness from `generator`; augMax 0 draws no noise (z = the low-res image).
 */
export function trainingCondition(x: Tensor, lowRes: number, { augMax, blur, generator }: { augMax: number; blur: boolean; generator: Generator }): SuperResCondition {
  if (!(augMax >= 0 && augMax <= 1)) throw new RangeError(`trainingCondition: augMax must be in [0, 1], got ${augMax}`);
  return tidy(() => {
    const B = x.dim(0);
    let low = downsample(x, lowRes); // [B, C, h, w]
    if (blur) {
      const [lo, hi] = BLUR_STD;
      const std = generator
        .rand([B])
        .mul(hi - lo)
        .add(lo);
      const on = expandSigma(generator.rand([B]).lt(BLUR_PROBABILITY), low);
      low = on.where(gaussianBlur3(low, std), low);
    }
    if (augMax === 0) return { lowRes: low, augLevel: zeros([B]) };
    const s = generator.rand([B]).mul(augMax); // s ~ U[0, augMax]
    return { lowRes: noiseAugment(low, s, generator), augLevel: s };
  });
}

/**
 * The sampling condition: the previous stage's images lowRes [B, C, h, w] corrupted at the chosen
 * constant level s (CDM Sec. 4.2; s = 0 passes them through), eps from `noise` (one Generator per
 * sample keeps sample i independent of the batching).
 */
export function samplingCondition(lowRes: Tensor, s: number, noise: Noise): SuperResCondition {
  if (!(s >= 0 && s <= 1)) throw new RangeError(`samplingCondition: the augmentation level s must be in [0, 1], got ${s}`);
  return tidy(() => {
    const level = full([lowRes.dim(0)], s);
    return { lowRes: s === 0 ? lowRes.clone() : noiseAugment(lowRes, level, noise), augLevel: level };
  });
}

/**
 * Rows for an image grid (ncol = B): each row [B, C, h, w] upsampled (nearest, so the low-res
 * pixels show) to the size of the last row, stacked: [rows B, C, H, W] — a low-res -> high-res panel.
 *
 * @example
 *   writePNG('panel.png', imageGrid(superResPanel(low16, samples64, truth64), { ncol: B }));
 */
export function superResPanel(...rows: Tensor[]): Tensor {
  if (rows.length === 0) throw new TypeError('superResPanel: give at least one row of images');
  return tidy(() => {
    const last = rows[rows.length - 1];
    const [H, W] = [last.dim(2), last.dim(3)];
    const at = (r: Tensor) => (r.dim(2) === H && r.dim(3) === W ? r : interpolate(r.to({ dtype: 'float32' }), { size: [H, W], mode: 'nearest' }).to({ dtype: last.dtype }));
    return cat(rows.map(at), 0);
  });
}

/** A [B] float tensor of levels, or a clear error naming the function. */
function checkLevels(who: string, s: Tensor, B: number): void {
  if (s.ndim !== 1 || s.dim(0) !== B) throw new TypeError(`${who}: expected one level per sample, shape [${B}], got [${s.shape.join(', ')}]`);
}
