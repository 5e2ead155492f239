/**
 * Sample quality of a model, end to end: generate samples with a sampler, grid, step count
 * and guidance; quantize them to 8 bits as a PNG would; embed them with the shipped feature
 * network (fmnist-cnn-v1); and compare them with the Fashion-MNIST training split:
 * Frechet distance, KID (with its standard error), improved precision and recall, and,
 * for class-conditional samples, the accuracy of the feature net's own classifier head.
 *
 * @example
 *   const fnet = loadFeatureNet();
 *   const ref = fashionReference(fnet);                       // train split: stats + a 10k subset
 *   const { meta, denoiser } = loadModel('models/fashion-mnist');
 *   const x = generateInBatches(denoiser, meta, { n: 1000, seed: 0, steps: 20, sampler: 'dpmpp-2m', labels: cycleLabels(1000, 10) });
 *   const metrics = imageMetrics(fnet, ref, x, labels);      // { fd, kid, precision, recall, accuracy }
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tensor } from '../engine/create';
import { loadSafetensors, saveSafetensors } from '../engine/safetensors';
import { Generator } from '../engine/random';
import { keep, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { loadFashionMNIST } from '../data/fashion-mnist';
import { generateSamples, GenerateOptions } from '../training/build';
import { ClassifierDataName, loadClassifierData } from '../training/classifier';
import { CheckpointMeta } from '../training/checkpoint';
import { extractFeatures, FeatureNet } from './feature-net';
import { featureStats, FeatureStats, frechetDistance } from './frechet';
import { kernelInceptionDistance } from './kid';
import { precisionRecall } from './precision-recall';
import { MetricValue } from './report';
import { energyDistance, slicedWasserstein } from './toy';
import { odeLogLikelihood } from '../training/likelihood';
import { cacheDir } from '../util/cache';

/** The real images the metrics compare against, in the feature space of one feature net. */
export interface Reference {
  /** What the reference is, e.g. 'fashion-mnist train (60000)'. */
  name: string;
  /** Mean and covariance of every reference image's features (for the Frechet distance). */
  stats: FeatureStats;
  /** Features of a seeded subset [m, d] (for KID and precision/recall); dispose() frees them. */
  feats: Tensor;
  /** 'cache' when read from the cache file, 'computed' when the features were extracted in this call. */
  source: 'cache' | 'computed';
  /** The cache file read or written (absent when caching is off or the file could not be written). */
  cacheFile?: string;
  dispose(): void;
}

/** Options of fashionReference. */
export interface ReferenceOptions {
  /** The dataset (default 'fashion-mnist'; 'emoji', 'emoji:google' or 'emoji:twitter' at the feature net's size). */
  data?: ClassifierDataName;
  split?: 'train' | 'test';
  /** Images in the feature subset for KID and precision/recall (default 10,000). */
  subset?: number;
  /** Seed of the subset (default 0). */
  seed?: number;
  /** A folder for the reference cache, or false to always recompute (default: cacheDir('eval-reference')). */
  cache?: string | false;
}

const REFERENCE_FORMAT = 'diffuse-eval-reference-v1';

/**
 * The Fashion-MNIST split `split` as the reference: statistics of all of it, and `subset`
 * of its images' features (seeded). Extracting the training split's features takes
 * 15-25 s on 2 cores, so the result is cached in a file named after a digest of the
 * feature net's weights, the split's images, subset and seed: any change to those makes
 * a new file, and a damaged file is recomputed.
 */
export function fashionReference(fnet: FeatureNet, opts: ReferenceOptions = {}): Reference {
  return datasetReference(fnet, opts);
}

/**
 * fashionReference for any dataset the classifiers know (`data`, default 'fashion-mnist'):
 * emoji are loaded at the feature net's image size (64 for emoji-cnn-v1).
 *
 * @example
 *   const ref = datasetReference(featureNetFor('emoji'), { data: 'emoji' }); // 'emoji train (6858)'
 */
export function datasetReference(fnet: FeatureNet, { data = 'fashion-mnist', split = 'train', subset = 10_000, seed = 0, cache = cacheDir('eval-reference') }: ReferenceOptions = {}): Reference {
  const ds = data === 'fashion-mnist' ? loadFashionMNIST({ split }) : loadClassifierData(data, split, fnet.net.config.imageSize);
  try {
    const n = ds.images.dim(0);
    const m = Math.min(subset, n);
    const name = `${data} ${split} (${n})`;
    const tag = data === 'fashion-mnist' ? '' : `${data.replace(':', '-')}-`; // (Fashion-MNIST keeps its file names)
    const file = cache === false ? undefined : path.join(cache, `${fnet.name}-${tag}${split}-${m}-seed${seed}-${referenceKey(fnet, ds.images, m, seed)}.safetensors`);
    const cached = file === undefined ? null : readReference(file, fnet.name, n, m);
    if (cached) return { name, ...cached, source: 'cache', cacheFile: file, dispose: () => cached.feats.dispose() };
    const all = extractFeatures(fnet, ds.images); // [N, d]
    try {
      const feats = keep(tidy(() => all.indexSelect(0, new Generator(seed).randperm(n).narrow(0, 0, m)).contiguous()));
      const stats = featureStats(all, { space: fnet.name });
      const written = file !== undefined && writeReference(file, stats, feats);
      return { name, stats, feats, source: 'computed', ...(written ? { cacheFile: file } : {}), dispose: () => feats.dispose() };
    } finally {
      all.dispose();
    }
  } finally {
    ds.images.dispose();
    ds.labels.dispose();
  }
}

/** A digest (16 hex digits) of what a reference depends on: the feature net's weights, the images, subset size and seed. */
function referenceKey(fnet: FeatureNet, images: Tensor, m: number, seed: number): string {
  const h = createHash('sha256').update(`${REFERENCE_FORMAT}\0${fnet.name}\0${m}\0${seed}\0`);
  for (const [k, t] of Object.entries(fnet.net.stateDict())) h.update(`${k}:${t.dtype}:${t.shape.join('x')}\0`).update(t.bytes());
  return h.update(images.bytes()).digest('hex').slice(0, 16);
}

/** The cached statistics (of n images) and features (m of them), or null when the file is missing or not such a reference of this space. */
function readReference(file: string, space: string, n: number, m: number): { stats: FeatureStats; feats: Tensor } | null {
  if (!fs.existsSync(file)) return null;
  let tensors: Record<string, Tensor> = {};
  try {
    const loaded = loadSafetensors(file);
    tensors = loaded.tensors;
    const { mu, sigma, feats } = tensors;
    const d = mu?.size ?? 0;
    const ok =
      loaded.metadata.format === REFERENCE_FORMAT &&
      loaded.metadata.space === space &&
      mu?.dtype === 'float64' &&
      sigma?.dtype === 'float64' &&
      sigma.size === d * d &&
      feats?.dtype === 'float32' &&
      feats.ndim === 2 &&
      feats.dim(0) === m &&
      feats.dim(1) === d &&
      Number(loaded.metadata.n) === n;
    if (!ok) return null;
    const stats = { mu: mu.toFloat64Array(), sigma: sigma.toFloat64Array(), n, space };
    delete tensors.feats;
    return { stats, feats: keep(feats) };
  } catch {
    return null; // damaged: recomputed and rewritten
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
}

/** Writes the reference atomically; false (and nothing written) if the folder cannot be written. */
function writeReference(file: string, stats: FeatureStats, feats: Tensor): boolean {
  const d = stats.mu.length;
  const mu = tensor(stats.mu, { dtype: 'float64', shape: [d] });
  const sigma = tensor(stats.sigma, { dtype: 'float64', shape: [d, d] });
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    saveSafetensors(file, { mu, sigma, feats }, { format: REFERENCE_FORMAT, space: stats.space ?? '', n: String(stats.n) });
    return true;
  } catch {
    return false; // a read-only cache only costs the recomputation
  } finally {
    mu.dispose();
    sigma.dispose();
  }
}

/** Images in [-1, 1] -> uint8 0..255, rounded as a PNG writer would. */
export function quantize(x: Tensor): Tensor {
  return tidy(() => x.add(1).mul(127.5).round().clamp(0, 255).to({ dtype: 'uint8' }));
}

/** n labels cycling through the classes (0, 1, ..., K - 1, 0, ...): a balanced class-conditional set. */
export function cycleLabels(n: number, numClasses: number): number[] {
  return Array.from({ length: n }, (_, i) => i % numClasses);
}

/** What to generate: generateSamples' options without the shape (the checkpoint's); batchSize defaults to DEFAULT_BATCH_SIZE. */
export type GenerationSpec = Omit<GenerateOptions, 'shape' | 'onStep' | 'perBatch'>;

/**
 * n samples [n, ...shape] from D as generateSamples draws them (in batches; sample i from
 * Generator(seed + i) whatever the batch size, so a set is the same in any batching and its
 * first k samples are the k-sample set), images quantized to uint8 batch by batch as a PNG
 * would hold them. onStep reports progress.
 */
export function generateInBatches(D: Denoiser, meta: Pick<CheckpointMeta, 'config' | 'sampleShape'>, spec: GenerationSpec, onStep?: GenerateOptions['onStep']): Tensor {
  const images = meta.sampleShape.length === 3;
  return generateSamples(D, meta.config, { ...spec, shape: meta.sampleShape, onStep, perBatch: images ? quantize : undefined });
}

/** Options of imageMetrics. */
export interface ImageMetricOptions {
  /** The requested class of each sample (ids >= the feature net's class count, the null class, are not scored); null: no accuracy. */
  labels?: number[] | null;
  /** KID subsets (default 100) and their size (default min(1000, n)). */
  kidSubsets?: number;
  kidSubsetSize?: number;
  /** Neighbourhood size of precision/recall (default 3). */
  k?: number;
}

/**
 * The image metrics of samples [n, C, H, W] (uint8, or float in [-1, 1]) against a reference:
 * fd, kid (+- stderr), precision, recall (against the first n reference features, so both
 * manifolds have the same number of points), and accuracy when labels are given.
 */
export function imageMetrics(fnet: FeatureNet, ref: Reference, samples: Tensor, { labels = null, kidSubsets = 100, kidSubsetSize, k = 3 }: ImageMetricOptions = {}): Record<string, MetricValue> {
  const n = samples.dim(0);
  if (labels && labels.length !== n) throw new RangeError(`imageMetrics: ${labels.length} labels for ${n} samples`);
  const feats = extractFeatures(fnet, samples);
  try {
    const out: Record<string, MetricValue> = {};
    out.fd = { value: frechetDistance(featureStats(feats, { space: fnet.name }), ref.stats) };
    const kid = kernelInceptionDistance(feats, ref.feats, { numSubsets: kidSubsets, subsetSize: Math.min(kidSubsetSize ?? 1000, n, ref.feats.dim(0)) });
    out.kid = { value: kid.mean, stderr: kid.stderr };
    const m = Math.min(n, ref.feats.dim(0));
    const pr = tidy(() => precisionRecall(ref.feats.narrow(0, 0, m), feats.narrow(0, 0, m), { k }));
    out.precision = { value: pr.precision };
    out.recall = { value: pr.recall };
    if (labels) {
      const acc = classAccuracy(fnet, feats, labels);
      if (acc !== null) out.accuracy = { value: acc };
    }
    return out;
  } finally {
    feats.dispose();
  }
}

/** The fraction of samples the feature net's classifier head assigns to their requested class (null when no sample has a real class). */
export function classAccuracy(fnet: FeatureNet, feats: Tensor, labels: number[]): number | null {
  const K = fnet.net.config.numClasses;
  const keepRows = labels.flatMap((y, i) => (y >= 0 && y < K ? [i] : []));
  if (keepRows.length === 0) return null;
  return noGrad(() =>
    tidy(() => {
      const rows = tensor(keepRows, { dtype: 'int64' });
      const pred = fnet.net.head.forward(feats.indexSelect(0, rows)).argmax(1); // [m]
      return pred
        .eq(
          tensor(
            keepRows.map((i) => labels[i]),
            { dtype: 'int64' },
          ),
        )
        .float()
        .mean()
        .item();
    }),
  );
}

/** How many samples [n, C, H, W] the feature net's classifier head assigns to each class (mode collapse shows as empty or crowded classes). */
export function classHistogram(fnet: FeatureNet, samples: Tensor): number[] {
  const feats = extractFeatures(fnet, samples);
  try {
    const pred = noGrad(() => tidy(() => Array.from(fnet.net.head.forward(feats).argmax(1).toFloat64Array()))); // [n]
    const counts = new Array<number>(fnet.net.config.numClasses).fill(0);
    for (const c of pred) counts[c]++;
    return counts;
  } finally {
    feats.dispose();
  }
}

/** The 2-D metrics of samples [n, 2] against held-out data [m, 2]: the energy distance and the sliced Wasserstein-2 distance. */
export function pointMetrics(samples: Tensor, heldOut: Tensor): Record<string, MetricValue> {
  return {
    energy: { value: energyDistance(samples, heldOut) },
    sw2: { value: slicedWasserstein(samples, heldOut, { p: 2, seed: 0 }) },
  };
}

/**
 * The model's exact negative log-likelihood of points [m, D] in nats, mean +- standard error:
 * the probability-flow ODE with the exact trace (Song et al. 2021, App. D.2) from sigmaMin
 * to sigmaMax. It measures the model, not a sampler, so an evaluation computes it once.
 */
export function modelNLL(D: Denoiser, points: Tensor, { sigmaMin, sigmaMax, steps = 64 }: { sigmaMin: number; sigmaMax: number; steps?: number }): MetricValue {
  const v = tidy(() => odeLogLikelihood(D, points, { sigmaMin, sigmaMax, steps, trace: 'exact' }).logLikelihood.neg().toFloat64Array());
  const m = v.length;
  const mean = v.reduce((a, b) => a + b, 0) / m;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, m - 1));
  return { value: mean, stderr: sd / Math.sqrt(m) };
}
