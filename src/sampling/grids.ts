/**
 * Sigma grids: where a sampler evaluates the denoiser. Every grid is a float64 tensor [N + 1]:
 * N noise levels, strictly decreasing, then a final 0 (the sampler's last step lands on data).
 * Solvers never compute their own timesteps (DESIGN.md, "One core type").
 *
 *   karrasSigmas        EDM Eq. 5, rho = 7 (the single implementation lives in core/schedules.ts)
 *   exponentialSigmas   uniform in ln sigma (k-diffusion get_sigmas_exponential)
 *   logSnrUniformSigmas uniform in log-SNR lambda = -2 ln sigma: the exponential grid, named by its lambda ends
 *   uniformTSigmas      uniform in t of a continuous log-SNR schedule (cosine, linear VP, VE, shifted)
 *   vpSigmas            Song et al. 2021's continuous VP grid, t from 1 to eps_s (k-diffusion get_sigmas_vp)
 *   discreteSigmas      a discrete model's timesteps, spacing 'leading' | 'linspace' | 'trailing' (timesteps.ts)
 *   consistencySigmas   consistency sampling's points: the (N + 1)-point Karras grid without its sigma_min
 *
 * GRIDS names them for `diffuse sample --grid NAME`: `gridSigmas(name, N, model)` builds a grid over a
 * model's sigma range (a DDPM model's table sigma_0 .. sigma_{T-1}, or EDM's 0.002 .. 80).
 *
 * @example
 *   karrasSigmas(18);                                            // EDM's 18-step ImageNet grid + 0
 *   exponentialSigmas(20, { sigmaMin: 0.002, sigmaMax: 80 });
 *   uniformTSigmas(cosineLogSnr({ logSnrMin: -15, logSnrMax: 15 }), 50);
 *   discreteSigmas(discreteVP(linearBetas()), 50, { spacing: 'leading' });
 *   gridSigmas('karras', 20, gridModel(discreteVP(linearBetas())));  // Karras over sigma_0 .. sigma_999
 */
import { tensor } from '../engine/create';
import { Tensor } from '../engine/tensor';
import { DiscreteVP, EDM, karrasSigmas, linearVPLogSnr, LogSnrSchedule, sigmasFromLogSnr } from '../core/schedules';
import { discreteSigmas, discreteUniformTSigmas, TimestepSpacing } from './timesteps';

export { karrasSigmas } from '../core/schedules';
export { discreteSigmas, discreteTimesteps, discreteUniformTSigmas, TimestepSpacing } from './timesteps';

/** k-diffusion get_sigmas_exponential: sigma_i = exp(linspace(ln smax, ln smin, N)), then 0. */
export function exponentialSigmas(n: number, { sigmaMin = EDM.sigmaMin, sigmaMax = EDM.sigmaMax }: { sigmaMin?: number; sigmaMax?: number } = {}): Tensor {
  checkGrid('exponentialSigmas', n, sigmaMin, sigmaMax);
  const [a, b] = [Math.log(sigmaMax), Math.log(sigmaMin)];
  return tensor([...Array.from({ length: n }, (_, i) => Math.exp(n === 1 ? a : a + ((b - a) * i) / (n - 1))), 0], { dtype: 'float64' });
}

/** Uniform in log-SNR from logSnrMin to logSnrMax; since lambda = -2 ln sigma this is exponentialSigmas between sigma = e^(-lambda/2). */
export function logSnrUniformSigmas(n: number, { logSnrMin = -2 * Math.log(EDM.sigmaMax), logSnrMax = -2 * Math.log(EDM.sigmaMin) }: { logSnrMin?: number; logSnrMax?: number } = {}): Tensor {
  return exponentialSigmas(n, { sigmaMin: Math.exp(-logSnrMax / 2), sigmaMax: Math.exp(-logSnrMin / 2) });
}

/** sigma(t) of a continuous log-SNR schedule at N evenly spaced t from tMax down to tMin, then 0. */
export function uniformTSigmas(schedule: LogSnrSchedule, n: number, range: { tMin?: number; tMax?: number } = {}): Tensor {
  return sigmasFromLogSnr(schedule, n, range);
}

/** Song et al. 2021's VP SDE grid: sigma(t) = sqrt(exp(betaD t^2 / 2 + betaMin t) - 1) at t = linspace(1, epsS, N), then 0. */
export function vpSigmas(n: number, { betaD = 19.9, betaMin = 0.1, epsS = 1e-3 }: { betaD?: number; betaMin?: number; epsS?: number } = {}): Tensor {
  return sigmasFromLogSnr(linearVPLogSnr({ betaMin, betaMax: betaMin + betaD }), n, { tMin: epsS, tMax: 1 });
}

/**
 * The points of N-step consistency sampling (Song et al. 2023, Algorithm 1): the first N of the
 * (N + 1)-point Karras grid (EDM Eq. 5, rho = 7) from sigmaMax to sigmaMin, then 0. Its last point,
 * sigma_min, is dropped: there f(x, sigma_min) = x, so a step to it would cost an evaluation for nothing.
 * consistencySigmas(1) = [sigmaMax, 0]: one evaluation.
 */
export function consistencySigmas(n: number, { sigmaMin = EDM.sigmaMin, sigmaMax = EDM.sigmaMax }: { sigmaMin?: number; sigmaMax?: number } = {}): Tensor {
  checkGrid('consistencySigmas', n, sigmaMin, sigmaMax);
  const grid = karrasSigmas(n + 1, { sigmaMin, sigmaMax }); // n + 1 points, then 0
  const k = Array.from(grid.toFloat64Array());
  grid.dispose();
  return tensor([...k.slice(0, n), 0], { dtype: 'float64' });
}

function checkGrid(who: string, n: number, sigmaMin: number, sigmaMax: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${who}: the number of steps must be a positive integer, got ${n}`);
  if (!(sigmaMin > 0 && sigmaMax > sigmaMin && Number.isFinite(sigmaMax))) throw new RangeError(`${who}: need 0 < sigmaMin < sigmaMax < Infinity, got ${sigmaMin}, ${sigmaMax}`);
}

// ---- grids by name (the CLI's --grid) ------------------------------------------------

/** What a named grid needs to know about the model: its sigma range and, for a discrete-timestep model, its table. */
export interface GridModel {
  sigmaMin: number;
  sigmaMax: number;
  /** The DDPM schedule of a discrete-timestep model (null for a continuous one such as EDM). */
  schedule: DiscreteVP | null;
}

/** A discrete model's range (its table's smallest and largest sigma), or EDM's 0.002 .. 80 when schedule is null. */
export function gridModel(schedule: DiscreteVP | null): GridModel {
  if (!schedule) return { sigmaMin: EDM.sigmaMin, sigmaMax: EDM.sigmaMax, schedule: null };
  return { sigmaMin: schedule.sigmas[0], sigmaMax: schedule.sigmas[schedule.T - 1], schedule };
}

/** A named grid: N steps over a model's range -> float64 [N + 1] ending in 0. */
export interface NamedGrid {
  name: string;
  description: string;
  /** Only for discrete-timestep models (a timestep spacing). */
  discreteOnly: boolean;
  make(n: number, model: GridModel): Tensor;
}

const spacing = (s: TimestepSpacing, description: string): NamedGrid => ({
  name: s,
  description,
  discreteOnly: true,
  make: (n, m) => discreteSigmas(m.schedule!, n, { spacing: s }),
});
const named = (name: string, description: string, make: NamedGrid['make']): NamedGrid => ({ name, description, discreteOnly: false, make });
const range = (m: GridModel) => ({ sigmaMin: m.sigmaMin, sigmaMax: m.sigmaMax });

/** Every grid by its CLI name (`--grid NAME`). */
export const GRIDS: Readonly<Record<string, NamedGrid>> = Object.freeze({
  karras: named('karras', "EDM Eq. 5, rho = 7, over the model's sigma range (EDM models' default)", (n, m) => karrasSigmas(n, range(m))),
  exponential: named('exponential', 'uniform in ln sigma over the range (k-diffusion get_sigmas_exponential)', (n, m) => exponentialSigmas(n, range(m))),
  'log-snr': named('log-snr', 'uniform in log-SNR = -2 ln sigma over the range: the exponential grid, by another name', (n, m) =>
    logSnrUniformSigmas(n, { logSnrMin: -2 * Math.log(m.sigmaMax), logSnrMax: -2 * Math.log(m.sigmaMin) }),
  ),
  'uniform-t': named('uniform-t', "uniform in the model's time: t = linspace(T-1, 0, N) interpolated in the table (DDPM models), sigma itself (EDM, sigma(t) = t)", (n, m) =>
    m.schedule ? discreteUniformTSigmas(m.schedule, n) : karrasSigmas(n, { ...range(m), rho: 1 }),
  ),
  vp: named('vp', "Song et al. 2021's VP SDE grid, t = linspace(1, 1e-3, N), its own range 0.0105 .. 152", (n) => vpSigmas(n)),
  trailing: spacing('trailing', "DDPM models' default: N of the T table steps from T - 1 down (Lin et al. 2023, Table 2)"),
  leading: spacing('leading', "table steps t = i floor(T / N), DDIM's spacing (never reaches T - 1)"),
  linspace: spacing('linspace', 'table steps round(linspace(0, T - 1, N))'),
  consistency: named('consistency', "consistency sampling's points: the (N + 1)-point Karras grid without its sigma_min (Song et al. 2023, Algorithm 1)", (n, m) => consistencySigmas(n, range(m))),
});

/** The named grid of n steps for a model, or an error naming the grid and listing the valid ones. */
export function gridSigmas(name: string, n: number, model: GridModel): Tensor {
  const g = Object.prototype.hasOwnProperty.call(GRIDS, name) ? GRIDS[name] : undefined;
  if (!g) throw new RangeError(`unknown grid ${JSON.stringify(name)}; choose one of: ${Object.keys(GRIDS).join(', ')}`);
  if (g.discreteOnly && !model.schedule)
    throw new RangeError(`grid ${JSON.stringify(name)} is a timestep spacing: it needs a discrete-timestep (ddpm) model; for this one choose one of: ${gridNames(model).join(', ')}`);
  return g.make(n, model);
}

/** The grids that apply to a model (all of them for a discrete-timestep model). */
export function gridNames(model: GridModel): string[] {
  return Object.values(GRIDS)
    .filter((g) => model.schedule || !g.discreteOnly)
    .map((g) => g.name);
}

/** One line per grid (for `diffuse samplers`): name, which models, description. */
export function listGrids(): string[] {
  const w = Math.max(...Object.keys(GRIDS).map((k) => k.length));
  return Object.values(GRIDS).map((g) => `${g.name.padEnd(w)}  ${g.discreteOnly ? 'ddpm models' : 'any model  '}  ${g.description}`);
}
