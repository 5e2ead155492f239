/**
 * Distances between sample sets of low-dimensional data (the 2-D toys), where no feature
 * network is needed and the metrics can act on the samples themselves.
 *
 * - Energy distance (Szekely & Rizzo 2013, "Energy statistics", Eq. 2.1):
 *     E(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|  >= 0, and 0 only when X ~ Y.
 *   Default: U-statistics for the within-set terms (pairs i != j), an unbiased estimate (so
 *   it can be slightly negative for two samples of one law); { unbiased: false } gives the
 *   V-statistic (every pair, always >= 0). scipy.stats.energy_distance reports the square
 *   root of the V-statistic, for 1-D data.
 * - Sliced Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015, Eq. 5):
 *     SW_p(X, Y) = ( mean over unit directions theta of W_p^p(theta.X, theta.Y) )^{1/p}
 *   with seeded random directions, and the exact 1-D W_p between the two empirical
 *   measures (quantile functions matched on the merged breakpoints i/n and j/m; sets of
 *   different sizes are fine).
 *
 * @example
 *   const gmm = GaussianMixture.ring(8);
 *   const x = gmm.sample(2000, new Generator(0)), y = gmm.sample(2000, new Generator(1));
 *   energyDistance(x, y);              // ~0
 *   slicedWasserstein(x, y, { p: 2 }); // small: sampling noise only
 */
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { checkFeatures, checkPositiveInt, checkSameDim } from './common';

/** Options of energyDistance. */
export interface EnergyDistanceOptions {
  /** U-statistics for the within-set means (default true); false: V-statistics. */
  unbiased?: boolean;
}

/** Energy distance E(X, Y) of samples x [n, D] and y [m, D] (module header), in float64. */
export function energyDistance(x: Tensor, y: Tensor, { unbiased = true }: EnergyDistanceOptions = {}): number {
  checkFeatures('energyDistance', 'x', x, 2);
  checkFeatures('energyDistance', 'y', y, 2);
  checkSameDim('energyDistance', x, y);
  const dim = x.dim(1);
  const xd = x.toFloat64Array();
  const yd = y.toFloat64Array();
  const n = x.dim(0);
  const m = y.dim(0);
  const within = (z: Float64Array, k: number) => sumDistances(z, z, dim) / (unbiased ? k * (k - 1) : k * k);
  return (2 * sumDistances(xd, yd, dim)) / (n * m) - within(xd, n) - within(yd, m);
}

/**
 * Sum of Euclidean distances |a_i - b_j| over all pairs of rows of a [n, D] and b [m, D]
 * (row-major float64), in plain JavaScript: for low D a loop beats tensor temporaries
 * ~50x, and self-distances come out exactly 0. Row sums first, then their total.
 */
function sumDistances(a: Float64Array, b: Float64Array, dim: number): number {
  const n = a.length / dim;
  const m = b.length / dim;
  let total = 0;
  for (let i = 0; i < n; i++) {
    let row = 0;
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += (a[i * dim + k] - b[j * dim + k]) ** 2;
      row += Math.sqrt(s);
    }
    total += row;
  }
  return total;
}

/** Options of slicedWasserstein. */
export interface SlicedWassersteinOptions {
  /** Order p >= 1 of the Wasserstein distance (default 2). */
  p?: number;
  /** Number of random directions (default 128). */
  projections?: number;
  /** Seed of the directions (default 0). */
  seed?: number;
  /** Explicit directions [L, D] instead of random ones (normalized here). */
  directions?: Tensor;
}

/** Sliced p-Wasserstein distance SW_p of samples x [n, D] and y [m, D] (module header). */
export function slicedWasserstein(x: Tensor, y: Tensor, { p = 2, projections = 128, seed = 0, directions }: SlicedWassersteinOptions = {}): number {
  const fn = 'slicedWasserstein';
  checkFeatures(fn, 'x', x, 1);
  checkFeatures(fn, 'y', y, 1);
  checkSameDim(fn, x, y);
  if (!(p >= 1 && Number.isFinite(p))) throw new RangeError(`${fn}: p must be a finite number >= 1, got ${p}`);
  checkPositiveInt(fn, 'projections', projections);
  const dim = x.dim(1);
  if (directions !== undefined && (directions.ndim !== 2 || directions.dim(1) !== dim)) throw new RangeError(`${fn}: directions must have shape [L, ${dim}], got [${directions.shape.join(', ')}]`);
  return tidy(() => {
    const theta = directions ? directions.to({ dtype: 'float64', device: x.device }) : new Generator(seed).randn([projections, dim], { dtype: 'float64', device: x.device }); // [L, D]
    const norms = theta.norm(2, 1, true); // [L, 1]
    if (!(norms.min().item() > 0)) throw new RangeError(`${fn}: a direction has zero length`);
    const u = theta.div(norms);
    const proj = (z: Tensor) => z.to({ dtype: 'float64', device: x.device }).matmul(u.transpose(0, 1)).transpose(0, 1).sort(1)[0].contiguous(); // [L, n] sorted
    const px = proj(x).toFloat64Array();
    const py = proj(y).toFloat64Array();
    const n = x.dim(0);
    const m = y.dim(0);
    const L = u.dim(0);
    let sum = 0;
    for (let l = 0; l < L; l++) sum += wassersteinPP1d(px.subarray(l * n, (l + 1) * n), py.subarray(l * m, (l + 1) * m), p);
    return (sum / L) ** (1 / p);
  });
}

/**
 * W_p^p between the empirical measures of two sorted 1-D samples (uniform weights):
 * the integral over q in (0, 1) of |A^{-1}(q) - B^{-1}(q)|^p, exact on the merged
 * breakpoints i/n, j/m (compared as integers i m vs j n, so equal fractions meet exactly).
 */
export function wassersteinPP1d(a: ArrayLike<number>, b: ArrayLike<number>, p: number): number {
  const n = a.length;
  const m = b.length;
  if (n < 1 || m < 1) throw new RangeError(`wassersteinPP1d: both samples need at least one value, got ${n} and ${m}`);
  let i = 0;
  let j = 0;
  let prev = 0; // position in units of 1 / (n m)
  let acc = 0;
  while (i < n && j < m) {
    const ea = (i + 1) * m;
    const eb = (j + 1) * n;
    const next = Math.min(ea, eb);
    acc += (next - prev) * Math.abs(a[i] - b[j]) ** p;
    prev = next;
    if (ea === next) i++;
    if (eb === next) j++;
  }
  return acc / (n * m);
}
