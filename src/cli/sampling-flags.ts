/**
 * The sampler flags `diffuse sample` and `diffuse eval` share (--sampler, --grid, --eta,
 * --churn/--s-tmin/--s-tmax/--s-noise, --variance, --sigma-min, --clip), parsed and checked against the
 * sampler and the model once, here.
 *
 * @example
 *   const args = parseArgs(argv, { ...SAMPLING_FLAGS, n: 'value' });
 *   const s = samplingFlags(args, meta.config);   // { sampler: 'ddpm', grid: 'trailing', ... }
 *   generateSamples(D, meta.config, { ...s, shape, n, seed, steps, labels });
 */
import { buildSchedule, defaultGrid } from '../training/build';
import { closest, TrainConfig } from '../training/config';
import { ChurnOptions, getSampler, gridModel, gridNames, GRIDS, samplerParamError, SAMPLERS } from '../sampling';
import { choiceFlag, intFlag, numberFlag, ParsedArgs, UsageError } from './args';

/** The flag kinds, to merge into a command's parseArgs table. */
export const SAMPLING_FLAGS = {
  sampler: 'value',
  grid: 'value',
  eta: 'value',
  churn: 'value',
  's-tmin': 'value',
  's-tmax': 'value',
  's-noise': 'value',
  variance: 'value',
  'sigma-min': 'value',
  clip: 'bool',
  micro: 'value',
} as const;

/** Help rows for the sampler flags. */
export function samplingHelpRows(): [string, string][] {
  return [
    ['--sampler NAME', `one of ${Object.keys(SAMPLERS).join(', ')} (default ddpm)`],
    ['--grid NAME', `the noise levels: ${Object.keys(GRIDS).join(', ')} (default trailing for DDPM models, karras for EDM)`],
    ['--eta E', 'stochasticity of ddim (default 0, at most 1), euler-ancestral, dpmpp-2m-sde, dpmpp-3m-sde (default 1)'],
    ['--churn S', "EDM's S_churn for euler, heun, heun-churn (default 0; heun-churn 40), with --s-tmin, --s-tmax, --s-noise"],
    ['--variance V', 'ddpm only: "beta" (sigma_t^2 = beta_t, default) or "posterior" (beta~_t)'],
    ['--sigma-min S', "consistency only: the model's boundary sigma_min; re-noising to tau adds std sqrt(tau^2 - S^2) (default: the student's, else 0)"],
    ['--clip, --no-clip', "clamp every x0 estimate to [-1, 1], for any sampler (default on for images; --no-clip is k-diffusion's behaviour)"],
    ['--micro H,W,TOP,LEFT', "a micro-conditioned model's original size and crop offsets in pixels (SDXL; default S,S,0,0: uncropped, full size)"],
  ];
}

/** What the sampler flags chose. */
export interface SamplingChoice {
  sampler: string;
  grid: string;
  eta?: number;
  churn?: ChurnOptions;
  variance?: 'beta' | 'posterior';
  sigmaMin?: number;
  clip?: boolean;
  /** A micro-conditioned model's (h, w, top, left) (undefined: its default, uncropped and full size). */
  micro?: number[];
}

const CHURN_FLAGS = ['churn', 's-tmin', 's-tmax', 's-noise'] as const;

/** The sampler flags of args, checked against the sampler and the model's config. */
export function samplingFlags(args: ParsedArgs, config: TrainConfig): SamplingChoice {
  const variance = args.flags.has('variance') ? choiceFlag(args, 'variance', ['beta', 'posterior'] as const, 'beta') : undefined;
  const sampler = samplerFlag(args);
  const eta = numberFlag(args, 'eta', { min: 0 });
  const churn = churnFlags(args);
  const sigmaMin = numberFlag(args, 'sigma-min', { min: 0 });
  const rawClip = args.flags.get('clip');
  const clip = rawClip === undefined ? undefined : ['true', 'yes', '1'].includes(rawClip);
  const bad = samplerParamError(sampler, { eta, churn, variance, sigmaMin });
  if (bad)
    throw new UsageError(
      `${
        bad.param === 'churn'
          ? CHURN_FLAGS.filter((f) => args.flags.has(f))
              .map((f) => `--${f}`)
              .join('/')
          : `--${bad.param === 'sigmaMin' ? 'sigma-min' : bad.param}`
      }: ${bad.message}`,
    );
  return { sampler, grid: gridFlag(args, config), eta, churn, variance, sigmaMin, clip, micro: microFlag(args, config) };
}

/** --micro H,W,TOP,LEFT: four non-negative numbers, for a model trained with microCond. */
function microFlag(args: ParsedArgs, config: TrainConfig): number[] | undefined {
  const raw = args.flags.get('micro');
  if (raw === undefined) return undefined;
  if (!config.microCond) throw new UsageError(`--micro ${raw}: this model was not trained with micro-conditioning (--micro-cond)`);
  const v = raw.split(',').map((t) => Number(t.trim()));
  if (v.length !== 4 || v.some((x) => !Number.isFinite(x) || x < 0)) throw new UsageError(`--micro: expected H,W,TOP,LEFT, four non-negative numbers in pixels, got ${JSON.stringify(raw)}`);
  return v;
}

/** --sampler: a registered name (default ddpm), or a usage error listing them. */
function samplerFlag(args: ParsedArgs): string {
  const raw = args.flags.get('sampler') ?? 'ddpm';
  if (Object.hasOwn(SAMPLERS, raw)) return getSampler(raw).info.name;
  const c = closest(raw, Object.keys(SAMPLERS));
  throw new UsageError(`--sampler: unknown sampler ${JSON.stringify(raw)}${c ? ` (did you mean ${c}?)` : ''}; choose one of: ${Object.keys(SAMPLERS).join(', ')} (diffuse samplers describes them)`);
}

/** --grid: a named grid that applies to the model (default: the config's), or a usage error listing them. */
function gridFlag(args: ParsedArgs, config: Parameters<typeof defaultGrid>[0] & Parameters<typeof buildSchedule>[0]): string {
  const raw = args.flags.get('grid');
  if (raw === undefined) return defaultGrid(config);
  const valid = gridNames(gridModel(buildSchedule(config)));
  if (valid.includes(raw)) return raw;
  const why = Object.hasOwn(GRIDS, raw)
    ? `grid ${JSON.stringify(raw)} is a timestep spacing of discrete (eps, x0, v) models; this model is ${config.objective}`
    : `unknown grid ${JSON.stringify(raw)}`;
  throw new UsageError(`--grid: ${why}; choose one of: ${valid.join(', ')}`);
}

/** --churn S_CHURN, --s-tmin, --s-tmax, --s-noise: EDM's churn options given (undefined when none is). */
function churnFlags(args: ParsedArgs): ChurnOptions | undefined {
  if (!CHURN_FLAGS.some((f) => args.flags.has(f))) return undefined;
  return {
    S_churn: numberFlag(args, 'churn', { min: 0 }),
    S_tmin: numberFlag(args, 's-tmin', { min: 0 }),
    S_tmax: args.flags.get('s-tmax') === 'inf' ? Infinity : numberFlag(args, 's-tmax', { min: 0 }),
    S_noise: numberFlag(args, 's-noise', { min: 0 }),
  };
}

/** --batch-size B (or --batch, its old name in diffuse eval): samples per batch, or undefined for the library's default (DEFAULT_BATCH_SIZE). */
export function batchSizeFlag(args: ParsedArgs): number | undefined {
  if (args.flags.has('batch-size') && args.flags.has('batch')) throw new UsageError('give --batch-size or --batch (its old name), not both');
  const name = args.flags.has('batch') ? 'batch' : 'batch-size';
  return args.flags.has(name) ? intFlag(args, name, 1, { min: 1, max: 1_000_000 }) : undefined;
}
