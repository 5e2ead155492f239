/**
 * Image similarity by formula, with no learned network: PSNR, SSIM (Wang et al. 2004,
 * "Image Quality Assessment: From Error Visibility to Structural Similarity", Eq. 13, with
 * the 11 x 11 Gaussian window of sigma 1.5 and K1 = 0.01, K2 = 0.03 of Sec. III-C), and a
 * multi-scale SSIM: the MEAN of SSIM over a few dyadic scales (2 x 2 average pooling
 * between them). That is not Wang, Simoncelli & Bovik's 2003 MS-SSIM, whose product of
 * per-scale contrast-structure terms raised to fitted exponents is unstable early in
 * training; it is a plain average that still rewards structure at coarser scales.
 *
 * The autoencoder uses 1 - msSSIM as its perceptual term (src/training/autoencoder.ts):
 * differentiable, and independent of the frozen evaluator network (src/eval/feature-net.ts),
 * which no training loss may use. This file imports no network.
 *
 * @example
 *   psnr(x, y, { dataRange: 2 });           // [B] dB, for images in [-1, 1]; Infinity where x = y
 *   ssim(x, y, { dataRange: 2 });           // [B], 1 where x = y
 *   msSSIM(x, y, { dataRange: 2, scales: 3 }); // [B]
 */
import { tensor } from '../engine/create';
import * as F from '../engine/functional';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

export interface SSIMOptions {
  /** L, the dynamic range of the pixel values (2 for [-1, 1], 1 for [0, 1], 255 for uint8). Default 2. */
  dataRange?: number;
  /** Side of the Gaussian window (odd). Default 11. */
  window?: number;
  /** Its standard deviation in pixels. Default 1.5. */
  sigma?: number;
}

function checkPair(who: string, x: Tensor, y: Tensor): void {
  if (x.ndim !== 4) throw new TypeError(`${who}: x must have shape [B, C, H, W], got [${x.shape.join(', ')}]`);
  if (x.shape.join(',') !== y.shape.join(',')) throw new TypeError(`${who}: x and y must have the same shape, got [${x.shape.join(', ')}] and [${y.shape.join(', ')}]`);
}

/** PSNR = 10 log10(L^2 / MSE) per image [B] (Infinity for identical images). */
export function psnr(x: Tensor, y: Tensor, { dataRange = 2 }: { dataRange?: number } = {}): Tensor {
  checkPair('psnr', x, y);
  return tidy(() =>
    x
      .sub(y)
      .square()
      .mean([1, 2, 3])
      .reciprocal()
      .mul(dataRange * dataRange)
      .log()
      .mul(10 / Math.LN10),
  );
}

/** The normalized 1-D Gaussian of `size` taps. */
function gaussian1d(size: number, sigma: number): number[] {
  const c = (size - 1) / 2;
  const g = Array.from({ length: size }, (_, i) => Math.exp(-((i - c) ** 2) / (2 * sigma * sigma)));
  const s = g.reduce((a, b) => a + b, 0);
  return g.map((v) => v / s);
}

/** The Gaussian-weighted local mean of each channel, 'valid' (no padding): [B, C, H, W] -> [B, C, H - w + 1, W - w + 1]. */
function localMean(x: Tensor, g: number[]): Tensor {
  return tidy(() => {
    const C = x.dim(1);
    const k = tensor(g, { dtype: x.dtype, device: x.device });
    const kh = k.reshape([1, 1, g.length, 1]).expand([C, 1, g.length, 1]).contiguous(); // separable: rows, then columns
    const kw = k.reshape([1, 1, 1, g.length]).expand([C, 1, 1, g.length]).contiguous();
    return F.conv2d(F.conv2d(x, kh, { groups: C }), kw, { groups: C });
  });
}

/**
 * SSIM per image [B]: the mean over channels and positions of
 * ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)) (Wang et al. 2004, Eq. 13),
 * C1 = (0.01 L)^2, C2 = (0.03 L)^2, local statistics under a Gaussian window, positions where the window fits.
 */
export function ssim(x: Tensor, y: Tensor, { dataRange = 2, window = 11, sigma = 1.5 }: SSIMOptions = {}): Tensor {
  checkPair('ssim', x, y);
  if (!(Number.isSafeInteger(window) && window >= 1 && window % 2 === 1)) throw new RangeError(`ssim: window must be an odd positive integer, got ${window}`);
  if (x.dim(2) < window || x.dim(3) < window) throw new RangeError(`ssim: images of ${x.dim(2)} x ${x.dim(3)} are smaller than the ${window} x ${window} window`);
  const g = gaussian1d(window, sigma);
  const C1 = (0.01 * dataRange) ** 2;
  const C2 = (0.03 * dataRange) ** 2;
  return tidy(() => {
    const mx = localMean(x, g);
    const my = localMean(y, g);
    const sxx = localMean(x.square(), g).sub(mx.square());
    const syy = localMean(y.square(), g).sub(my.square());
    const sxy = localMean(x.mul(y), g).sub(mx.mul(my));
    const num = mx.mul(my).mul(2).add(C1).mul(sxy.mul(2).add(C2));
    const den = mx.square().add(my.square()).add(C1).mul(sxx.add(syy).add(C2));
    return num.div(den).mean([1, 2, 3]);
  });
}

/**
 * The mean of SSIM over `scales` dyadic scales (full size, then 2 x 2 average pooled, ...) per image [B];
 * scales whose images are smaller than the window are left out (at least the full size must fit).
 */
export function msSSIM(x: Tensor, y: Tensor, { scales = 3, ...o }: SSIMOptions & { scales?: number } = {}): Tensor {
  checkPair('msSSIM', x, y);
  if (!(Number.isSafeInteger(scales) && scales >= 1)) throw new RangeError(`msSSIM: scales must be a positive integer, got ${scales}`);
  const window = o.window ?? 11;
  return tidy(() => {
    let [a, b] = [x, y];
    let total = ssim(a, b, o);
    let n = 1;
    for (; n < scales && Math.min(a.dim(2), a.dim(3)) >= 2 * window; n++) {
      [a, b] = [F.avgPool2d(a, 2), F.avgPool2d(b, 2)];
      total = total.add(ssim(a, b, o));
    }
    return total.div(n);
  });
}
