/**
 * Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall
 * Metric for Assessing Generative Models", Sec. 2, Eq. 1-2): each set's manifold is the
 * union of balls around its points, each ball reaching that point's k-th nearest neighbour
 * in the same set (k = 3 by default, the point itself excluded).
 *
 *   f(phi, Phi) = 1 if ||phi - phi'|| <= ||phi' - NN_k(phi', Phi)|| for some phi' in Phi, else 0
 *   precision   = mean over generated phi_g of f(phi_g, Phi_real)   (fidelity: samples look real)
 *   recall      = mean over real phi_r of f(phi_r, Phi_gen)         (coverage: modes are not dropped)
 *
 * Distances come from |a|^2 - 2 a.b + |b|^2 in blocks of `batchSize` rows, so memory stays
 * at batchSize x N distances (10k x 10k features never form one matrix); three passes
 * (real-real, gen-gen, gen-real) cost about 6 N^2 d flops.
 *
 * @example
 *   const { precision, recall } = precisionRecall(realFeatures, genFeatures); // [N, d], [M, d]
 */
import { tensor } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { checkFeatures, checkPositiveInt, checkSameDim, rowBlocks, squaredDistances } from './common';

/** Options of precisionRecall. */
export interface PrecisionRecallOptions {
  /** Neighbourhood size k (default 3, the paper's choice). */
  k?: number;
  /** Rows per block of the distance computations (default 1000): memory is batchSize x N. */
  batchSize?: number;
  /** Precision of the distances (default 'float32', as the reference implementation; 'float64' for exact ties). */
  dtype?: 'float32' | 'float64';
}

/** Improved precision and recall. */
export interface PrecisionRecallResult {
  /** Fraction of generated samples inside the real manifold. */
  precision: number;
  /** Fraction of real samples inside the generated manifold. */
  recall: number;
  k: number;
}

/** Improved precision and recall of generated features against real ones (module header). */
export function precisionRecall(real: Tensor, generated: Tensor, { k = 3, batchSize = 1000, dtype = 'float32' }: PrecisionRecallOptions = {}): PrecisionRecallResult {
  const fn = 'precisionRecall';
  checkPositiveInt(fn, 'k', k);
  checkPositiveInt(fn, 'batchSize', batchSize);
  if (dtype !== 'float32' && dtype !== 'float64') throw new RangeError(`${fn}: dtype must be 'float32' or 'float64', got ${JSON.stringify(dtype)}`);
  checkFeatures(fn, 'real', real, k + 1);
  checkFeatures(fn, 'generated', generated, k + 1);
  checkSameDim(fn, real, generated);
  return tidy(() => {
    const r = real.to({ dtype });
    const g = generated.to({ dtype });
    const radR = knnRadiiSquared(r, k, batchSize); // [N]
    const radG = knnRadiiSquared(g, k, batchSize); // [M]
    const rNorm = r.square().sum(1); // [N]
    let inReal = 0;
    const covered = new Uint8Array(r.dim(0));
    for (const [start, len] of rowBlocks(g.dim(0), batchSize)) {
      tidy(() => {
        const d = squaredDistances(g.narrow(0, start, len), r, rNorm); // [b, N]
        inReal += d.le(radR.unsqueeze(0)).any(1).sum().item();
        const hit = d
          .le(radG.narrow(0, start, len).unsqueeze(1))
          .any(0)
          .data() as Uint8Array; // [N] bool
        for (let i = 0; i < hit.length; i++) covered[i] |= hit[i];
      });
    }
    const recalled = covered.reduce((a, b) => a + b, 0);
    return { precision: inReal / g.dim(0), recall: recalled / r.dim(0), k };
  });
}

/**
 * Squared distance from each row of x [N, d] to its k-th nearest neighbour among the other
 * rows ([N], x's dtype): the (k+1)-th smallest distance of the row, its own 0 being the first.
 */
export function knnRadiiSquared(x: Tensor, k = 3, batchSize = 1000): Tensor {
  checkPositiveInt('knnRadiiSquared', 'k', k);
  checkPositiveInt('knnRadiiSquared', 'batchSize', batchSize);
  checkFeatures('knnRadiiSquared', 'x', x, k + 1);
  return tidy(() => {
    const norm = x.square().sum(1); // [N]
    const parts: number[] = [];
    for (const [start, len] of rowBlocks(x.dim(0), batchSize)) {
      tidy(() => {
        const d = squaredDistances(x.narrow(0, start, len), x, norm); // [b, N]
        const kth = d.topk(k + 1, 1, false)[0].select(1, k); // [b]
        parts.push(...kth.toFloat64Array());
      });
    }
    return tensor(Float64Array.from(parts), { dtype: x.dtype, device: x.device });
  });
}
