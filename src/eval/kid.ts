/**
 * Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", Sec. 4 / App. D):
 * the unbiased estimate of the squared maximum mean discrepancy with the cubic polynomial
 * kernel k(x, y) = (x.y / d + 1)^3 (KID when the features are Inception's), averaged over
 * random subsets of equal size drawn from both sets.
 *
 *   MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1)) - 2 sum_{i,j} k(x_i, y_j) / (mn)
 *
 * Unlike FD it is unbiased: its expectation is 0 when both sets come from one distribution
 * (so a single estimate can be slightly negative), whatever the sample size. Sums run in
 * float64. Subsets are drawn without replacement, seeded (torch.randperm streams).
 *
 * @example
 *   const kid = kernelInceptionDistance(realFeatures, genFeatures, { seed: 0 }); // [N, d], [M, d]
 *   `${kid.mean} +- ${kid.stderr}`;
 */
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { checkFeatures, checkPositiveInt, checkSameDim } from './common';

/** Options of kernelInceptionDistance. */
export interface KIDOptions {
  /** Number of subsets (default 100, as Binkowski et al.). */
  numSubsets?: number;
  /** Samples per subset from each set (default 1000; capped at the smaller set's size). */
  subsetSize?: number;
  /** Seed of the subset draws (default 0). */
  seed?: number;
}

/** KID over subsets. */
export interface KIDResult {
  /** Mean of the subset estimates: the KID. */
  mean: number;
  /** Sample standard deviation of the subset estimates (n - 1 denominator; NaN for one subset). */
  std: number;
  /** std / sqrt(numSubsets). Subsets of a small set overlap, so this understates the true uncertainty then. */
  stderr: number;
  /** The unbiased MMD^2 of each subset. */
  values: number[];
  numSubsets: number;
  subsetSize: number;
}

/** The cubic polynomial kernel matrix (x y^T / d + 1)^3 [m, n] of x [m, d], y [n, d] (Binkowski et al., Eq. 9 with d the feature dimension). */
export function polynomialKernel(x: Tensor, y: Tensor): Tensor {
  return tidy(() => x.matmul(y.transpose(0, 1)).div(x.dim(1)).add(1).pow(3));
}

/** Unbiased MMD^2 with the cubic kernel (module header), in float64; x [m, d], y [n, d], m, n >= 2. */
export function mmd2Unbiased(x: Tensor, y: Tensor): number {
  checkPair('mmd2Unbiased', x, y);
  return tidy(() => mmd2(x.to({ dtype: 'float64' }), y.to({ dtype: 'float64' }), true));
}

/**
 * The biased (V-statistic) MMD^2, diagonal terms included and every sum divided by its
 * full count: positive even for two samples of one distribution (about tr terms / m).
 * For comparison; KID uses the unbiased estimate.
 */
export function mmd2Biased(x: Tensor, y: Tensor): number {
  checkPair('mmd2Biased', x, y);
  return tidy(() => mmd2(x.to({ dtype: 'float64' }), y.to({ dtype: 'float64' }), false));
}

/** KID of features x [m, d] against y [n, d]: the mean (and standard error) of mmd2Unbiased over seeded subsets. */
export function kernelInceptionDistance(x: Tensor, y: Tensor, { numSubsets = 100, subsetSize = 1000, seed = 0 }: KIDOptions = {}): KIDResult {
  checkPair('kernelInceptionDistance', x, y);
  checkPositiveInt('kernelInceptionDistance', 'numSubsets', numSubsets);
  if (!Number.isSafeInteger(subsetSize) || subsetSize < 2) throw new RangeError(`kernelInceptionDistance: subsetSize must be an integer >= 2, got ${subsetSize}`);
  const s = Math.min(subsetSize, x.dim(0), y.dim(0));
  const g = new Generator(seed);
  const values: number[] = [];
  tidy(() => {
    const xd = x.to({ dtype: 'float64' });
    const yd = y.to({ dtype: 'float64' });
    for (let i = 0; i < numSubsets; i++) {
      values.push(
        tidy(() => {
          const ix = g.randperm(x.dim(0), { device: x.device }).narrow(0, 0, s); // x's subset first, then y's (the fixture's order)
          const iy = g.randperm(y.dim(0), { device: y.device }).narrow(0, 0, s);
          return mmd2(xd.indexSelect(0, ix), yd.indexSelect(0, iy), true);
        }),
      );
    }
  });
  const mean = values.reduce((a, b) => a + b, 0) / numSubsets;
  const std = numSubsets > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (numSubsets - 1)) : NaN;
  return { mean, std, stderr: std / Math.sqrt(numSubsets), values, numSubsets, subsetSize: s };
}

/** MMD^2 of float64 x [m, d], y [n, d]: unbiased (U-statistic) or biased (V-statistic). */
function mmd2(x: Tensor, y: Tensor, unbiased: boolean): number {
  const m = x.dim(0);
  const n = y.dim(0);
  const within = (z: Tensor, k: number) => {
    const total = polynomialKernel(z, z).sum().item();
    if (!unbiased) return total / (k * k);
    const diag = z.square().sum(1).div(z.dim(1)).add(1).pow(3).sum().item(); // k(z_i, z_i)
    return (total - diag) / (k * (k - 1));
  };
  return within(x, m) + within(y, n) - (2 * polynomialKernel(x, y).sum().item()) / (m * n);
}

function checkPair(fn: string, x: Tensor, y: Tensor): void {
  checkFeatures(fn, 'x', x, 2);
  checkFeatures(fn, 'y', y, 2);
  checkSameDim(fn, x, y);
}
