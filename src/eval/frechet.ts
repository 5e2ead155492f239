/**
 * The Frechet distance between two sets of features (Heusel et al. 2017, "GANs Trained by a
 * Two Time-Scale Update Rule ...", Eq. 6; FID when the features are Inception's): the
 * squared 2-Wasserstein distance between the Gaussians fitted to each set,
 *
 *   FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})
 *
 * computed in float64 with the symmetric form tr((S1 S2)^{1/2}) = tr((S1^{1/2} S2 S1^{1/2})^{1/2})
 * (the two matrices are similar), so only symmetric eigendecompositions are needed, and
 * eigenvalues within rounding noise of 0 (|lambda| <= d eps max lambda) or below it are set
 * to exactly 0 (src/eval/linalg.ts, clampNoise).
 *
 * Singular covariances (N <= d, or features confined to a subspace): a covariance from N
 * samples has rank at most N - 1, so with N <= d it is singular. The formula stays well
 * defined for positive semidefinite matrices (it is the exact W2^2 between the two
 * degenerate Gaussians) and this code computes it without an eps * I offset, unlike
 * sqrtm(S1 S2) code that can return complex values there. Setting the noise eigenvalues to
 * 0 matters here: left in, each adds about sqrt(eps lambda_max) to tr(.)^{1/2}, a ~1e-8
 * relative error. The estimate is still biased upward by O(d / N): compare FDs only at equal N.
 *
 * Statistics of a reference set are computed once (`featureStats`) and saved as JSON or
 * safetensors (`saveFeatureStats` / `loadFeatureStats`).
 *
 * @example
 *   const ref = featureStats(realFeatures, { space: 'fmnist-classifier' }); // realFeatures [N, d]
 *   saveFeatureStats('ref-stats.safetensors', ref);
 *   const fd = frechetDistance(loadFeatureStats('ref-stats.safetensors'), featureStats(genFeatures, { space: 'fmnist-classifier' }));
 */
import * as fs from 'fs';
import { tensor } from '../engine/create';
import { parseSafetensors, serializeSafetensors } from '../engine/safetensors';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { clampNoise, psdSqrt, symmetricEigen } from './linalg';
import { checkFeatures } from './common';

/** Mean and covariance of a feature set, in float64. */
export interface FeatureStats {
  /** [d] mean. */
  mu: Float64Array;
  /** [d, d] covariance (unbiased, divided by n - 1), row-major. */
  sigma: Float64Array;
  /** Number of samples the statistics came from. */
  n: number;
  /** Optional name of the feature space (network and layer); FD refuses to compare two different names. */
  space?: string;
}

/** The two parts of the Frechet distance. */
export interface FrechetTerms {
  /** meanTerm + covTerm, clamped at 0 (rounding can leave about -1e-12 tr(S) for equal statistics). */
  distance: number;
  /** |mu1 - mu2|^2. */
  meanTerm: number;
  /** tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2}). */
  covTerm: number;
}

/** Mean and unbiased covariance (float64) of features [N, d], N >= 2. */
export function featureStats(feats: Tensor, { space }: { space?: string } = {}): FeatureStats {
  const [n, d] = checkFeatures('featureStats', 'feats', feats, 2);
  return tidy(() => {
    const x = feats.to({ dtype: 'float64' }); // [N, d]
    const mu = x.mean(0); // [d]
    const xc = x.sub(mu); // [N, d]
    const sigma = xc
      .transpose(0, 1)
      .matmul(xc)
      .div(n - 1); // [d, d]
    const s = symmetrize(sigma.toFloat64Array(), d);
    return { mu: mu.toFloat64Array(), sigma: s, n, ...(space === undefined ? {} : { space }) };
  });
}

/** FD between two feature sets [N, d] or their statistics (float64; see the module header). */
export function frechetDistance(a: FeatureStats | Tensor, b: FeatureStats | Tensor): number {
  return frechetTerms(a, b).distance;
}

/** The Frechet distance with its mean and covariance terms. */
export function frechetTerms(a: FeatureStats | Tensor, b: FeatureStats | Tensor): FrechetTerms {
  const s1 = a instanceof Tensor ? featureStats(a) : checkStats('frechetDistance', 'a', a);
  const s2 = b instanceof Tensor ? featureStats(b) : checkStats('frechetDistance', 'b', b);
  const d = s1.mu.length;
  if (s2.mu.length !== d) throw new RangeError(`frechetDistance: feature dimensions differ: a has ${d}, b has ${s2.mu.length}`);
  if (s1.space !== undefined && s2.space !== undefined && s1.space !== s2.space)
    throw new RangeError(`frechetDistance: statistics come from different feature spaces: a '${s1.space}', b '${s2.space}'`);
  let meanTerm = 0;
  for (let i = 0; i < d; i++) meanTerm += (s1.mu[i] - s2.mu[i]) ** 2;
  const r = psdSqrt(s1.sigma, d); // S1^{1/2}
  const m = symmetrize(matmul3(r, s2.sigma, r, d), d); // S1^{1/2} S2 S1^{1/2}
  const { values } = symmetricEigen(m, d, { vectors: false });
  let trSqrt = 0;
  for (const l of clampNoise(values, d)) trSqrt += Math.sqrt(l);
  const covTerm = trace(s1.sigma, d) + trace(s2.sigma, d) - 2 * trSqrt;
  return { distance: Math.max(meanTerm + covTerm, 0), meanTerm, covTerm };
}

/** a b c for row-major d x d float64 matrices (libtorch's BLAS matmul). */
function matmul3(a: Float64Array, b: Float64Array, c: Float64Array, d: number): Float64Array {
  return tidy(() => {
    const t = (v: Float64Array) => tensor(v, { shape: [d, d], dtype: 'float64' });
    return t(a).matmul(t(b)).matmul(t(c)).toFloat64Array();
  });
}

/** (m + m^T) / 2, in place: removes rounding asymmetry before an eigendecomposition. */
function symmetrize(m: Float64Array, d: number): Float64Array {
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < i; j++) {
      const v = 0.5 * (m[i * d + j] + m[j * d + i]);
      m[i * d + j] = v;
      m[j * d + i] = v;
    }
  }
  return m;
}

function trace(m: Float64Array, d: number): number {
  let t = 0;
  for (let i = 0; i < d; i++) t += m[i * d + i];
  return t;
}

function checkStats(fn: string, name: string, s: FeatureStats): FeatureStats {
  const d = s?.mu?.length;
  if (!(s?.mu instanceof Float64Array) || !(s.sigma instanceof Float64Array) || d < 1)
    throw new TypeError(`${fn}: ${name} must be a Tensor [N, d] or FeatureStats { mu: Float64Array, sigma: Float64Array, n }`);
  if (s.sigma.length !== d * d) throw new RangeError(`${fn}: ${name}.sigma has ${s.sigma.length} entries, [${d}, ${d}] needs ${d * d}`);
  if (!(Number.isSafeInteger(s.n) && s.n >= 2)) throw new RangeError(`${fn}: ${name}.n must be an integer >= 2, got ${s.n}`);
  if (!s.mu.every(Number.isFinite) || !s.sigma.every(Number.isFinite)) throw new RangeError(`${fn}: ${name} has non-finite statistics`);
  return s;
}

// ---- saving and loading statistics ----

const FORMAT = 'diffuse-feature-stats';

/** The JSON form of FeatureStats (numbers round-trip exactly: JSON.stringify writes the shortest exact decimal). */
export interface FeatureStatsJson {
  format: typeof FORMAT;
  n: number;
  dim: number;
  space?: string;
  mu: number[];
  /** Row-major [dim * dim]. */
  sigma: number[];
}

/** FeatureStats as a plain JSON object. */
export function featureStatsToJson(s: FeatureStats): FeatureStatsJson {
  checkStats('featureStatsToJson', 'stats', s);
  return { format: FORMAT, n: s.n, dim: s.mu.length, ...(s.space === undefined ? {} : { space: s.space }), mu: Array.from(s.mu), sigma: Array.from(s.sigma) };
}

/** FeatureStats from featureStatsToJson's object (validated). */
export function featureStatsFromJson(j: FeatureStatsJson, source = 'JSON'): FeatureStats {
  if (j?.format !== FORMAT) throw new TypeError(`featureStatsFromJson: ${source} is not a '${FORMAT}' object (format: ${JSON.stringify(j?.format)})`);
  if (!Array.isArray(j.mu) || !Array.isArray(j.sigma) || j.mu.length !== j.dim)
    throw new TypeError(`featureStatsFromJson: ${source} needs mu (${j.dim} numbers) and sigma (${j.dim} x ${j.dim} numbers)`);
  const s = { mu: Float64Array.from(j.mu), sigma: Float64Array.from(j.sigma), n: j.n, ...(j.space === undefined ? {} : { space: j.space }) };
  return checkStats('featureStatsFromJson', source, s);
}

/** Writes statistics to `path`: JSON if it ends in .json, else safetensors (mu, sigma in float64; n, space in metadata). */
export function saveFeatureStats(path: string, s: FeatureStats): void {
  checkStats('saveFeatureStats', 'stats', s);
  const d = s.mu.length;
  const bytes = path.endsWith('.json')
    ? Buffer.from(JSON.stringify(featureStatsToJson(s)))
    : serializeSafetensors(
        [
          { name: 'mu', dtype: 'float64', shape: [d], data: new Uint8Array(s.mu.buffer, s.mu.byteOffset, s.mu.byteLength) },
          { name: 'sigma', dtype: 'float64', shape: [d, d], data: new Uint8Array(s.sigma.buffer, s.sigma.byteOffset, s.sigma.byteLength) },
        ],
        { format: FORMAT, n: String(s.n), ...(s.space === undefined ? {} : { space: s.space }) },
      );
  fs.writeFileSync(path, bytes);
}

/** Reads statistics written by saveFeatureStats (the format follows the extension, as there). */
export function loadFeatureStats(path: string): FeatureStats {
  const bytes = fs.readFileSync(path);
  if (path.endsWith('.json')) return featureStatsFromJson(JSON.parse(bytes.toString('utf8')) as FeatureStatsJson, path);
  const { metadata, entries } = parseSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), path);
  const get = (name: string) => {
    const e = entries.find((x) => x.name === name);
    if (!e || e.dtype !== 'float64') throw new TypeError(`loadFeatureStats: ${path} has no float64 tensor '${name}'`);
    return new Float64Array(e.data.slice().buffer);
  };
  if (metadata.format !== FORMAT) throw new TypeError(`loadFeatureStats: ${path} is not a '${FORMAT}' file (metadata format: ${JSON.stringify(metadata.format)})`);
  const s = { mu: get('mu'), sigma: get('sigma'), n: Number(metadata.n), ...(metadata.space === undefined ? {} : { space: metadata.space }) };
  return checkStats('loadFeatureStats', path, s);
}
