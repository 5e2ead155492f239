/**
 * Denoising objectives. Each one draws sigma and noise n from a passed Generator,
 * builds x = x0 + sigma n, asks the denoiser D for x0, and measures a weighted squared
 * error in one target space (eps, x0 or v; see weighting.ts for why that is only a
 * weight). All take a `Denoiser` (wrap a network with a preconditioner from
 * core/precond.ts), and all return the per-sample losses [B] and the sigmas used, so a
 * trainer can log the loss per noise level, plus their mean to backpropagate.
 *
 * Per sample the squared error is averaged over the data dimensions (DDPM's mean_flat), or
 * over several resolutions of it (`scales`: simple diffusion's multiscale loss).
 *
 * @example
 *   const D = edmDenoiser((xIn, c) => net.forward(xIn, c));
 *   const { loss, perSample, sigma } = edmLoss(D, x0, { generator });
 *   loss.backward();
 */
import { avgPool2d } from '../engine/functional';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser, expandSigma } from '../core/denoiser';
import { DiscreteVP, vpFromSigma } from '../core/schedules';
import { discreteSigma, logNormalSigma, SigmaSampler } from './sigma-sampling';
import { edmWeighting, Target, uncertaintyWeighted, Weighting } from './weighting';

export interface LossResult {
  /** The batch mean (a scalar): what to backpropagate. */
  loss: Tensor;
  /** [B] each sample's weighted loss. */
  perSample: Tensor;
  /** [B] each sample's noise level. */
  sigma: Tensor;
}

export interface LossOptions {
  generator: Generator;
  cond?: Conditioning;
  /** Image resolutions of simple diffusion's multiscale loss (multiscaleMeanSquare); absent: the plain mean square. */
  scales?: readonly number[];
}

/** Mean over every dim but the first: [B, ...] -> [B] (DDPM's mean_flat). */
export const meanFlat = (t: Tensor) => (t.ndim > 1 ? t.mean(Array.from({ length: t.ndim - 1 }, (_, i) => i + 1)) : t);

/**
 * Simple diffusion's multiscale loss (Hoogeboom et al. 2023, Sec. 3.3): for an error image
 * [B, C, d, d], sum over s in `scales` of w_s mean((D_s err)^2), D_s the average pooling to
 * s x s and w_s proportional to 1/s, normalized to sum 1 (the paper's raw 1/s only rescales the
 * loss). The pooled error is the error of the pooled prediction, since pooling is linear: low
 * frequencies, which decide the global layout, weigh more than in the plain mean square.
 *
 * @example
 *   multiscaleMeanSquare(err, [16, 32, 64]); // [B]: (1/16 L16 + 1/32 L32 + 1/64 L64) / (1/16 + 1/32 + 1/64)
 */
export function multiscaleMeanSquare(err: Tensor, scales: readonly number[]): Tensor {
  const d = err.dim(-1);
  if (err.ndim !== 4 || err.dim(-2) !== d) throw new TypeError(`multiscaleMeanSquare: expected square images [B, C, d, d], got [${err.shape.join(', ')}]`);
  return tidy(() => {
    const total = scales.reduce((a, s) => a + 1 / s, 0);
    let out: Tensor | null = null;
    for (const s of scales) {
      if (!Number.isInteger(d / s)) throw new TypeError(`multiscaleMeanSquare: scale ${s} does not divide the image size ${d}`);
      const pooled = s === d ? err : avgPool2d(err, d / s);
      const term = meanFlat(pooled.square()).mul(1 / s / total);
      out = out ? out.add(term) : term;
    }
    if (!out) throw new TypeError('multiscaleMeanSquare: scales is empty');
    return out;
  });
}

/**
 * The error of a denoiser's estimate x0Hat of x0 from x = x0 + s n, measured in `target` space
 * (s the noise level broadcast to x's shape; see denoisingLoss for the three spaces).
 *
 * @example
 *   const err = targetError('eps', { x0, n, s, x, x0Hat }); // (x - x0Hat) / s - n
 */
export function targetError(target: Target, { x0, n, s, x, x0Hat }: { x0: Tensor; n: Tensor; s: Tensor; x: Tensor; x0Hat: Tensor }): Tensor {
  return tidy(() => {
    if (target === 'x0') return x0Hat.sub(x0);
    if (target === 'eps') return x.sub(x0Hat).div(s).sub(n);
    if (target === 'v') {
      const { alpha, sigmaVp } = vpFromSigma(s);
      const epsHat = x.sub(x0Hat).div(s);
      return alpha
        .mul(epsHat)
        .sub(sigmaVp.mul(x0Hat))
        .sub(alpha.mul(n).sub(sigmaVp.mul(x0)));
    }
    throw new TypeError(`denoisingLoss: target must be 'eps', 'x0' or 'v', got ${JSON.stringify(target)}`);
  });
}

/**
 * The shared unit: n ~ N(0, I), x = x0 + sigma n, x0_hat = D(x, sigma), and
 * weight(sigma) * mean((prediction - truth)^2) in `target` space, where
 *   x0:  x0_hat vs x0
 *   eps: (x - x0_hat) / sigma vs n                                   (x = x0 + sigma eps)
 *   v:   alpha eps_hat - sigma_vp x0_hat vs alpha n - sigma_vp x0    (Salimans & Ho 2022, Sec. 4; alpha, sigma_vp the VP scalings)
 */
export function denoisingLoss(D: Denoiser, x0: Tensor, sigma: Tensor, { target = 'x0', weight, generator, cond, scales }: LossOptions & { target?: Target; weight?: Weighting }): LossResult {
  return tidy(() => {
    const s = expandSigma(sigma, x0); // [B, 1, ...]
    const n = generator.randnLike(x0);
    const x = x0.add(n.mul(s));
    const err = targetError(target, { x0, n, s, x, x0Hat: D(x, sigma, cond) });
    let perSample = scales ? multiscaleMeanSquare(err, scales) : meanFlat(err.square()); // [B]
    if (weight) perSample = perSample.mul(weight(sigma).to({ dtype: perSample.dtype }));
    return { loss: perSample.mean(), perSample, sigma };
  });
}

/**
 * Ho et al. 2020, Algorithm 1 / Eq. 14 (L_simple): t ~ U{1..T}, ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2,
 * optionally weighted (in eps space, e.g. minSnrWeighting(5, 'eps')).
 */
export function ddpmLoss(D: Denoiser, x0: Tensor, schedule: DiscreteVP, opts: LossOptions & { weighting?: Weighting }): LossResult {
  const sigma = discreteSigma(schedule)(x0.dim(0), opts.generator, { dtype: x0.dtype, device: x0.device });
  return denoisingLoss(D, x0, sigma, { ...opts, target: 'eps', weight: opts.weighting });
}

/** ||D(x, sigma) - x0||^2 (an x0-prediction loss) with sigma from `sampleSigma`, optionally weighted. */
export function x0Loss(D: Denoiser, x0: Tensor, opts: LossOptions & { sampleSigma: SigmaSampler; weighting?: Weighting }): LossResult {
  const sigma = opts.sampleSigma(x0.dim(0), opts.generator, { dtype: x0.dtype, device: x0.device });
  return denoisingLoss(D, x0, sigma, { ...opts, target: 'x0', weight: opts.weighting });
}

/** Salimans & Ho 2022, Sec. 4: ||v_hat - v||^2, v = alpha eps - sigma_vp x0, with sigma from `sampleSigma`, optionally weighted. */
export function vLoss(D: Denoiser, x0: Tensor, opts: LossOptions & { sampleSigma: SigmaSampler; weighting?: Weighting }): LossResult {
  const sigma = opts.sampleSigma(x0.dim(0), opts.generator, { dtype: x0.dtype, device: x0.device });
  return denoisingLoss(D, x0, sigma, { ...opts, target: 'v', weight: opts.weighting });
}

export interface EDMLossOptions extends LossOptions {
  /** Mean of ln(sigma) (default -1.2). */
  pMean?: number;
  /** Std of ln(sigma) (default 1.2). */
  pStd?: number;
  /** sigma_data (default 0.5). */
  sigmaData?: number;
}

/** EDM, Karras et al. 2022, Eq. 2 with Eq. 8 / Table 1: ln(sigma) ~ N(P_mean, P_std^2), lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2. */
export function edmLoss(D: Denoiser, x0: Tensor, { pMean = -1.2, pStd = 1.2, sigmaData = 0.5, ...opts }: EDMLossOptions): LossResult {
  const sigma = logNormalSigma({ pMean, pStd })(x0.dim(0), opts.generator, { dtype: x0.dtype, device: x0.device });
  return denoisingLoss(D, x0, sigma, { ...opts, target: 'x0', weight: edmWeighting(sigmaData) });
}

/**
 * EDM2, Karras et al. 2023, Eq. 21: the EDM loss L(sigma) divided by e^u(sigma), plus u(sigma),
 * with u the network's learned log-variance head `logvar` (sigma [B] -> [B]). Defaults
 * P_mean = -0.4, P_std = 1.0 as EDM2's ImageNet configs.
 */
export function edm2Loss(D: Denoiser, logvar: (sigma: Tensor) => Tensor, x0: Tensor, { pMean = -0.4, pStd = 1.0, ...opts }: EDMLossOptions): LossResult {
  return tidy(() => {
    const edm = edmLoss(D, x0, { pMean, pStd, ...opts });
    const perSample = uncertaintyWeighted(edm.perSample, logvar(edm.sigma).reshape([-1]));
    return { loss: perSample.mean(), perSample, sigma: edm.sigma };
  });
}
