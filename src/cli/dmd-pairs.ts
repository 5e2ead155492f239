/**
 * `diffuse distill dmd-pairs`: makes DMD's regression pairs (noise, the teacher's ODE output) once,
 * in chunks with a progress bar; the same command continues a folder a stopped run left
 * (src/distillation/dmd-pairs.ts).
 *
 * @example
 *   diffuse distill dmd-pairs --teacher models/fashion-mnist --n 10000 --out runs/pairs
 *   diffuse distill dmd --pairs runs/pairs --out runs/dmd
 */
import * as fs from 'node:fs';
import { setNumThreads } from '../engine/runtime';
import { makePairs, PAIRS_DEFAULTS } from '../distillation/dmd-pairs';
import { intFlag, numberFlag, parseArgs, table, UsageError } from './args';
import { shippedModelDir } from './sample';

const P = PAIRS_DEFAULTS;

export function dmdPairsHelp(): string {
  return `Usage: diffuse distill dmd-pairs [--teacher DIR] --n N --out DIR [options]

Makes the regression pairs of DMD (Yin et al. 2023, Sec. 4.3): pair i is the noise z_i (from
Generator(seed + i), as diffuse sample draws it) and the teacher's deterministic ODE sample from
sigma_max z_i, class i mod K. Written in chunks, each atomically, with pairs.json; run the same
command again to finish a folder that a crash or Ctrl-C left incomplete.

${table([
  ['--teacher DIR', 'the teacher checkpoint (default: the shipped models/fashion-mnist)'],
  ['--n N', 'how many pairs (required)'],
  ['--out DIR', 'the pairs folder (required)'],
  ['--sampler S', `the teacher's ODE sampler (default ${P.sampler})`],
  ['--grid G', `its grid (default ${P.grid})`],
  ['--steps N', `its steps (default ${P.steps})`],
  ['--guidance W', 'the teacher under classifier-free guidance w = W (the dmd run must use the same)'],
  ['--seed S', `pair i draws its noise from Generator(S + i) (default ${P.seed})`],
  ['--chunk N', `pairs per file (default ${P.chunk})`],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['-h, --help', 'this help'],
])}
`;
}

export function dmdPairsCommand(argv: readonly string[]): number {
  const flags = {
    teacher: 'value',
    n: 'value',
    out: 'value',
    sampler: 'value',
    grid: 'value',
    steps: 'value',
    guidance: 'value',
    seed: 'value',
    chunk: 'value',
    threads: 'value',
    help: 'switch',
  } as const;
  const args = parseArgs(argv, flags);
  if (args.flags.has('help')) {
    process.stdout.write(dmdPairsHelp());
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`dmd-pairs takes no positional arguments, got ${args.positionals.join(' ')}`);
  const teacher = args.flags.get('teacher') ?? shippedModelDir();
  if (!fs.existsSync(teacher)) throw new UsageError(`--teacher ${teacher}: no such folder`);
  const out = args.flags.get('out');
  if (!out) throw new UsageError('--out DIR is required (the pairs folder)');
  if (!args.flags.has('n')) throw new UsageError('--n N is required (how many pairs)');
  if (args.flags.has('threads')) setNumThreads(intFlag(args, 'threads', 1, { min: 1 }));
  const o = {
    teacher,
    out,
    n: intFlag(args, 'n', 1, { min: 1 }),
    sampler: args.flags.get('sampler') ?? P.sampler,
    grid: args.flags.get('grid') ?? P.grid,
    steps: intFlag(args, 'steps', P.steps, { min: 1 }),
    guidance: numberFlag(args, 'guidance') ?? null,
    seed: intFlag(args, 'seed', P.seed, { min: 0 }),
    chunk: intFlag(args, 'chunk', P.chunk, { min: 1 }),
  };
  const r = makePairs(o);
  process.stdout.write(`${r.written ? `wrote ${r.written} of ${r.chunks} chunks` : `all ${r.chunks} chunks were there`}: ${o.n} pairs in ${out} (diffuse distill dmd --pairs ${out})\n`);
  return 0;
}
