/**
 * Where a training batch's noise levels come from: sigma [B] per sample, drawn from a
 * passed Generator. The choice of distribution is half of a loss's weighting over
 * noise levels (the other half is lambda(sigma), see weighting.ts).
 *
 * @example
 *   const g = new Generator(0);
 *   logNormalSigma()(256, g);                           // EDM: ln sigma ~ N(-1.2, 1.2^2)
 *   discreteSigma(discreteVP(linearBetas()))(256, g);   // DDPM: t ~ U{0..T-1}, sigma_t
 *   uniformTimeSigma(cosineLogSnr())(256, g);           // t ~ U(tMin, 1), sigma(t)
 */
import { DType } from '../engine/dtype';
import { tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { DiscreteVP, LogSnrSchedule, sigmaFromLogSnr } from '../core/schedules';

export interface SigmaOptions {
  /** Default float32. */
  dtype?: DType;
  /** Default 'cpu'. */
  device?: string;
}

/** batch size, generator -> sigma [B]. */
export type SigmaSampler = (batch: number, generator: Generator, opts?: SigmaOptions) => Tensor;

/** EDM, Karras et al. 2022, Sec. 5 and Table 1: ln(sigma) ~ N(P_mean, P_std^2), P_mean = -1.2, P_std = 1.2 (EDM2 uses -0.4, 1.0). */
export function logNormalSigma({ pMean = -1.2, pStd = 1.2 }: { pMean?: number; pStd?: number } = {}): SigmaSampler {
  return (batch, generator, { dtype = 'float32', device = 'cpu' } = {}) => tidy(() => generator.randn([batch], { dtype, device }).mul(pStd).add(pMean).exp());
}

/** Ho et al. 2020, Algorithm 1: t ~ Uniform({1, ..., T}) (index 0..T-1 here), sigma = sigma_t of the schedule. */
export function discreteSigma(schedule: DiscreteVP): SigmaSampler {
  return (batch, generator, { dtype = 'float32', device = 'cpu' } = {}) =>
    tidy(() => {
      const t = generator.randint(0, schedule.T, [batch]);
      return tensor(schedule.sigmas).indexSelect(0, t).to({ dtype, device });
    });
}

/**
 * A continuous schedule with t ~ U(tMin, tMax) (Kingma et al. 2021; Song et al. 2021 train
 * the VP SDE on t in [1e-5, 1]): sigma = exp(-lambda(t) / 2). tMin > 0 keeps sigma > 0; an
 * unclipped cosine reaches sigma ~ 1e16 at t = 1, so train with cosineLogSnr({ logSnrMin: -15, ... }).
 */
export function uniformTimeSigma(schedule: LogSnrSchedule, { tMin = 1e-5, tMax = 1 }: { tMin?: number; tMax?: number } = {}): SigmaSampler {
  if (!(tMin >= 0 && tMax > tMin && tMax <= 1)) throw new RangeError(`uniformTimeSigma: need 0 <= tMin < tMax <= 1, got ${tMin}, ${tMax}`);
  return (batch, generator, { dtype = 'float32', device = 'cpu' } = {}) =>
    tidy(() => {
      const t = generator
        .rand([batch], { dtype: 'float64' })
        .mul(tMax - tMin)
        .add(tMin);
      return sigmaFromLogSnr(schedule.logSnr(t)).to({ dtype, device });
    });
}
