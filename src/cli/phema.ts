/**
 * `diffuse phema RUN --std 0.05,0.10,0.15`: post-hoc EMA (EDM2 Sec. 3, Algorithm 3). From
 * the snapshots a run trained with --ema phema wrote, reconstructs the EMA of each sigma_rel
 * into a checkpoint folder that `diffuse sample` and `diffuse eval` load.
 */
import { MAX_SIGMA_REL } from '../optim/phema';
import { reconstructRunEma } from '../training/phema';
import { Progress } from '../util/progress';
import { choiceFlag, intFlag, numberList, parseArgs, table, UsageError } from './args';

export function phemaHelp(): string {
  return `Usage: diffuse phema RUN --std S1,S2,... [--step N] [--out DIR] [--dtype float32|float16|bfloat16]

Post-hoc EMA (Karras et al. 2024, EDM2, Sec. 3 and Algorithm 3): a run trained with
--ema phema keeps power-function EMAs of sigma_rel --phema-stds and writes snapshots of
them (RUN/phema/); this reconstructs the EMA of any other sigma_rel (the EMA length
relative to the training time) from them by least squares, one checkpoint folder per
std: DIR/ema-<std>-<step>/ (checkpoint.json + ema.safetensors, like diffuse export), which
diffuse sample, diffuse eval and diffuse info read.

  --std S1,S2,...   the sigma_rels to reconstruct, each in (0, ${MAX_SIGMA_REL.toFixed(4)}); EDM2 found
                    0.05-0.15 best; values outside the tracked ones extrapolate
  --step N          reconstruct the EMA as it was at snapshot step N (default: the last)
  --out DIR         where the folders go (default RUN/posthoc)
  --dtype D         the weights' dtype (float32)
  -h, --help        this help

Example:
  diffuse train --ema phema --out runs/p
  diffuse phema runs/p --std 0.05,0.10,0.15
  diffuse eval runs/p/posthoc/ema-0.15-00001200 --sampler dpmpp-2m --steps 20
`;
}

export function phemaCommand(argv: readonly string[]): number {
  const args = parseArgs(argv, { help: 'switch', std: 'value', step: 'value', out: 'value', dtype: 'value' });
  if (args.flags.has('help')) {
    process.stdout.write(phemaHelp());
    return 0;
  }
  if (args.positionals.length !== 1) throw new UsageError(`expected one RUN folder, got ${args.positionals.length ? args.positionals.join(' ') : 'none'} (see diffuse phema --help)`);
  const run = args.positionals[0];
  const stds = numberList(args, 'std', { greaterThan: 0 });
  if (!stds) throw new UsageError('--std is required: the sigma_rels to reconstruct, e.g. --std 0.05,0.10,0.15');
  for (const s of stds) if (!(s < MAX_SIGMA_REL)) throw new UsageError(`--std: ${s} is out of range: a sigma_rel must be in (0, ${MAX_SIGMA_REL.toFixed(4)}) (1/sqrt(12) is a uniform average)`);
  const dup = stds.find((s, i) => stds.indexOf(s) !== i);
  if (dup !== undefined) throw new UsageError(`--std: ${dup} is given twice`);
  const step = args.flags.has('step') ? intFlag(args, 'step', 0, { min: 1 }) : undefined;
  const dtype = choiceFlag(args, 'dtype', ['float32', 'float16', 'bfloat16'] as const, 'float32');
  let bar: Progress | null = null;
  const results = reconstructRunEma(run, { stds, step, out: args.flags.get('out'), dtype, onSnapshot: (total) => (bar ??= new Progress(total, 'phema')).tick() });
  (bar as Progress | null)?.done();
  const rows: [string, string][] = results.map((r) => [`sigma_rel ${r.std}`, `${r.dir}  (step ${r.step}, ${r.snapshots} snapshots, max |coefficient| ${r.maxAbsCoefficient.toFixed(2)})`]);
  process.stdout.write(`${table(rows, 0)}\n`);
  return 0;
}
