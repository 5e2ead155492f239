/**
 * A proxy for cropped-looking samples (SDXL's micro-conditioning, Podell et al. 2023, Sec. 2.2):
 * the share of images whose content touches the border. Emoji sit on white with a margin, so a
 * whole emoji leaves its outer ring white; a crop cuts through the drawing there. A ring pixel is
 * content when some channel is darker than `threshold` (in [0, 255]); an image touches the border
 * when more than `fraction` of its ring is content.
 *
 * @example
 *   borderTouchRate(samples); // 0.03: 3% of the images reach the border
 */
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

/** Options of borderTouchRate (defaults: a ring of S/32 px, darker than 192, more than 2% of the ring). */
export interface BorderOptions {
  ring?: number;
  threshold?: number;
  fraction?: number;
}

/** The per-image flags (1: touches) of images [n, C, H, W], uint8 in [0, 255] or float in [-1, 1]. */
export function borderTouches(x: Tensor, { ring, threshold = 192, fraction = 0.02 }: BorderOptions = {}): boolean[] {
  if (x.ndim !== 4) throw new TypeError(`borderTouches: expected images [n, C, H, W], got [${x.shape.join(', ')}]`);
  const [H, W] = [x.dim(2), x.dim(3)];
  const r = ring ?? Math.max(1, Math.round(Math.min(H, W) / 32));
  if (!(Number.isSafeInteger(r) && r >= 1 && 2 * r < Math.min(H, W))) throw new RangeError(`borderTouches: ring must be an integer in [1, ${Math.ceil(Math.min(H, W) / 2) - 1}], got ${r}`);
  const flags = noGrad(() =>
    tidy(() => {
      const v = x.dtype === 'uint8' ? x.float() : x.float().add(1).mul(127.5); // [n, C, H, W] in [0, 255]
      const dark = v.min(1).lt(threshold).float(); // [n, H, W]: some channel darker than the threshold
      const inner = dark
        .narrow(1, r, H - 2 * r)
        .narrow(2, r, W - 2 * r)
        .sum([1, 2]); // [n]
      const ringShare = dark
        .sum([1, 2])
        .sub(inner)
        .div(H * W - (H - 2 * r) * (W - 2 * r)); // [n]
      return ringShare.gt(fraction).toFloat64Array();
    }),
  );
  return Array.from(flags, (f) => f > 0);
}

/** The share of images [n, C, H, W] whose content touches the border (borderTouches). */
export function borderTouchRate(x: Tensor, opts: BorderOptions = {}): number {
  const f = borderTouches(x, opts);
  return f.filter(Boolean).length / f.length;
}
