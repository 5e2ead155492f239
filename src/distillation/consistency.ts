/**
 * Consistency models (Song et al. 2023, "Consistency Models"; Song & Dhariwal 2023, "Improved
 * Techniques for Training Consistency Models"): a student f(x, sigma) that maps every point of a
 * probability-flow ODE trajectory to its start, with f(x, sigma_min) = x built into its
 * coefficients (core/precond.ts, vConsistencyCoefficients), so one evaluation is a sample.
 * Training pulls f at adjacent points sigma_n < sigma_{n+1} of a Karras grid together:
 *
 *   cd   consistency distillation: x_{n+1} = x0 + sigma_{n+1} z, x^_n one teacher ODE step (Heun or DDIM)
 *        to sigma_n, target f_{theta-}(x^_n, sigma_n) with theta- an EMA of the student (mu = 0.95).
 *   ct   consistency training, no teacher: x^_n = x0 + sigma_n z with the same z (Eq. 9's unbiased
 *        score estimate), N(k) growing from 2 to 150 and the target EMA mu(k) adapted to it (Sec. 5, App. C).
 *   ict  improved CT: no EMA target (the student under stop-gradient), N doubling from 10 to 1280,
 *        the index drawn log-normally, weights 1 / (sigma_{n+1} - sigma_n), the pseudo-Huber loss
 *        sqrt(||f - f-||^2 + c^2) - c on the whole sample with c = 0.00054 sqrt(d).
 *
 * Grids here are ascending, as in the papers: sigma_1 = sigma_min < ... < sigma_N = sigma_max.
 *
 * @example
 *   const sigmas = karrasPoints(18, { sigmaMin: 0.01, sigmaMax: 157 });    // CD's grid (N = 18)
 *   ctDiscretization(k, K);  ctTargetDecay(k, K);  ictDiscretization(k, K);   // the curricula
 *   const { loss } = consistencyLoss(student, { method: 'cd', target, teacher, solver: 'heun' }, x0, { sigmas, generator });
 */
import { tensor } from '../engine/create';
import { Handle, native } from '../engine/native';
import { Generator } from '../engine/random';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser, expandSigma } from '../core/denoiser';
import { toD } from '../sampling/common';
import { Module } from '../nn/module';
import { paramList } from '../optim/params';
import { LossResult } from '../training/losses';
import { Tracker } from '../training/loop';
import { ConsistencyMethod } from './record';
import { ddimStep } from './progressive';

/** Song et al. 2023, Eq. (after EDM Eq. 5): N ascending points sigma_i = (eps^(1/rho) + (i-1)/(N-1) (T^(1/rho) - eps^(1/rho)))^rho, i = 1..N. */
export function karrasPoints(N: number, { sigmaMin, sigmaMax, rho = 7 }: { sigmaMin: number; sigmaMax: number; rho?: number }): number[] {
  if (!(Number.isSafeInteger(N) && N >= 2)) throw new RangeError(`karrasPoints: N must be an integer >= 2 (two adjacent points at least), got ${N}`);
  if (!(sigmaMin > 0 && sigmaMax > sigmaMin && Number.isFinite(sigmaMax))) throw new RangeError(`karrasPoints: need 0 < sigmaMin < sigmaMax < Infinity, got ${sigmaMin}, ${sigmaMax}`);
  const [a, b] = [sigmaMin ** (1 / rho), sigmaMax ** (1 / rho)];
  return Array.from({ length: N }, (_, i) => (i === 0 ? sigmaMin : i === N - 1 ? sigmaMax : (a + (i / (N - 1)) * (b - a)) ** rho));
}

/** Song et al. 2023, App. C (CT): N(k) = ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1, s0 = 2, s1 = 150 (CIFAR-10). */
export function ctDiscretization(k: number, K: number, { s0 = 2, s1 = 150 }: { s0?: number; s1?: number } = {}): number {
  return Math.ceil(Math.sqrt((k / K) * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1) + 1;
}

/** Song et al. 2023, App. C (CT): the target EMA rate mu(k) = exp(s0 ln(mu0) / N(k)), mu0 = 0.9: shorter memory while N is small. */
export function ctTargetDecay(k: number, K: number, { s0 = 2, s1 = 150, mu0 = 0.9 }: { s0?: number; s1?: number; mu0?: number } = {}): number {
  return Math.exp((s0 * Math.log(mu0)) / ctDiscretization(k, K, { s0, s1 }));
}

/** Song & Dhariwal 2023, Eq. 5 (iCT): N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1 / s0) + 1)), s0 = 10, s1 = 1280. */
export function ictDiscretization(k: number, K: number, { s0 = 10, s1 = 1280 }: { s0?: number; s1?: number } = {}): number {
  const Kp = Math.floor(K / (Math.log2(Math.floor(s1 / s0)) + 1));
  return Math.min(s0 * 2 ** Math.floor(k / Math.max(Kp, 1)), s1) + 1;
}

/**
 * Song & Dhariwal 2023, Sec. 3.5 (iCT): p(i) proportional to erf((ln sigma_{i+1} - P_mean) / (sqrt(2) P_std))
 * - erf((ln sigma_i - P_mean) / (sqrt(2) P_std)), i = 1..N-1, P_mean = -1.1, P_std = 2: the log-normal mass
 * between adjacent points (ascending sigmas; N - 1 probabilities summing to 1).
 */
export function ictIndexProbabilities(sigmas: readonly number[], { pMean = -1.1, pStd = 2 }: { pMean?: number; pStd?: number } = {}): number[] {
  const e = tidy(() =>
    Array.from(
      tensor(sigmas.map(Math.log), { dtype: 'float64' })
        .sub(pMean)
        .div(Math.SQRT2 * pStd)
        .erf()
        .toFloat64Array(),
    ),
  );
  const w = e.slice(1).map((v, i) => v - e[i]);
  const total = w.reduce((a, b) => a + b, 0);
  return w.map((v) => v / total);
}

/** Song & Dhariwal 2023, Sec. 3.3: the weight lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i) of each adjacent pair (ascending sigmas; N - 1 weights). */
export function ictWeights(sigmas: readonly number[]): number[] {
  return sigmas.slice(1).map((s, i) => 1 / (s - sigmas[i]));
}

/** Song & Dhariwal 2023, Sec. 3.3: c = 0.00054 sqrt(d) for samples of d elements. */
export function pseudoHuberC(dim: number): number {
  return 0.00054 * Math.sqrt(dim);
}

/**
 * Song & Dhariwal 2023, Eq. 7: the pseudo-Huber distance of each sample, sqrt(||x - y||^2 + c^2) - c, on the
 * norm of the whole sample [B, ...] -> [B] (not per pixel: that is a different loss, found in several public
 * implementations). c defaults to pseudoHuberC(elements per sample).
 */
export function pseudoHuber(x: Tensor, y: Tensor, c = pseudoHuberC(x.size / x.dim(0))): Tensor {
  return tidy(() => {
    const sq = x
      .sub(y)
      .square()
      .sum(Array.from({ length: x.ndim - 1 }, (_, i) => i + 1)); // ||x - y||^2, [B]
    return sq
      .add(c * c)
      .sqrt()
      .sub(c);
  });
}

/** The squared L2 distance of each sample as the per-element mean, ||x - y||^2 / d ([B, ...] -> [B]): CD's and CT's d. */
export function meanSquared(x: Tensor, y: Tensor): Tensor {
  return tidy(() =>
    x
      .sub(y)
      .square()
      .mean(Array.from({ length: x.ndim - 1 }, (_, i) => i + 1)),
  );
}

/** The teacher's ODE solvers of CD (Song et al. 2023, Algorithm 2, Phi). */
export const CD_SOLVERS = ['heun', 'ddim'] as const;
export type CDSolver = (typeof CD_SOLVERS)[number];

/** One Heun step (EDM Algorithm 1, lines 5-8) of the probability-flow ODE from sigma to sigmaNext > 0, per sample ([B] sigmas). */
export function heunStep(D: Denoiser, x: Tensor, sigma: Tensor, sigmaNext: Tensor, cond?: Conditioning): Tensor {
  return tidy(() => {
    const h = expandSigma(sigmaNext.sub(sigma), x).to({ dtype: x.dtype });
    const d = toD(x, sigma.to({ dtype: x.dtype }), D(x, sigma, cond)); // dx/dsigma at sigma
    const xe = x.add(d.mul(h)); // Euler
    const d2 = toD(xe, sigmaNext.to({ dtype: x.dtype }), D(xe, sigmaNext, cond));
    return x.add(d.add(d2).mul(h).mul(0.5));
  });
}

/** One step of the teacher's ODE from sigma to sigmaNext (per sample): Heun (2 evaluations) or DDIM (1). */
export function teacherODEStep(solver: CDSolver, D: Denoiser, x: Tensor, sigma: Tensor, sigmaNext: Tensor, cond?: Conditioning): Tensor {
  if (solver === 'heun') return heunStep(D, x, sigma, sigmaNext, cond);
  if (solver === 'ddim') return ddimStep(D, x, sigma, sigmaNext, cond);
  throw new RangeError(`teacherODEStep: solver must be ${CD_SOLVERS.join(' or ')}, got ${JSON.stringify(solver)}`);
}

/** Song et al. 2023, Algorithm 2: the CD target f_{theta-}(x^_n, sigma_n), x^_n one teacher ODE step from x_{n+1} at sigma_{n+1} to sigma_n (no gradient). */
export function cdTarget(target: Denoiser, teacher: Denoiser, solver: CDSolver, x: Tensor, sigmaNext: Tensor, sigma: Tensor, cond?: Conditioning): Tensor {
  return noGrad(() => tidy(() => target(teacherODEStep(solver, teacher, x, sigmaNext, sigma, cond), sigma, cond)));
}

/** Which consistency method, and what its target needs. */
export type ConsistencyTarget = { method: 'cd'; target: Denoiser; teacher: Denoiser; solver: CDSolver } | { method: 'ct'; target: Denoiser } | { method: 'ict' }; // the target is the student under stop-gradient

/** What consistencyLoss takes. */
export interface ConsistencyLossOptions {
  /** This step's grid, ascending: sigma_1 = sigma_min < ... < sigma_N = sigma_max (N >= 2). */
  sigmas: readonly number[];
  /** Draws the index n and the noise z. */
  generator: Generator;
  cond?: Conditioning;
  /** The distance: 'l2' (meanSquared; CD and CT) or 'pseudo-huber' (iCT). Default: the method's. */
  distance?: 'l2' | 'pseudo-huber';
  /**
   * The generator of the networks' dropout: its state is restored between the target's pass and the
   * student's, so both draw the same dropout masks (Song et al. 2023's released code; iCT Sec. 3.1).
   */
  dropout?: Generator;
}

/** The default distance of each method: l2 for cd and ct (Song et al. 2023 also report LPIPS), pseudo-Huber for ict. */
export function defaultDistance(method: ConsistencyMethod): 'l2' | 'pseudo-huber' {
  return method === 'ict' ? 'pseudo-huber' : 'l2';
}

/**
 * One batch of CD / CT / iCT (Song et al. 2023, Algorithms 2-3; Song & Dhariwal 2023): n per sample
 * (uniform for cd and ct, log-normal for ict), x_{n+1} = x0 + sigma_{n+1} z, the target at sigma_n
 * (no gradient), and lambda(sigma_n) d(f(x_{n+1}, sigma_{n+1}), target), lambda = 1 (cd, ct) or
 * 1 / (sigma_{n+1} - sigma_n) (ict). perSample holds the weighted distances, sigma the sigma_{n+1}.
 */
export function consistencyLoss(student: Denoiser, how: ConsistencyTarget, x0: Tensor, o: ConsistencyLossOptions): LossResult {
  const { sigmas, generator, cond, dropout } = o;
  if (sigmas.length < 2 || sigmas.some((s, i) => i > 0 && !(s > sigmas[i - 1])))
    throw new RangeError(`consistencyLoss: sigmas must be ascending, at least 2, got ${JSON.stringify(sigmas.slice(0, 4))}...`);
  const distance = o.distance ?? defaultDistance(how.method);
  return tidy(() => {
    const B = x0.dim(0);
    const n = how.method === 'ict' ? drawIndex(ictIndexProbabilities(sigmas), generator, B) : Array.from(generator.randint(0, sigmas.length - 1, [B]).toFloat64Array()); // 0-based n: the pair (n, n + 1)
    const at = (k: number) =>
      tensor(
        n.map((i) => sigmas[i + k]),
        { dtype: 'float64' },
      ); // [B]
    const [sigma, sigmaNext] = [at(0), at(1)];
    const z = generator.randnLike(x0);
    const xNext = x0.add(z.mul(expandSigma(sigmaNext, x0).to({ dtype: x0.dtype }))); // x_{n+1} = x0 + sigma_{n+1} z
    const state = dropout?.state();
    const target = noGrad(() => {
      if (how.method === 'cd') return cdTarget(how.target, how.teacher, how.solver, xNext, sigmaNext, sigma, cond);
      const xn = x0.add(z.mul(expandSigma(sigma, x0).to({ dtype: x0.dtype }))); // x^_n = x0 + sigma_n z, the same z (Eq. 9)
      return (how.method === 'ct' ? how.target : student)(xn, sigma, cond);
    });
    if (state) dropout!.setState(state); // the student's pass draws the target's dropout masks
    const pred = student(xNext, sigmaNext, cond);
    const d = distance === 'pseudo-huber' ? pseudoHuber(pred, target) : meanSquared(pred, target);
    const w = how.method === 'ict' ? ictWeights(sigmas) : null;
    const lambda = w
      ? tensor(
          n.map((i) => w[i]),
          { dtype: pred.dtype },
        )
      : null;
    const perSample = lambda ? d.mul(lambda) : d; // [B]
    return { loss: perSample.mean(), perSample, sigma: sigmaNext };
  });
}

/** B indices drawn from the probabilities p (inverse CDF of uniform draws). */
function drawIndex(p: readonly number[], generator: Generator, B: number): number[] {
  const cdf: number[] = [];
  p.reduce((acc, v, i) => (cdf[i] = acc + v), 0);
  return Array.from(generator.rand([B], { dtype: 'float64' }).toFloat64Array(), (u) => {
    const i = cdf.findIndex((c) => u < c);
    return i < 0 ? p.length - 1 : i;
  });
}

/**
 * The target network theta- of CD and CT (Song et al. 2023, Algorithms 2-3): a copy of the student
 * whose parameters follow it as theta- <- mu(k) theta- + (1 - mu(k)) theta after each update k, as a
 * tracker of the shared loop (saved in the checkpoint under `key`, restored on resume).
 *
 * @example
 *   const t = new TargetNetwork(targetNet, studentNet, (k) => ctTargetDecay(k, K));  // targetNet starts as a copy
 *   part.trackers = [t];
 */
export class TargetNetwork implements Tracker {
  readonly key = 'target';
  /** Updates made (k of mu(k)). */
  updates = 0;
  readonly #target: Module;
  readonly #avg: Handle[];
  readonly #online: Handle[];
  readonly #mu: (k: number) => number;

  constructor(target: Module, online: Module, mu: (k: number) => number) {
    this.#target = target;
    this.#avg = paramList('TargetNetwork', target.namedParameters()).handles;
    this.#online = paramList('TargetNetwork', online.namedParameters()).handles;
    if (this.#avg.length !== this.#online.length) throw new RangeError(`TargetNetwork: the target has ${this.#avg.length} parameters, the student ${this.#online.length}`);
    this.#mu = mu;
  }

  /** theta- <- lerp(theta-, theta, 1 - mu(k)). */
  update(): void {
    native.emaUpdate(this.#avg, this.#online, this.#mu(this.updates++));
  }

  stateDict(): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
    return { tensors: Object.fromEntries(Object.entries(this.#target.stateDict()).map(([k, t]) => [k, t.detach()])), metadata: { 'target.updates': String(this.updates) } };
  }

  loadStateDict(state: { tensors: Record<string, Tensor>; metadata?: Record<string, string> }): void {
    this.#target.loadStateDict(state.tensors);
    this.updates = Number(state.metadata?.['target.updates'] ?? 0);
  }

  /** The target network is the task's to free. */
  dispose(): void {}
}
