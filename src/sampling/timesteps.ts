/**
 * Sigma grids for discrete-timestep models: which of a DDPM schedule's T steps a
 * sampler visits. The three spacings of Lin et al. 2023 ("Common Diffusion Noise
 * Schedules and Sample Steps are Flawed", Table 2); with steps = T all three give every step.
 *
 *   linspace  t_i = round(linspace(0, T - 1, steps))            (includes t = 0 and T - 1)
 *   leading   t_i = i * floor(T / steps)                        (DDIM's; never reaches T - 1)
 *   trailing  t_i = round(T - 1 - i * T / steps), reversed       (starts at T - 1, the last step)
 *
 * and, not rounded, t_i = linspace(T - 1, 0, steps) with sigma interpolated between the table's
 * steps (k-diffusion DiscreteSchedule.get_sigmas): `discreteUniformTSigmas`, the "uniform-t" grid.
 *
 * @example
 *   const ddpm = discreteVP(linearBetas());
 *   discreteSigmas(ddpm);                                // all 1000 sigmas, descending, then 0
 *   discreteSigmas(ddpm, 100, { spacing: 'trailing' });  // sigma_999, sigma_989, ..., sigma_9, 0
 */
import { tensor } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { DiscreteVP, tToSigma } from '../core/schedules';

export type TimestepSpacing = 'linspace' | 'leading' | 'trailing';

/** The visited timestep indices, descending (distinct integers in [0, T-1]). */
export function discreteTimesteps(T: number, steps: number, spacing: TimestepSpacing = 'trailing'): number[] {
  if (!Number.isSafeInteger(steps) || steps < 1 || steps > T) throw new RangeError(`discreteTimesteps: steps must be an integer in [1, ${T}], got ${steps}`);
  let ts: number[];
  if (spacing === 'linspace') ts = Array.from({ length: steps }, (_, i) => Math.round(steps === 1 ? T - 1 : (i * (T - 1)) / (steps - 1)));
  else if (spacing === 'leading') ts = Array.from({ length: steps }, (_, i) => i * Math.floor(T / steps));
  else if (spacing === 'trailing') ts = Array.from({ length: steps }, (_, i) => Math.round(T - 1 - (i * T) / steps)).reverse();
  else throw new TypeError(`discreteTimesteps: spacing must be 'linspace', 'leading' or 'trailing', got ${JSON.stringify(spacing)}`);
  return ts.reverse();
}

/** sigma at `steps` timesteps of a discrete VP schedule, descending, then a final 0 ([steps + 1], float64). */
export function discreteSigmas(schedule: DiscreteVP, steps = schedule.T, { spacing = 'trailing' }: { spacing?: TimestepSpacing } = {}): Tensor {
  const ts = discreteTimesteps(schedule.T, steps, spacing);
  return tensor([...ts.map((t) => schedule.sigmas[t]), 0], { dtype: 'float64' });
}

/** sigma at t_i = linspace(T - 1, 0, steps), log-sigma interpolated between table steps (k-diffusion get_sigmas), then 0 ([steps + 1], float64). */
export function discreteUniformTSigmas(schedule: DiscreteVP, steps: number): Tensor {
  if (!Number.isSafeInteger(steps) || steps < 1) throw new RangeError(`discreteUniformTSigmas: steps must be a positive integer, got ${steps}`);
  const T = schedule.T;
  const ts = Array.from({ length: steps }, (_, i) => (steps === 1 ? T - 1 : ((T - 1) * (steps - 1 - i)) / (steps - 1)));
  return tidy(() => tToSigma(schedule, tensor(ts, { dtype: 'float64' })).pad([0, 1]));
}
