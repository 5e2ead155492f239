/**
 * Noise schedules, all read in one parametrization: the variance-exploding "sigma"
 * of EDM (Karras et al. 2022), x = x0 + sigma n. A variance-preserving (VP) model
 * with signal fraction alpha_bar sees x_vp = sqrt(abar) x0 + sqrt(1 - abar) n, which
 * is x / sqrt(1 + sigma^2) with
 *
 *   sigma^2 = (1 - abar) / abar = 1 / SNR,   logSNR lambda = ln(abar / (1 - abar)) = -2 ln sigma.
 *
 * - Discrete VP (DDPM): betas (linear, cosine, sigmoid) -> alpha_bar -> sigmas, and
 *   the map between a sigma and a (fractional) timestep index, as k-diffusion's
 *   DiscreteSchedule (log-sigma interpolation).
 * - Continuous: a `LogSnrSchedule` lambda(t) on t in [0, 1] with its inverse: cosine,
 *   Song et al.'s linear VP, VE; a resolution shift of any of them.
 * - EDM: the constants and the Karras sigma grid.
 * - Zero terminal SNR (Lin et al. 2023).
 *
 * @example
 *   const ddpm = discreteVP(linearBetas());           // T = 1000, beta 1e-4 .. 0.02
 *   ddpm.sigmas[999];                                  // ~157: sigma at the last step
 *   const t = sigmaToT(ddpm, tensor([1.0]));           // fractional timestep where sigma = 1
 *   const cos = cosineLogSnr();                        // lambda(t) = -2 ln tan(pi t / 2)
 *   const hi = shiftLogSnr(cos, { base: 64, resolution: 256 }); // simple diffusion's shift
 *   sigmaFromLogSnr(hi.logSnr(tensor([0.5])));
 *   const ddpm64 = shiftDiscreteVP(ddpm, resolutionShift({ base: 32, resolution: 64 })); // the same, on DDPM's steps
 */
import { linspace, tensor } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

// ---- discrete VP (DDPM) ------------------------------------------------------

/** Ho et al. 2020, Sec. 4: betas linear from 1e-4 to 0.02 over T = 1000 steps. */
export function linearBetas(T = 1000, { betaStart = 1e-4, betaEnd = 0.02 }: { betaStart?: number; betaEnd?: number } = {}): Float64Array {
  checkSteps('linearBetas', T);
  return Float64Array.from({ length: T }, (_, i) => (T === 1 ? betaStart : betaStart + ((betaEnd - betaStart) * i) / (T - 1)));
}

/** Nichol & Dhariwal 2021, Eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) pi / 2), t in [0, 1]. */
export function cosineAlphaBar(t: number, s = 0.008): number {
  const f = (u: number) => Math.cos(((u + s) / (1 + s)) * (Math.PI / 2)) ** 2;
  return f(t) / f(0);
}

/**
 * Chen 2023, Algorithm 1 (sigmoid_schedule), after Jabri et al. 2022: the signal fraction
 * gamma(t) = (v_end - sigmoid((t (end - start) + start) / tau)) / (v_end - v_start),
 * v = sigmoid(start or end / tau), clipped to [clipMin, 1].
 */
export function sigmoidAlphaBar(t: number, { start = -3, end = 3, tau = 1, clipMin = 1e-9 }: { start?: number; end?: number; tau?: number; clipMin?: number } = {}): number {
  const sig = (z: number) => 1 / (1 + Math.exp(-z));
  const vStart = sig(start / tau);
  const vEnd = sig(end / tau);
  const g = (vEnd - sig((t * (end - start) + start) / tau)) / (vEnd - vStart);
  return Math.min(Math.max(g, clipMin), 1);
}

/** Nichol & Dhariwal 2021, Sec. 3.2: beta_i = min(1 - abar((i+1)/T) / abar(i/T), maxBeta), i = 0..T-1. */
export function betasFromAlphaBar(alphaBar: (t: number) => number, T = 1000, { maxBeta = 0.999 }: { maxBeta?: number } = {}): Float64Array {
  checkSteps('betasFromAlphaBar', T);
  return Float64Array.from({ length: T }, (_, i) => Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), maxBeta));
}

/** The cosine schedule's betas (Nichol & Dhariwal 2021: s = 0.008, betas clipped at 0.999). */
export function cosineBetas(T = 1000, { s = 0.008, maxBeta = 0.999 }: { s?: number; maxBeta?: number } = {}): Float64Array {
  return betasFromAlphaBar((t) => cosineAlphaBar(t, s), T, { maxBeta });
}

/** The sigmoid schedule's betas (Chen 2023 defaults start -3, end 3, tau 1). */
export function sigmoidBetas(T = 1000, opts: { start?: number; end?: number; tau?: number; maxBeta?: number } = {}): Float64Array {
  const { maxBeta = 0.999, ...gamma } = opts;
  return betasFromAlphaBar((t) => sigmoidAlphaBar(t, gamma), T, { maxBeta });
}

/**
 * Lin et al. 2023, Algorithm 1: shift and scale sqrt(abar) so the last step has SNR
 * exactly 0 (abar_T = 0, beta_T = 1) and the first is unchanged. Needs v-prediction
 * (epsilon carries no signal at SNR 0) and trailing timestep spacing at sampling time.
 */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const T = betas.length;
  const sqrtAbar = new Float64Array(T);
  let abar = 1;
  for (let i = 0; i < T; i++) sqrtAbar[i] = Math.sqrt((abar *= 1 - betas[i]));
  const first = sqrtAbar[0];
  const last = sqrtAbar[T - 1];
  const scaled = sqrtAbar.map((a) => ((a - last) * first) / (first - last)); // last -> 0, first -> first
  const ab = scaled.map((a) => a * a);
  return ab.map((a, i) => 1 - (i === 0 ? a : a / ab[i - 1]));
}

/** A discrete VP schedule: betas, alpha_bar = prod(1 - beta), sigma = sqrt((1 - abar) / abar), index t = 0..T-1. */
export interface DiscreteVP {
  readonly betas: Float64Array;
  readonly alphaBar: Float64Array;
  /** Increasing in t; Infinity at a zero-terminal-SNR step. */
  readonly sigmas: Float64Array;
  readonly T: number;
}

/** The schedule of a list of betas (each in (0, 1]). */
export function discreteVP(betas: Float64Array | number[]): DiscreteVP {
  const b = Float64Array.from(betas);
  if (b.length < 2) throw new RangeError(`discreteVP: need at least 2 betas, got ${b.length}`);
  b.forEach((x, i) => {
    if (!(x > 0 && x <= 1)) throw new RangeError(`discreteVP: betas must be in (0, 1], got betas[${i}] = ${x}`);
  });
  const alphaBar = new Float64Array(b.length);
  let a = 1;
  b.forEach((beta, i) => (alphaBar[i] = a *= 1 - beta));
  const sigmas = alphaBar.map((ab) => Math.sqrt((1 - ab) / ab));
  return { betas: b, alphaBar, sigmas, T: b.length };
}

/**
 * The timestep index t(sigma) [B] (float64) of a discrete schedule: linear interpolation of
 * ln(sigma) between the two neighbouring steps (k-diffusion, DiscreteSchedule.sigma_to_t),
 * clamped to [0, T-1]; with `quantize` the nearest step instead.
 */
export function sigmaToT(schedule: DiscreteVP, sigma: Tensor, { quantize = false }: { quantize?: boolean } = {}): Tensor {
  return tidy(() => {
    const logSigmas = tensor(schedule.sigmas.map(Math.log)).to({ device: sigma.device }); // [T], increasing
    const ls = sigma.to({ dtype: 'float64' }).log().reshape([-1]); // [B]
    const dists = ls.unsqueeze(0).sub(logSigmas.unsqueeze(1)); // [T, B]
    if (quantize) return dists.abs().argmin(0).to({ dtype: 'float64' }).reshape(sigma.shape);
    const low = dists
      .ge(0)
      .sum(0)
      .sub(1)
      .clamp(0, schedule.T - 2); // last step with log sigma_t <= ln(sigma)
    const lo = logSigmas.indexSelect(0, low);
    const hi = logSigmas.indexSelect(0, low.add(1));
    const w = lo.sub(ls).div(lo.sub(hi)).clamp(0, 1); // NaN-free: hi > lo strictly
    return low.to({ dtype: 'float64' }).add(w).reshape(sigma.shape);
  });
}

/** sigma(t) [B] (float64) at a fractional timestep index, interpolating ln(sigma) (k-diffusion, t_to_sigma). */
export function tToSigma(schedule: DiscreteVP, t: Tensor): Tensor {
  return tidy(() => {
    const logSigmas = tensor(schedule.sigmas.map(Math.log)).to({ device: t.device });
    const td = t
      .to({ dtype: 'float64' })
      .reshape([-1])
      .clamp(0, schedule.T - 1);
    const low = td.floor();
    const w = td.sub(low);
    const lo = logSigmas.indexSelect(0, low.long());
    const hi = logSigmas.indexSelect(0, td.ceil().long());
    // where w = 0 take lo itself, so an infinite sigma (zero terminal SNR) does not become NaN
    return w
      .eq(0)
      .where(lo, lo.add(hi.sub(lo).mul(w)))
      .exp()
      .reshape(t.shape);
  });
}

/**
 * Ho et al. 2020, Eq. 7: the posterior q(x_{t-1} | x_t, x0) = N(c0 x0 + ct x_t, variance) of
 * the VP chain at step index t >= 1 (both in VP coordinates):
 *   c0 = sqrt(abar_{t-1}) beta_t / (1 - abar_t),  ct = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t),
 *   variance = beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.
 * c0 + ct is not 1: the mean is not on the segment from x0 to x_t (REFERENCES.md).
 */
export function ddpmPosterior(schedule: DiscreteVP, t: number): { c0: number; ct: number; variance: number } {
  if (!Number.isInteger(t) || t < 1 || t >= schedule.T) throw new RangeError(`ddpmPosterior: t must be an integer in [1, ${schedule.T - 1}], got ${t}`);
  const { betas, alphaBar } = schedule;
  const denom = 1 - alphaBar[t];
  return {
    c0: (Math.sqrt(alphaBar[t - 1]) * betas[t]) / denom,
    ct: (Math.sqrt(1 - betas[t]) * (1 - alphaBar[t - 1])) / denom,
    variance: ((1 - alphaBar[t - 1]) / denom) * betas[t],
  };
}

// ---- continuous schedules by log-SNR -------------------------------------------

/**
 * A continuous-time schedule given by its log signal-to-noise ratio lambda(t) =
 * ln(alpha^2 / sigma_vp^2) = -2 ln sigma, decreasing on t in [0, 1], with its inverse.
 * Both act elementwise on float64 tensors.
 */
export interface LogSnrSchedule {
  logSnr(t: Tensor): Tensor;
  /** t(lambda), the inverse of logSnr. */
  time(logSnr: Tensor): Tensor;
}

/** sigma = exp(-lambda / 2). */
export function sigmaFromLogSnr(logSnr: Tensor): Tensor {
  return tidy(() => logSnr.mul(-0.5).exp());
}

/** lambda = -2 ln sigma. */
export function logSnrFromSigma(sigma: Tensor): Tensor {
  return tidy(() => sigma.log().mul(-2));
}

/** The VP coefficients of a sigma: alpha = 1 / sqrt(1 + sigma^2), sigma_vp = sigma / sqrt(1 + sigma^2). */
export function vpFromSigma(sigma: Tensor): { alpha: Tensor; sigmaVp: Tensor } {
  return tidy(() => {
    const alpha = sigma.square().add(1).rsqrt();
    return { alpha, sigmaVp: sigma.mul(alpha) };
  });
}

const atan = (x: Tensor) => x.atan2(1);

/**
 * The cosine schedule in log-SNR form, lambda(t) = -2 ln tan(pi t / 2) (alpha = cos(pi t / 2),
 * Kingma et al. 2021; Hoogeboom et al. 2023, Sec. 3), optionally clipped to
 * [logSnrMin, logSnrMax] by lambda(t) = -2 ln tan(a t + b) (simple diffusion's
 * logsnr_schedule_cosine). Default unclipped: lambda(0) = +inf, sigma(0) = 0.
 */
export function cosineLogSnr({ logSnrMin = -Infinity, logSnrMax = Infinity }: { logSnrMin?: number; logSnrMax?: number } = {}): LogSnrSchedule {
  const b = Math.atan(Math.exp(-0.5 * logSnrMax));
  const a = Math.atan(Math.exp(-0.5 * logSnrMin)) - b;
  return {
    logSnr: (t) =>
      tidy(() => {
        const u = t.to({ dtype: 'float64' }).mul(a).add(b);
        return u.sin().div(u.cos()).log().mul(-2);
      }),
    time: (l) =>
      tidy(() =>
        atan(l.to({ dtype: 'float64' }).mul(-0.5).exp())
          .sub(b)
          .div(a),
      ),
  };
}

/**
 * Song et al. 2021's VP SDE, beta(t) = betaMin + t (betaMax - betaMin): alpha_bar(t) =
 * exp(-t^2 (betaMax - betaMin) / 2 - t betaMin), so lambda(t) = -ln(expm1(t^2 (bMax - bMin) / 2 + t bMin)).
 */
export function linearVPLogSnr({ betaMin = 0.1, betaMax = 20 }: { betaMin?: number; betaMax?: number } = {}): LogSnrSchedule {
  const d = betaMax - betaMin;
  return {
    logSnr: (t) =>
      tidy(() => {
        const td = t.to({ dtype: 'float64' });
        return td
          .square()
          .mul(d / 2)
          .add(td.mul(betaMin))
          .expm1()
          .log()
          .neg();
      }),
    // solve (d/2) t^2 + betaMin t = ln(1 + e^-lambda) for t >= 0
    time: (l) =>
      tidy(() => {
        const c = l.to({ dtype: 'float64' }).neg().softplus();
        return c
          .mul(2 * d)
          .add(betaMin * betaMin)
          .sqrt()
          .sub(betaMin)
          .div(d);
      }),
  };
}

/**
 * Variance exploding (Song et al. 2021, SMLD): sigma(t) = sigmaMin (sigmaMax / sigmaMin)^t,
 * geometric. Defaults are EDM's Table 1 VE column (0.02, 100).
 */
export function veLogSnr({ sigmaMin = 0.02, sigmaMax = 100 }: { sigmaMin?: number; sigmaMax?: number } = {}): LogSnrSchedule {
  const lo = Math.log(sigmaMin);
  const span = Math.log(sigmaMax / sigmaMin);
  return {
    logSnr: (t) => tidy(() => t.to({ dtype: 'float64' }).mul(span).add(lo).mul(-2)),
    time: (l) => tidy(() => l.to({ dtype: 'float64' }).mul(-0.5).sub(lo).div(span)),
  };
}

/**
 * Hoogeboom et al. 2023 (simple diffusion), Sec. 3.1: a schedule tuned at resolution
 * `base` is shifted for resolution d by logSNR_shifted(t) = logSNR(t) + 2 ln(base / d),
 * i.e. sigma is multiplied by d / base: the same per-pixel SNR for an average-pooled
 * d -> base image.
 */
export function shiftLogSnr(schedule: LogSnrSchedule, { base, resolution }: { base: number; resolution: number }): LogSnrSchedule {
  const shift = resolutionShift({ base, resolution }, 'shiftLogSnr');
  return {
    logSnr: (t) => tidy(() => schedule.logSnr(t).add(shift)),
    time: (l) => tidy(() => schedule.time(l.sub(shift))),
  };
}

/**
 * Hoogeboom et al. 2023, Sec. 3.1: the log-SNR shift 2 ln(base / resolution) of a schedule
 * tuned at resolution `base` and used at `resolution` (0 when they are equal).
 *
 * @example
 *   resolutionShift({ base: 32, resolution: 64 }); // -2 ln 2: sigma doubles
 */
export function resolutionShift({ base, resolution }: { base: number; resolution: number }, who = 'resolutionShift'): number {
  if (!(base > 0) || !(resolution > 0)) throw new RangeError(`${who}: base and resolution must be positive, got ${base} and ${resolution}`);
  return 2 * Math.log(base / resolution);
}

/**
 * A discrete VP schedule with its log-SNR moved by `shift` at every step: lambda'_t =
 * lambda_t + shift, i.e. sigma'_t = sigma_t e^(-shift / 2) and abar'_t = 1 / (1 + sigma'_t^2)
 * (simple diffusion's shift with shift = resolutionShift(...), Hoogeboom et al. 2023, Sec. 3.1;
 * Chen 2023's input scaling by b is shift = 2 ln b). Shift 0 returns `schedule` itself.
 *
 * @example
 *   const s = shiftDiscreteVP(discreteVP(cosineBetas()), resolutionShift({ base: 32, resolution: 64 }));
 *   s.sigmas[500]; // twice the cosine schedule's sigma at step 500
 */
export function shiftDiscreteVP(schedule: DiscreteVP, shift: number): DiscreteVP {
  if (!Number.isFinite(shift)) throw new RangeError(`shiftDiscreteVP: shift must be a finite number, got ${shift}`);
  if (shift === 0) return schedule;
  const k = Math.exp(-shift / 2);
  const sigmas = schedule.sigmas.map((s) => s * k);
  const alphaBar = sigmas.map((s) => 1 / (1 + s * s));
  const betas = alphaBar.map((ab, i) => 1 - ab / (i === 0 ? 1 : alphaBar[i - 1]));
  return { betas, alphaBar, sigmas, T: schedule.T };
}

/** sigma(t) [n] at n evenly spaced t from tMax down to tMin, then a final 0 ([n + 1], float64): a sampling grid. */
export function sigmasFromLogSnr(schedule: LogSnrSchedule, n: number, { tMin = 0, tMax = 1 }: { tMin?: number; tMax?: number } = {}): Tensor {
  checkSteps('sigmasFromLogSnr', n);
  return tidy(() => {
    const s = sigmaFromLogSnr(schedule.logSnr(linspace(tMax, tMin, n, { dtype: 'float64' })));
    return s.pad([0, 1]);
  });
}

// ---- EDM -------------------------------------------------------------------------

/** EDM's defaults (Karras et al. 2022, Table 1 and Sec. 5). */
export const EDM = Object.freeze({ sigmaMin: 0.002, sigmaMax: 80, sigmaData: 0.5, rho: 7 });

/**
 * EDM Eq. 5 (Karras grid): sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho,
 * i = 0..N-1, then a final 0 ([N + 1], float64).
 */
export function karrasSigmas(n: number, { sigmaMin = EDM.sigmaMin, sigmaMax = EDM.sigmaMax, rho = EDM.rho }: { sigmaMin?: number; sigmaMax?: number; rho?: number } = {}): Tensor {
  checkSteps('karrasSigmas', n);
  const a = sigmaMax ** (1 / rho);
  const b = sigmaMin ** (1 / rho);
  const s = Array.from({ length: n }, (_, i) => (n === 1 ? sigmaMax : (a + (i / (n - 1)) * (b - a)) ** rho));
  return tensor([...s, 0], { dtype: 'float64' });
}

function checkSteps(who: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${who}: the number of steps must be a positive integer, got ${n}`);
}
