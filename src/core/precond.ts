/**
 * Preconditioning: how a network F becomes a denoiser (EDM, Karras et al. 2022, Eq. 7):
 *
 *   D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
 *
 * Every prediction type is a row of coefficients (EDM Table 1), served by the one
 * function `fromCoefficients`; with alpha = 1 / sqrt(1 + sigma^2) (the VP scaling):
 *
 *   network predicts   c_skip                  c_out                    c_in                      c_noise
 *   epsilon            1                       -sigma                   alpha                     the caller's (e.g. t(sigma))
 *   x0                 0                       1                        alpha                     the caller's
 *   v (Salimans & Ho)  alpha^2                 -sigma alpha             alpha                     the caller's
 *   EDM                sd^2/(sigma^2 + sd^2)   sigma sd/sqrt(s^2+sd^2)  1/sqrt(sigma^2 + sd^2)    ln(sigma) / 4
 *   consistency        sd^2/((s-smin)^2+sd^2)  (s-smin) sd/sqrt(s^2+sd^2)  the base model's          the base model's
 *
 * (v-prediction is EDM with sigma_data = 1 and F = -v.) The network only ever sees
 * c_in x and c_noise; what c_noise means (a DDPM timestep index, a continuous t, a
 * log-sigma) is a separate choice, a `NoiseLevel`.
 *
 * @example
 *   const D = edmDenoiser((xIn, cNoise) => net.forward(xIn, cNoise));              // EDM
 *   const ddpm = discreteVP(linearBetas());
 *   const E = discreteVPDenoiser((xIn, t) => unet.forward(xIn, t), ddpm);          // DDPM epsilon model
 *   const V = vDenoiser(f, { cNoise: continuousTime(cosineLogSnr()) });            // v-prediction, continuous t
 *   const C = vConsistencyDenoiser(f, { sigmaMin: 0.01, cNoise: discreteTimestep(ddpm) }); // C(x, 0.01) = x exactly
 */
import { onesLike, zerosLike } from '../engine/create';
import { Tensor } from '../engine/tensor';
import { tidy } from '../engine/scope';
import { Conditioning, Denoiser, expandSigma } from './denoiser';
import { DiscreteVP, logSnrFromSigma, LogSnrSchedule, sigmaToT } from './schedules';

/** A raw network: scaled input c_in x [B, ...] and noise level c_noise [B] -> output [B, ...]. */
export type Network = (xIn: Tensor, cNoise: Tensor, cond?: Conditioning) => Tensor;

/** The four preconditioning coefficients at a batch of noise levels, each [B]. */
export interface Coefficients {
  cSkip: Tensor;
  cOut: Tensor;
  cIn: Tensor;
  cNoise: Tensor;
}

/** sigma [B] -> what the network is told about the noise level, [B]. */
export type NoiseLevel = (sigma: Tensor) => Tensor;

/** What a VP-style network predicts. */
export type Prediction = 'eps' | 'x0' | 'v';

/** EDM Eq. 7: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise). The one adapter every prediction type goes through. */
export function fromCoefficients(net: Network, coefficients: (sigma: Tensor) => Coefficients): Denoiser {
  return (x, sigma, cond) =>
    tidy(() => {
      const c = coefficients(sigma);
      const e = (t: Tensor) => expandSigma(t.to({ dtype: x.dtype }), x); // [B, 1, ..., 1]
      const F = net(x.mul(e(c.cIn)), c.cNoise.to({ dtype: x.dtype }), cond);
      return x.mul(e(c.cSkip)).add(F.mul(e(c.cOut)));
    });
}

// ---- noise-level conditioning (c_noise) -----------------------------------------

/** EDM Table 1: c_noise = ln(sigma) / 4. */
export const logSigmaNoise: NoiseLevel = (sigma) => tidy(() => sigma.log().div(4));

/** A DDPM timestep index t(sigma) in [0, T-1] (fractional, or the nearest step with quantize). */
export function discreteTimestep(schedule: DiscreteVP, { quantize = false }: { quantize?: boolean } = {}): NoiseLevel {
  return (sigma) => sigmaToT(schedule, sigma, { quantize });
}

/** A continuous time t(sigma) in [0, 1] of a log-SNR schedule, times `scale` (EDM's VP uses 999). */
export function continuousTime(schedule: LogSnrSchedule, { scale = 1 }: { scale?: number } = {}): NoiseLevel {
  return (sigma) => tidy(() => schedule.time(logSnrFromSigma(sigma.to({ dtype: 'float64' }))).mul(scale));
}

// ---- coefficients (EDM Table 1, in the sigma parametrization) -------------------

/** The VP rows: c_in = 1 / sqrt(1 + sigma^2) for all; c_skip and c_out by what the network predicts. */
export function vpCoefficients(prediction: Prediction, sigma: Tensor, cNoise: NoiseLevel): Coefficients {
  return tidy(() => {
    const cIn = sigma.square().add(1).rsqrt(); // alpha
    const noise = cNoise(sigma);
    switch (prediction) {
      case 'eps': // x0 = x - sigma eps
        return { cSkip: onesLike(sigma), cOut: sigma.neg(), cIn, cNoise: noise };
      case 'x0':
        return { cSkip: zerosLike(sigma), cOut: onesLike(sigma), cIn, cNoise: noise };
      case 'v': // x0 = alpha x_vp - sigma_vp v = alpha^2 x - sigma alpha v
        return { cSkip: cIn.square(), cOut: sigma.mul(cIn).neg(), cIn, cNoise: noise };
      default:
        throw new TypeError(`prediction must be 'eps', 'x0' or 'v', got ${JSON.stringify(prediction)}`);
    }
  });
}

/** EDM Table 1 ("Ours"): c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2). */
export function edmCoefficients(sigma: Tensor, { sigmaData = 0.5, cNoise = logSigmaNoise }: { sigmaData?: number; cNoise?: NoiseLevel } = {}): Coefficients {
  return tidy(() => {
    const v = sigma.square().add(sigmaData ** 2); // sigma^2 + sd^2
    return { cSkip: v.rdiv(sigmaData ** 2), cOut: sigma.mul(sigmaData).mul(v.rsqrt()), cIn: v.rsqrt(), cNoise: cNoise(sigma) };
  });
}

/**
 * Song et al. 2023, "Consistency Models", App. C (after EDM): the consistency function
 * f(x, sigma) = c_skip x + c_out F with the boundary condition f(x, sigma_min) = x built in,
 *   c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2),   c_out = (sigma - sigma_min) sd / sqrt(sigma^2 + sd^2),
 * so c_skip(sigma_min) = 1 and c_out(sigma_min) = 0 exactly. c_in and c_noise are the base model's
 * (`base`), so a student started from a teacher sees its inputs as the teacher did.
 */
export function consistencyCoefficients(sigma: Tensor, { sigmaMin, sigmaData = 0.5, base }: { sigmaMin: number; sigmaData?: number; base: Pick<Coefficients, 'cIn' | 'cNoise'> }): Coefficients {
  return tidy(() => {
    const d = sigma.sub(sigmaMin); // sigma - sigma_min
    const sd2 = sigmaData ** 2;
    return { cSkip: d.square().add(sd2).rdiv(sd2), cOut: d.mul(sigmaData).mul(sigma.square().add(sd2).rsqrt()), cIn: base.cIn.clone(), cNoise: base.cNoise.clone() };
  });
}

/**
 * The consistency coefficients of a VP v-prediction network (v is EDM's row with sigma_data = 1 and
 * F = -v, so c_out is negated): c_skip = 1 / ((sigma - sigma_min)^2 + 1), c_out = -(sigma - sigma_min) alpha,
 * c_in = alpha. At sigma_min = 0 these are the v row itself; at sigma = sigma_min, f = x.
 */
export function vConsistencyCoefficients(sigma: Tensor, sigmaMin: number, cNoise: NoiseLevel): Coefficients {
  return tidy(() => {
    const c = consistencyCoefficients(sigma, { sigmaMin, sigmaData: 1, base: { cIn: sigma.square().add(1).rsqrt(), cNoise: cNoise(sigma) } });
    return { ...c, cOut: c.cOut.neg() };
  });
}

/**
 * Luo et al. 2023 (LCM), Sec. 4.1: a consistency function that keeps the base model's own
 * prediction (eps, x0 or v) and adds the boundary on top, f = c_skip x + (1 - c_skip) D(x, sigma)
 * with D the base row's estimate and c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2) (Song et al. 2023):
 *   c_skip' = c_skip + (1 - c_skip) c_skip_D,   c_out' = (1 - c_skip) c_out_D,   c_in, c_noise the base row's.
 * f(x, sigma_min) = x exactly; with sd small (the teacher's first noise level) f is D everywhere else,
 * so a student started from the teacher (or a LoRA on it) starts as the teacher's denoiser.
 */
export function boundaryCoefficients(base: Coefficients, sigma: Tensor, { sigmaMin, sigmaData }: { sigmaMin: number; sigmaData: number }): Coefficients {
  return tidy(() => {
    const sd2 = sigmaData ** 2;
    const skip = sigma.sub(sigmaMin).square().add(sd2).rdiv(sd2); // c_skip, 1 at sigma_min
    const rest = skip.rsub(1); // 1 - c_skip, 0 at sigma_min
    return { cSkip: skip.add(rest.mul(base.cSkip)), cOut: rest.mul(base.cOut), cIn: base.cIn.clone(), cNoise: base.cNoise.clone() };
  });
}

// ---- adapters -------------------------------------------------------------------

/** An epsilon-prediction network (Ho et al. 2020) as a denoiser: D = x - sigma F(x / sqrt(1 + sigma^2)). */
export function epsDenoiser(net: Network, { cNoise }: { cNoise: NoiseLevel }): Denoiser {
  return fromCoefficients(net, (sigma) => vpCoefficients('eps', sigma, cNoise));
}

/** An x0-prediction network as a denoiser: D = F(x / sqrt(1 + sigma^2)). */
export function x0Denoiser(net: Network, { cNoise }: { cNoise: NoiseLevel }): Denoiser {
  return fromCoefficients(net, (sigma) => vpCoefficients('x0', sigma, cNoise));
}

/** A v-prediction network (Salimans & Ho 2022, Sec. 4 and App. D) as a denoiser: D = alpha^2 x - sigma alpha F. */
export function vDenoiser(net: Network, { cNoise }: { cNoise: NoiseLevel }): Denoiser {
  return fromCoefficients(net, (sigma) => vpCoefficients('v', sigma, cNoise));
}

/** EDM's preconditioned denoiser (Karras et al. 2022, Eq. 7 and Table 1). */
export function edmDenoiser(net: Network, opts: { sigmaData?: number; cNoise?: NoiseLevel } = {}): Denoiser {
  return fromCoefficients(net, (sigma) => edmCoefficients(sigma, opts));
}

/** A consistency model on a VP v-prediction network (vConsistencyCoefficients): f(x, sigma_min) = x. */
export function vConsistencyDenoiser(net: Network, { sigmaMin, cNoise }: { sigmaMin: number; cNoise: NoiseLevel }): Denoiser {
  return fromCoefficients(net, (sigma) => vConsistencyCoefficients(sigma, sigmaMin, cNoise));
}

/**
 * A discrete-timestep VP model (DDPM, Stable Diffusion) as a denoiser: the network is
 * told the timestep index t(sigma) of its schedule (k-diffusion's DiscreteEpsDDPMDenoiser /
 * DiscreteVDDPMDenoiser).
 */
export function discreteVPDenoiser(net: Network, schedule: DiscreteVP, { prediction = 'eps', quantize = false }: { prediction?: Prediction; quantize?: boolean } = {}): Denoiser {
  const cNoise = discreteTimestep(schedule, { quantize });
  return fromCoefficients(net, (sigma) => vpCoefficients(prediction, sigma, cNoise));
}
