/**
 * SDXL's micro-conditioning (Podell et al. 2023, "SDXL", Sec. 2.2) on a square-image dataset:
 * the training images are randomly rescaled and cropped, and the network is told how, as
 * (h, w, top, left) in pixels (`cond.micro`, embedded by the U-Net's microConditioning):
 *
 * - size: the image is reduced to s ~ U{sizeMin..S} px (area) and enlarged back (bilinear), a
 *   small original upscaled; (h, w) = (s, s). Without sizeMin, (h, w) = (S, S).
 * - crop: with probability cropProb it is enlarged by z ~ U[1, cropZoom] to round(S z) px and
 *   cropped back to S at integer offsets top, left ~ U{0..round(S z) - S}; otherwise (0, 0).
 *
 * At sampling, (S, S, 0, 0) asks for "uncropped, full size" (`microValues`). The same crops
 * without `microCond` are the control run: a model that cannot tell a crop from a whole image.
 *
 * @example
 *   const { x: crops, micro } = microAugment(x, { cropZoom: 1.5, cropProb: 0.5, sizeMin: 16, generator }); // micro [B, 4]
 */
import { cat, tensor } from '../engine/create';
import { interpolate } from '../engine/functional';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

/** The crops and rescales (TrainConfig's cropZoom, cropProb, sizeMin). */
export interface MicroAugmentOptions {
  cropZoom: number;
  cropProb: number;
  sizeMin: number | null;
  generator: Generator;
}

/** Whether a config trains with micro-conditioning's crops or rescales (with or without microCond). */
export function microAugments(c: Pick<MicroAugmentOptions, 'cropZoom' | 'sizeMin'>): boolean {
  return c.cropZoom > 1 || c.sizeMin !== null;
}

/** The augmented images [B, C, S, S] and each one's (h, w, top, left) [B, 4] float32 (see the module comment). Draws 4 uniforms per image from the generator, always. */
export function microAugment(x: Tensor, { cropZoom, cropProb, sizeMin, generator }: MicroAugmentOptions): { x: Tensor; micro: Tensor } {
  if (x.ndim !== 4 || x.dim(2) !== x.dim(3)) throw new TypeError(`microAugment: x must be square images [B, C, S, S], got [${x.shape.join(', ')}]`);
  const [B, S] = [x.dim(0), x.dim(2)];
  if (sizeMin !== null && !(Number.isSafeInteger(sizeMin) && sizeMin >= 1 && sizeMin <= S)) throw new RangeError(`microAugment: sizeMin must be an integer in [1, ${S}], got ${sizeMin}`);
  if (!(cropZoom >= 1)) throw new RangeError(`microAugment: cropZoom must be >= 1, got ${cropZoom}`);
  const u = tidy(() => generator.rand([B, 4]).toFloat64Array()); // per image: size, crop?, zoom, offsets
  const rows: number[] = [];
  const out = tidy(() => {
    const imgs: Tensor[] = [];
    for (let i = 0; i < B; i++) {
      const [uSize, uCrop, uZoom, uOff] = u.subarray(4 * i, 4 * i + 4);
      const s = sizeMin === null ? S : sizeMin + Math.min(Math.floor(uSize * (S - sizeMin + 1)), S - sizeMin);
      const big = cropZoom > 1 && uCrop < cropProb ? Math.round(S * (1 + uZoom * (cropZoom - 1))) : S;
      // One uniform for both offsets: top = its integer part, left = the next digit (independent and uniform on {0..m}^2).
      const m = big - S + 1;
      const k = Math.min(Math.floor(uOff * m * m), m * m - 1);
      const [top, left] = [Math.floor(k / m), k % m];
      let xi = x.narrow(0, i, 1);
      if (s < S) xi = interpolate(interpolate(xi, { size: [s, s], mode: 'area' }), { size: [S, S], mode: 'bilinear' });
      if (big > S)
        xi = interpolate(xi, { size: [big, big], mode: 'bilinear' })
          .narrow(2, top, S)
          .narrow(3, left, S);
      imgs.push(xi.contiguous());
      rows.push(s, s, top, left);
    }
    return cat(imgs, 0);
  });
  return { x: out, micro: tensor(rows, { dtype: 'float32' }).reshape([B, 4]) };
}

/**
 * The micro-conditioning of n samples: (h, w, top, left) for each, default (S, S, 0, 0), SDXL's
 * "uncropped, full size".
 *
 * @example
 *   microValues(4, 64);                   // [4, 4]: each row 64, 64, 0, 0
 *   microValues(4, 64, [64, 64, 16, 0]);  // ask for a crop 16 px from the top
 */
export function microValues(n: number, size: number, values: readonly number[] = [size, size, 0, 0]): Tensor {
  if (values.length !== 4 || values.some((v) => !Number.isFinite(v) || v < 0)) throw new RangeError(`microValues: expected 4 non-negative numbers (h, w, top, left), got ${JSON.stringify(values)}`);
  return tidy(() =>
    tensor([...values], { dtype: 'float32' })
      .reshape([1, 4])
      .expand([n, 4])
      .contiguous(),
  );
}
