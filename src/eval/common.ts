/**
 * Shared checks and helpers of the metrics: feature sets are 2-D tensors [N, d] of finite
 * values; sums run in float64.
 *
 * @example
 *   const [n, d] = checkFeatures('precisionRecall', 'real', real, 2);
 */
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

/** Checks that `t` is a floating tensor [N, d] with N >= minRows and finite values; returns [N, d]. */
export function checkFeatures(fn: string, name: string, t: Tensor, minRows = 1): [number, number] {
  if (!(t instanceof Tensor)) throw new TypeError(`${fn}: ${name} must be a Tensor [N, d], got ${typeof t}`);
  if (t.ndim !== 2) throw new RangeError(`${fn}: ${name} must be 2-D [N, d], got shape [${t.shape.join(', ')}]`);
  const [n, d] = t.shape;
  if (n < minRows) throw new RangeError(`${fn}: ${name} needs at least ${minRows} rows, got shape [${n}, ${d}]`);
  if (d < 1) throw new RangeError(`${fn}: ${name} has no feature columns (shape [${n}, ${d}])`);
  if (!tidy(() => t.isfinite().all().item())) throw new RangeError(`${fn}: ${name} has non-finite values (NaN or inf)`);
  return [n, d];
}

/** Checks that two feature sets have the same feature dimension. */
export function checkSameDim(fn: string, a: Tensor, b: Tensor): void {
  if (a.dim(1) !== b.dim(1)) throw new RangeError(`${fn}: feature dimensions differ: ${a.dim(1)} and ${b.dim(1)}`);
}

/** Checks a positive integer option. */
export function checkPositiveInt(fn: string, name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${fn}: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** Rows [start, start + len) of every block of `batch` rows of an n-row set. */
export function* rowBlocks(n: number, batch: number): Generator<[number, number]> {
  for (let start = 0; start < n; start += batch) yield [start, Math.min(batch, n - start)];
}

/** Squared Euclidean distances [b, m] between rows of a [b, d] and b [m, d] (|a|^2 - 2 a.b + |b|^2, clamped at 0). */
export function squaredDistances(a: Tensor, b: Tensor, bNormSq?: Tensor): Tensor {
  return tidy(() => {
    const an = a.square().sum(1, true); // [b, 1]
    const bn = bNormSq ?? b.square().sum(1); // [m]
    return an
      .add(bn)
      .sub(a.matmul(b.transpose(0, 1)).mul(2))
      .clamp(0, null);
  });
}
