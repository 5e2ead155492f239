/**
 * Negative log-likelihood of data under a diffusion model, in bits per dimension, by two
 * estimators (src/training/likelihood.ts), over a data set in batches, with standard errors:
 *
 * - 'vlb': the discrete variational bound of a T-step VP model (Ho et al. 2020, Eq. 5),
 *   every term computed, with the discretized Gaussian decoder L_0 (Eq. 13) for 8-bit data:
 *   an upper bound on -log P(x) of the 8-bit image itself, no dequantization needed.
 * - 'ode': the probability-flow ODE's exact log-density (Song et al. 2021, App. D.2, Eq. 39)
 *   of uniformly dequantized data, with the exact divergence (small dimension) or Hutchinson's
 *   estimate. For 8-bit values k the dequantized point is y = k + u, u ~ U[0, 1)^D, mapped to
 *   x = (y - 1/2) / 127.5 - 1 (the bin of level k/127.5 - 1 is [level - 1/255, level + 1/255),
 *   the decoder's bin in Eq. 13), and
 *       -log P(k) <= E_u[-log p_Y(k + u)] = E_u[-log p_X(x)] + D ln 127.5
 *   (Theis et al. 2016, Sec. 3.1: a density's log-likelihood on uniformly dequantized data
 *   bounds the discrete log-likelihood; D ln 127.5 is the log-determinant of y -> x), so
 *       bits/dim = (-log p_X(x) + D ln 127.5) / (D ln 2) = -log p_X(x) / (D ln 2) + log2(127.5).
 *   Continuous (float) data are evaluated as they are: bits/dim = -log p(x) / (D ln 2).
 *
 * Sample i draws all its randomness (x_t for the bound; u and the probes for the ODE) from
 * Generator(seed + i), so a result does not depend on the batch size. The standard error is
 * over samples (it includes the Hutchinson and dequantization noise); for the ODE with two or
 * more probes the Hutchinson part is also reported on its own. Derivation: docs/evaluation.md.
 *
 * @example
 *   const { meta, denoiser } = loadModel('models/fashion-mnist');
 *   const { images } = loadFashionMNIST({ split: 'test', pad32: true });     // [10000, 1, 32, 32] uint8
 *   const x = images.narrow(0, 0, 100);
 *   const r = likelihoodBitsPerDim(denoiser, x, { schedule: buildSchedule(meta.config), labels: new Array(100).fill(10) }); // null class: p(x)
 *   r.vlb?.bitsPerDim;   // { value, stderr }: the bound, bits/dim
 *   r.ode?.bitsPerDim;   // { value, stderr }: the ODE, bits/dim, uniform dequantization
 */
import { cat, tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { DiscreteVP } from '../core/schedules';
import { gridModel } from '../sampling/grids';
import { seededNoise } from '../sampling/noise';
import { clipDenoiser } from '../sampling/run';
import { odeLogLikelihood, variationalBound } from '../training/likelihood';
import { MetricValue } from './report';

/** The two estimators. */
export type NLLMethod = 'vlb' | 'ode';

/** Options of likelihoodBitsPerDim. */
export interface NLLOptions {
  /** Which estimators (default both when a schedule is given, else ['ode']). */
  methods?: readonly NLLMethod[];
  /** The model's discrete schedule: needed by 'vlb', and the ODE's default sigma range. */
  schedule?: DiscreteVP | null;
  /** Class id of each sample (the null class for p(x) of a class-conditional model), or null. */
  labels?: readonly number[] | null;
  /** Sample i's randomness comes from Generator(seed + i) (default 0). */
  seed?: number;
  /** Samples per batch (default 50: memory, not results). */
  batchSize?: number;
  /** The bound's reverse variance: beta_t (default) or the posterior's beta~_t (Ho et al. Sec. 3.2). */
  variance?: 'beta' | 'posterior';
  /** Clamp the bound's x0 estimates to [-1, 1] (default: on for 8-bit data, as Ho et al.'s calc_bpd_loop with clip_denoised). */
  clip?: boolean;
  /** The ODE's range: the density is taken at sigmaMin, the prior N(0, sigmaMax^2 I) at sigmaMax (default: the schedule's sigma_1 .. sigma_T, else EDM's 0.002 .. 80). */
  sigmaMin?: number;
  sigmaMax?: number;
  /** RK4 steps of the ODE, uniform in ln(sigma) (default 64). */
  odeSteps?: number;
  /** The divergence: 'exact' (a backward pass per dimension) or 'hutchinson' (default: exact up to 16 dimensions). */
  trace?: 'exact' | 'hutchinson';
  /** Hutchinson probes per sample (default 1; two or more also give the estimator's own standard error). */
  probes?: number;
  /** Called after every denoiser evaluation (a batch): the method, evaluations done and in all. */
  progress?: (p: { method: NLLMethod; done: number; total: number }) => void;
}

/** One estimator's result: bits/dim (mean +- standard error over samples) and the per-sample values. */
export interface NLLEstimate {
  /** Mean bits/dim over the samples, with its standard error (absent for one sample). */
  bitsPerDim: MetricValue;
  /** The same per sample, in nats (summed over dimensions). */
  nats: MetricValue;
  /** [n] bits/dim of each sample. */
  perSample: Float64Array;
}

/** What likelihoodBitsPerDim returns. */
export interface NLLResult {
  /** Samples and dimensions per sample. */
  n: number;
  dims: number;
  /** '8-bit' (uint8 data: discretized decoder, uniform dequantization) or 'continuous'. */
  data: '8-bit' | 'continuous';
  /** The variational bound, with its three parts (mean bits/dim): L_T, sum of L_{t-1}, L_0. */
  vlb?: NLLEstimate & { terms: { prior: number; diffusion: number; decoder: number }; T: number; variance: 'beta' | 'posterior'; clip: boolean };
  /** The probability-flow ODE; traceStderr is the Hutchinson part of the standard error (bits/dim; with probes >= 2). */
  ode?: NLLEstimate & { trace: 'exact' | 'hutchinson'; probes: number; steps: number; sigmaMin: number; sigmaMax: number; traceStderr?: number };
}

/** Largest dimension for which the exact divergence is the default. */
const EXACT_TRACE_MAX_DIMS = 16;

/**
 * 8-bit values k (uint8) -> x = (k + u - 1/2) / 127.5 - 1 with u ~ U[0, 1)^D from each sample's
 * generator (one per sample): uniform dequantization into the bin of k's level k/127.5 - 1.
 */
export function dequantize(k: Tensor, noise: readonly Generator[]): Tensor {
  if (noise.length !== k.dim(0)) throw new RangeError(`dequantize: ${noise.length} generators for ${k.dim(0)} samples`);
  return tidy(() => {
    const shape = k.shape.slice(1);
    const u = cat(
      noise.map((g) => g.rand(shape, { dtype: 'float64' }).unsqueeze(0)),
      0,
    ); // [n, ...] ~ U[0, 1)
    return k.to({ dtype: 'float64' }).add(u).sub(0.5).div(127.5).sub(1);
  });
}

/** mean and standard error (sample std / sqrt(n); absent for n < 2). */
function meanStderr(v: Float64Array): MetricValue {
  const n = v.length;
  const mean = v.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { value: mean };
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  return { value: mean, stderr: sd / Math.sqrt(n) };
}

/**
 * Bits per dimension of the samples x [n, ...] under the model D: uint8 x are 8-bit data
 * (the bound with the discretized decoder; the ODE on uniformly dequantized data, module
 * header), float x continuous data (the bound with a Gaussian decoder; the ODE's density).
 */
export function likelihoodBitsPerDim(D: Denoiser, x: Tensor, opts: NLLOptions = {}): NLLResult {
  const { schedule = null, labels = null, seed = 0, batchSize = 50, variance = 'beta', odeSteps = 64, probes = 1, progress } = opts;
  const methods = opts.methods ?? (schedule ? ['vlb', 'ode'] : ['ode']);
  const n = x.dim(0);
  const dims = x.size / n;
  const eightBit = x.dtype === 'uint8';
  const clip = opts.clip ?? eightBit;
  const trace = opts.trace ?? (dims <= EXACT_TRACE_MAX_DIMS ? 'exact' : 'hutchinson');
  const { sigmaMin, sigmaMax } = { ...gridModel(schedule), ...(opts.sigmaMin !== undefined ? { sigmaMin: opts.sigmaMin } : {}), ...(opts.sigmaMax !== undefined ? { sigmaMax: opts.sigmaMax } : {}) };
  if (n < 1) throw new RangeError('likelihoodBitsPerDim: x has no samples');
  if (methods.length === 0 || methods.some((m) => m !== 'vlb' && m !== 'ode')) throw new RangeError(`likelihoodBitsPerDim: methods must be 'vlb' and/or 'ode', got ${JSON.stringify(methods)}`);
  if (methods.includes('vlb') && !schedule) throw new RangeError("likelihoodBitsPerDim: method 'vlb' needs the model's discrete schedule (a DDPM model)");
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`likelihoodBitsPerDim: batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`likelihoodBitsPerDim: seed must be a non-negative integer, got ${seed}`);
  if (labels && labels.length !== n) throw new RangeError(`likelihoodBitsPerDim: ${labels.length} labels for ${n} samples`);
  if (!eightBit && !x.dtype.startsWith('float')) throw new TypeError(`likelihoodBitsPerDim: x must be uint8 (8-bit data) or floating point, got ${x.dtype}`);

  const batches = Math.ceil(n / batchSize);
  const result: NLLResult = { n, dims, data: eightBit ? '8-bit' : 'continuous' };
  const offset = eightBit ? dims * Math.log(127.5) : 0; // the log-determinant of y -> x, nats
  const toBits = (nats: Float64Array) => nats.map((v) => v / (dims * Math.LN2));
  const cond = (i: number, b: number): Conditioning | undefined => (labels ? { classLabels: tensor(labels.slice(i, i + b), { dtype: 'int64' }) } : undefined);
  const counted = (method: NLLMethod, perBatch: number, inner: Denoiser): Denoiser => {
    let done = 0;
    const total = perBatch * batches;
    return (xs, sigma, c) => {
      const out = inner(xs, sigma, c);
      progress?.({ method, done: ++done, total });
      return out;
    };
  };

  for (const method of methods) {
    const nats = new Float64Array(n);
    if (method === 'vlb') {
      const s = schedule!;
      const Dv = counted('vlb', s.T, clip ? clipDenoiser(D, [-1, 1]) : D);
      const terms = { prior: 0, diffusion: 0, decoder: 0 };
      for (let i = 0; i < n; i += batchSize) {
        const b = Math.min(batchSize, n - i);
        tidy(() => {
          const xb = x.narrow(0, i, b);
          const x0 = eightBit ? xb.to({ dtype: 'float32' }).div(127.5).sub(1) : xb;
          const r = variationalBound(Dv, x0, s, { generator: seededNoise(seed + i, b), cond: cond(i, b), decoder: eightBit ? 'discretized' : 'gaussian', variance });
          nats.set(r.nats.toFloat64Array(), i);
          terms.prior += r.prior.sum().item();
          terms.diffusion += r.diffusion.sum().item();
          terms.decoder += r.decoder.sum().item();
        });
      }
      const perBit = 1 / (n * dims * Math.LN2);
      const perSample = toBits(nats);
      result.vlb = {
        bitsPerDim: meanStderr(perSample),
        nats: meanStderr(nats),
        perSample,
        terms: { prior: terms.prior * perBit, diffusion: terms.diffusion * perBit, decoder: terms.decoder * perBit },
        T: s.T,
        variance,
        clip,
      };
    } else {
      const Do = counted('ode', 4 * odeSteps, D);
      let probeVar = 0; // sum over samples of the variance of the probe mean, nats^2
      for (let i = 0; i < n; i += batchSize) {
        const b = Math.min(batchSize, n - i);
        tidy(() => {
          const noise = seededNoise(seed + i, b);
          const xb = x.narrow(0, i, b);
          const xc = eightBit ? dequantize(xb, noise).to({ dtype: 'float32' }) : xb;
          const r = odeLogLikelihood(Do, xc, { sigmaMin, sigmaMax, steps: odeSteps, trace, probes, generator: noise, cond: cond(i, b) });
          nats.set(r.logLikelihood.neg().add(offset).toFloat64Array(), i);
          if (r.deltaPerProbe && probes > 1) probeVar += r.deltaPerProbe.var(1).div(probes).sum().item();
        });
      }
      const perSample = toBits(nats);
      result.ode = { bitsPerDim: meanStderr(perSample), nats: meanStderr(nats), perSample, trace, probes: trace === 'hutchinson' ? probes : 0, steps: odeSteps, sigmaMin, sigmaMax };
      if (trace === 'hutchinson' && probes > 1) result.ode.traceStderr = Math.sqrt(probeVar) / n / (dims * Math.LN2);
    }
  }
  return result;
}
