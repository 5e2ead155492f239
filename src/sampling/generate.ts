/**
 * Many samples, drawn in batches: the loop under `generateSamples` (training/build.ts),
 * `diffuse sample` and `diffuse eval`. Sample i draws all of its randomness — its initial
 * noise and every stochastic step's noise — from its own generator, Generator(seed + i)
 * (EDM's StackedRandomGenerator, generate.py), so the images do not depend on the batch size,
 * and the first k samples of a set are the k-sample set. Only one batch is in flight at a
 * time: the working memory is that of one batch whatever n is (the result, n samples, is
 * allocated once and filled batch by batch).
 *
 * @example
 *   const sigmas = karrasSigmas(20);
 *   const x = sampleInBatches(D, sigmas, { shape: [1, 32, 32], n: 1000, seed: 0, labels: null, sampler: 'dpmpp-2m', batchSize: 64 });
 *   const counted = countEvaluations(D);           // NFE: counted.rows / n evaluations per sample
 *   sampleInBatches(counted.denoiser, sigmas, { shape: [2], n: 10, seed: 0, labels: null, sampler: 'euler' }).dispose();
 */
import { empty, tensor, zeros } from '../engine/create';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { ChurnOptions, StepInfo } from './common';
import { getSampler } from './index';
import { Noise, randnLike, seededNoise } from './noise';
import { runSampler } from './run';

/**
 * Samples per batch when none is given. Measured on the shipped Fashion-MNIST U-Net with
 * classifier-free guidance (each batch of B runs the network on 2B rows), 2 cores: B = 64 was
 * the fastest or tied-fastest of 8-256 in every pass; smaller batches pay per-op costs on too
 * little data, larger ones page faults on ever larger activations (issue 12: 7x slower per
 * sample-step at 2000 rows). docs/BENCHMARKS.md, "Sampling many images".
 */
export const DEFAULT_BATCH_SIZE = 64;

/** x_T ~ N(0, sigmaMax^2 I) [n, ...shape]: sample i's noise from its own stream (the first draw of Generator(seed + i) when noise = seededNoise(seed, n)). */
export function initialNoise(noise: Noise, n: number, shape: number[], sigmaMax: number): Tensor {
  return tidy(() => randnLike(noise, zeros([n, ...shape])).mul(sigmaMax));
}

/** Where a step of sampleInBatches is: step i of steps, in the batch of samples start .. start + size - 1 of n. */
export interface BatchProgress {
  start: number;
  size: number;
  n: number;
}

/** What sampleInBatches takes. */
export interface SampleInBatchesOptions {
  /** The shape of one sample ([C, H, W] or [2]). */
  shape: number[];
  /** How many samples. */
  n: number;
  /** Sample i draws all of its noise from Generator(seed + i). */
  seed: number;
  /** Class ids [n] (the null class = unconditional), or null for an unconditional model. */
  labels: number[] | null;
  /** A registered sampler (SAMPLERS; default 'ddpm'). */
  sampler?: string;
  /** The sampler's stochasticity (ddim, euler-ancestral, dpmpp-2m-sde, dpmpp-3m-sde; default the sampler's). */
  eta?: number;
  /** EDM churn (euler, heun, heun-churn). */
  churn?: ChurnOptions;
  /** The DDPM sampler's variance choice (default 'beta'). */
  variance?: 'beta' | 'posterior';
  /** Consistency sampling's sigma_min (a consistency student's boundary). */
  sigmaMin?: number;
  /** Clamp every x0 estimate to [lo, hi] (default null: no clipping). */
  clip?: [number, number] | null;
  /** Samples per batch (default DEFAULT_BATCH_SIZE); changes speed and memory, never the samples. */
  batchSize?: number;
  /** Called after each sampler step of each batch (progress: ceil(n / batchSize) x steps calls), with the sampler's step info (x and its x0 estimate, freed after the call). */
  onStep?: (i: number, steps: number, batch: BatchProgress, info: StepInfo) => void;
  /** Applied to each batch's samples before they are stored (e.g. quantize to uint8, to hold a quarter of the bytes); it may dispose its argument. */
  perBatch?: (x: Tensor) => Tensor;
  /** More conditioning for samples start .. start + size - 1 besides the labels (a super-resolution stage's cond.lowRes and cond.augLevel); made inside the batch's scope, freed with it. */
  condAt?: (start: number, size: number) => Omit<Conditioning, 'classLabels'>;
}

/** n samples [n, ...shape] (or perBatch's shape) from sigmas[0] down the grid, in batches of batchSize; the caller owns the result. */
export function sampleInBatches(D: Denoiser, sigmas: Tensor, opts: SampleInBatchesOptions): Tensor {
  const { shape, n, seed, labels, sampler = 'ddpm', eta, churn, variance, sigmaMin, clip = null, batchSize = DEFAULT_BATCH_SIZE, onStep, perBatch, condAt } = opts;
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`sampleInBatches: n must be a positive integer, got ${n}`);
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`sampleInBatches: batchSize must be a positive integer, got ${batchSize}`);
  if (labels && labels.length !== n) throw new RangeError(`sampleInBatches: ${labels.length} labels for ${n} samples`);
  getSampler(sampler); // an unknown name fails before any work
  seededNoise(seed + n - 1, 0); // a bad seed (or seed + n past the safe integers) fails before any work too
  const steps = sigmas.size - 1;
  const sigmaMax = tidy(() => sigmas.select(0, 0).item());
  let out: Tensor | null = null;
  try {
    for (let start = 0; start < n; start += batchSize) {
      const size = Math.min(batchSize, n - start);
      const batch = { start, size, n };
      const noise = seededNoise(seed + start, size); // sample start + j draws from Generator(seed + start + j), whatever the batching
      const x = noGrad(() =>
        tidy(() => {
          const xT = initialNoise(noise, size, shape, sigmaMax); // x_T ~ N(0, sigma_max^2 I)
          const classLabels = labels ? tensor(labels.slice(start, start + size), { dtype: 'int64' }) : undefined;
          const cond: Conditioning | undefined = classLabels || condAt ? { ...condAt?.(start, size), ...(classLabels && { classLabels }) } : undefined;
          const x0 = runSampler(sampler, D, xT, sigmas, { generator: noise, cond, eta, churn, variance, sigmaMin, clip, callback: onStep ? (info) => onStep(info.i, steps, batch, info) : undefined });
          return perBatch ? perBatch(x0) : x0;
        }),
      );
      try {
        if (start === 0 && size === n) return x; // one batch: no copy
        out ??= empty([n, ...x.shape.slice(1)], { dtype: x.dtype, device: x.device });
        tidy(() => void out!.narrow(0, start, size).copy_(x));
      } finally {
        if (!(start === 0 && size === n)) x.dispose();
      }
    }
    const result = out!;
    out = null;
    return result;
  } finally {
    out?.dispose();
  }
}

/** A denoiser that counts its evaluations: `calls` (batch evaluations) and `rows` (samples evaluated, summed over calls). */
export interface CountedDenoiser {
  denoiser: Denoiser;
  calls: number;
  rows: number;
  /** Denoiser evaluations per sample (NFE) for a run of n samples: rows / n, whatever the batch size. */
  nfe(n: number): number;
}

/**
 * D with an evaluation counter, for the number of function evaluations (NFE) a sampler spends
 * per sample. Wrap the model's own denoiser and put any guidance on top of the counted one
 * (`prepared.at(scale, c.denoiser)`): batched classifier-free guidance runs the network on 2B
 * rows per call, which counts 2 evaluations per step, as distillation papers count a CFG teacher.
 *
 * @example
 *   const c = countEvaluations(D);
 *   sampleInBatches(c.denoiser, karrasSigmas(10), { shape: [2], n: 100, seed: 0, labels: null, sampler: 'heun', batchSize: 30 }).dispose();
 *   c.nfe(100); // 19 (Heun: 2N - 1)
 */
export function countEvaluations(D: Denoiser): CountedDenoiser {
  const c: CountedDenoiser = {
    denoiser: (x, sigma, cond) => {
      c.calls++;
      c.rows += x.dim(0);
      return D(x, sigma, cond);
    },
    calls: 0,
    rows: 0,
    nfe: (n) => c.rows / n,
  };
  return c;
}
