/**
 * The guidance flags `diffuse sample` and `diffuse eval` share, parsed into the library's
 * GuidanceSpec (src/guidance/load.ts builds the guided denoiser from it): classifier-free
 * guidance on the model's own null class, classifier guidance with a noise-conditional
 * classifier (default: the one shipped in models/fashion-mnist-classifier), or autoguidance
 * with a weaker checkpoint of the same task.
 *
 * @example
 *   const g = parseGuidance(args, meta);                 // { type: 'cfg', interval: ... } or null
 *   const prepared = prepareGuidance(denoiser, meta, g!);
 *   const { denoiser: D } = prepared.at(guidanceScales(args, { sweep: false })![0]);
 */
import * as fs from 'node:fs';
import { Denoiser } from '../core/denoiser';
import { GUIDANCE_TYPES, GuidanceSpec, GuidanceType, GuideMismatchError, prepareGuidance as loadGuidance, PreparedGuidance } from '../guidance/load';
import { CheckpointMeta } from '../training/checkpoint';
import { shippedClassifierDir } from '../training/classifier';
import { choiceFlag, numberList, ParsedArgs, parseNumber, UsageError } from './args';

export { GUIDANCE_TYPES, GuidanceSpec, GuidanceType };

/** The flag kinds to merge into a command's parseArgs table. */
export const GUIDANCE_FLAGS = { guidance: 'value', 'guidance-type': 'value', 'guide-checkpoint': 'value', classifier: 'value', 'guidance-interval': 'value', 'guidance-rescale': 'value' } as const;

/** Help rows for the guidance flags. */
export function guidanceHelpRows({ sweep }: { sweep: boolean }): [string, string][] {
  return [
    [
      '--guidance W',
      `guidance scale${sweep ? ' (a comma list sweeps it: 1,2,3)' : ''}; cfg/auto: D_u + W (D_c - D_u), 1 = no guidance; classifier: D_c + W sigma^2 grad log p(y|x, sigma), 0 = no guidance`,
    ],
    ['--guidance-type T', "'cfg' (classifier-free, default), 'classifier' or 'auto' (autoguidance)"],
    ['--guide-checkpoint DIR', 'autoguidance: the weaker model of the same task (a smaller or shorter-trained checkpoint)'],
    ['--classifier DIR', 'classifier guidance: a noise-conditional classifier (default models/fashion-mnist-classifier)'],
    ['--guidance-interval LO,HI', 'cfg/auto: guide only for sigma in (LO, HI] (Kynkaanniemi et al. 2024)'],
    ['--guidance-rescale PHI', 'cfg: guidance rescale in [0, 1] (Lin et al. 2024)'],
  ];
}

/** The --guidance values (one, or a comma list when sweeping), or null when not given. */
export function guidanceScales(args: ParsedArgs, { sweep }: { sweep: boolean }): number[] | null {
  const raw = args.flags.get('guidance');
  if (raw === undefined) return null;
  if (!sweep && raw.includes(',')) throw new UsageError(`--guidance: expected one number, got ${JSON.stringify(raw)} (diffuse eval sweeps a comma list)`);
  return sweep ? numberList(args, 'guidance')! : [parseNumber('guidance', raw)];
}

/** The guidance options other than the scale, checked against the model; null when no guidance flag is given. */
export function parseGuidance(args: ParsedArgs, meta: CheckpointMeta): Omit<GuidanceSpec, 'scale'> | null {
  const given = Object.keys(GUIDANCE_FLAGS).filter((f) => args.flags.has(f));
  if (given.length === 0) return null;
  if (!args.flags.has('guidance')) throw new UsageError(`--${given[0]} needs --guidance W`);
  const type = choiceFlag(args, 'guidance-type', GUIDANCE_TYPES, 'cfg');
  if (!meta.classNames) throw new UsageError(`--guidance: this model is not class-conditional; guidance needs class labels`);
  const only = (flag: string, types: GuidanceType[]) => {
    if (args.flags.has(flag) && !types.includes(type)) throw new UsageError(`--${flag} applies to --guidance-type ${types.join(' or ')}, not ${type}`);
  };
  only('guide-checkpoint', ['auto']);
  only('classifier', ['classifier']);
  only('guidance-interval', ['cfg', 'auto']);
  only('guidance-rescale', ['cfg']);
  const spec: Omit<GuidanceSpec, 'scale'> = { type };
  if (type === 'auto') {
    const g = args.flags.get('guide-checkpoint');
    if (!g) throw new UsageError('--guidance-type auto needs --guide-checkpoint DIR (a weaker model of the same task)');
    spec.guide = g;
  }
  if (type === 'classifier') {
    spec.guide = args.flags.get('classifier') ?? shippedClassifierDir();
    if (!fs.existsSync(spec.guide)) throw new UsageError(`--classifier ${spec.guide}: no such folder`);
  }
  const iv = args.flags.get('guidance-interval');
  if (iv !== undefined) {
    const p = iv.split(',');
    if (p.length !== 2) throw new UsageError(`--guidance-interval: expected LO,HI, got ${JSON.stringify(iv)}`);
    const [lo, hi] = p.map((s) => parseNumber('guidance-interval', s, { min: 0 }));
    if (!(lo < hi)) throw new UsageError(`--guidance-interval: need LO < HI, got ${iv}`);
    spec.interval = [lo, hi];
  }
  const rs = args.flags.get('guidance-rescale');
  if (rs !== undefined) spec.rescale = parseNumber('guidance-rescale', rs, { min: 0, max: 1 });
  return spec;
}

/** The library's prepareGuidance, with a guide of another task reported as a usage error naming --guide-checkpoint. */
export function prepareGuidance(D: Denoiser, meta: CheckpointMeta, spec: Omit<GuidanceSpec, 'scale'>): PreparedGuidance {
  try {
    return loadGuidance(D, meta, spec);
  } catch (e) {
    if (e instanceof GuideMismatchError) throw new UsageError(`--guide-checkpoint ${spec.guide}: not a model of the same task (classes or sample shape differ)`);
    throw e;
  }
}
