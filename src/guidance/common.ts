/**
 * What the guidance methods share: the guidance combination D_base + w (D_target - D_base)
 * (EDM2's `ref.lerp(D, w)`), the argument checks, and the guidance interval (Kynkaanniemi et
 * al. 2024): guide only for sigma in (sigmaLo, sigmaHi], elsewhere evaluate the unguided
 * denoiser alone (one network call).
 *
 * @example
 *   const D = guidanceInterval(guided, conditional, [0.28, 2.9]); // guided inside, conditional outside
 *   const d = guide(Du, Dc, 7.5);                                  // Du + 7.5 (Dc - Du)
 */
import { tensor } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';

/** base + w (target - base), by torch.lerp: w = 1 gives target and w = 0 gives base exactly; w a number or per sample [B, 1, ..., 1]. */
export function guide(base: Tensor, target: Tensor, w: number | Tensor): Tensor {
  return base.lerp(target, w);
}

/** A finite number, or a clear error naming the option. */
export function checkFinite(who: string, name: string, v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`${who}: ${name} must be a finite number, got ${String(v)}`);
  return v;
}

/** The labels to guide toward: cond.classLabels, or a clear error. */
export function requireLabels(who: string, cond: Conditioning | undefined): Tensor {
  const labels = cond?.classLabels;
  if (labels === undefined) throw new TypeError(`${who}: cond.classLabels is required (the class to guide toward); pass it through the sampler's options.cond`);
  return labels;
}

/** A guidance interval [sigmaLo, sigmaHi] checked: 0 <= lo < hi (hi may be Infinity). */
export function checkInterval(who: string, interval: readonly [number, number]): [number, number] {
  const [lo, hi] = interval ?? [];
  if (!Array.isArray(interval) || interval.length !== 2 || !(lo >= 0) || !(hi > lo))
    throw new RangeError(`${who}: interval must be [sigmaLo, sigmaHi] with 0 <= sigmaLo < sigmaHi, got ${JSON.stringify(interval)}`);
  return [lo, hi];
}

/** Per sample: is sigma in the half-open interval (lo, hi]? */
export function insideInterval(sigma: Tensor, [lo, hi]: readonly [number, number]): boolean[] {
  return Array.from(sigma.toFloat64Array(), (s) => s > lo && s <= hi);
}

/**
 * The guidance interval (Kynkaanniemi et al. 2024, "Applying guidance to a limited interval"):
 * the guided denoiser for sigma in (sigmaLo, sigmaHi], the unguided one (w = 1) elsewhere. A
 * batch entirely outside costs one evaluation of `unguided` only; a mixed batch (samplers never
 * make one) evaluates both and picks per sample.
 */
export function guidanceInterval(guided: Denoiser, unguided: Denoiser, interval: readonly [number, number]): Denoiser {
  const iv = checkInterval('guidanceInterval', interval);
  return (x, sigma, cond) => {
    const inside = insideInterval(sigma, iv);
    if (inside.every((b) => b)) return guided(x, sigma, cond);
    if (!inside.some((b) => b)) return unguided(x, sigma, cond);
    return tidy(() => {
      const mask = tensor(inside, { dtype: 'bool', device: x.device }).reshape([x.dim(0), ...new Array<number>(x.ndim - 1).fill(1)]); // [B, 1, ..., 1]
      return mask.where(guided(x, sigma, cond), unguided(x, sigma, cond));
    });
  };
}
