/**
 * A distilled student in `diffuse sample` and `diffuse eval`: the sampling it was distilled for
 * (its checkpoint's distillation record: sampler, grid, steps) becomes the default, a different
 * choice is noted on stderr, and --guidance is checked against the student's guidance (an
 * embedded w range, or a teacher scale built in).
 *
 * @example
 *   const args = parseArgs(argv, { ...SAMPLING_FLAGS, ...GUIDANCE_FLAGS, steps: 'value' });
 *   studentDefaults(args, meta, dir);   // sets --steps/--sampler/--grid from the record when not given
 */
import { CheckpointMeta } from '../training/checkpoint';
import { studentGuidanceProblem } from '../distillation/record';
import { ParsedArgs, UsageError } from './args';

/** Applies a student's sampling defaults to args (nothing for other models); a --guidance that does not fit is a UsageError naming it. */
export function studentDefaults(args: ParsedArgs, meta: CheckpointMeta, dir: string, log: NodeJS.WritableStream = process.stderr): void {
  const rec = meta.distillation;
  if (!rec) return;
  const { sampler, grid, steps } = rec.sampling;
  for (const [flag, value] of [
    ['steps', String(steps)],
    ['sampler', sampler],
    ['grid', grid],
  ] as const) {
    const given = args.flags.get(flag);
    if (given === undefined) args.flags.set(flag, value);
    else if (given !== value) log.write(`note: ${dir} is a student distilled for ${steps} steps of ${sampler} on the ${grid} grid; --${flag} ${given} samples it otherwise\n`);
  }
  if (rec.consistency && args.flags.get('sampler') === 'consistency' && !args.flags.has('sigma-min')) args.flags.set('sigma-min', String(rec.consistency.sigmaMin)); // re-noise with the student's boundary
  const raw = args.flags.get('guidance');
  const type = args.flags.get('guidance-type') ?? 'cfg';
  for (const s of raw === undefined ? [null] : raw.split(',').map(Number)) {
    const problem = studentGuidanceProblem(rec, type, s);
    if (problem) throw new UsageError(`--guidance${s === null ? '' : ` ${s}`}: ${problem}`);
  }
  if (rec.guidance.embedded)
    for (const f of ['guidance-interval', 'guidance-rescale'])
      if (args.flags.has(f)) throw new UsageError(`--${f}: this student embeds classifier-free guidance (one evaluation per step); --${f} does not apply to it`);
}
