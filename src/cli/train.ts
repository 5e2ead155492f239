/**
 * `diffuse train`: options from the defaults, a JSON file (--config) and flags, in that
 * order of precedence (flags win); --resume continues a run from its checkpoint.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  ConfigError,
  MODEL_TYPES,
  modelFields,
  modelOptionTable,
  optionTable,
  Override,
  resolveTrainConfig,
  RESUMABLE_KEYS,
  TRAIN_DEFAULTS,
  TRAIN_KEYS,
  TrainConfig,
  applyOverrides,
} from '../training/config';
import { readCheckpointMeta } from '../training/checkpoint';
import { profile } from '../engine/profile';
import { INTERRUPTED_EXIT_CODE } from '../training/interrupt';
import { refuseResumeChanges } from '../training/options';
import { Trainer } from '../training/trainer';
import { FlagKind, kebab, parseArgs, table, UsageError } from './args';
import { DataParallel, launch, LaunchOptions, ProcessGroup, rendezvousFromEnv } from '../distributed';

/** Flag name -> config key, for every top-level key and every model field. */
export function trainFlags(): Map<string, string> {
  const m = new Map<string, string>();
  for (const k of TRAIN_KEYS) m.set(kebab(k), k);
  for (const type of MODEL_TYPES) for (const f of modelFields(type)) if (!m.has(kebab(f))) m.set(kebab(f), f);
  return m;
}

const BOOL_KEYS = new Set(['flip', 'classConditional', 'midAttention', 'augBlur']);

export function trainHelp(): string {
  const opts = optionTable().map(([k, what, d]): [string, string] => [`--${kebab(k)} ${k === 'flip' || k === 'augBlur' ? '[BOOL]' : 'VALUE'}`, `${what}; default ${d}`]);
  const unet = modelOptionTable('unet').map(([k, d]): [string, string] => [`--${kebab(k)}`, `default ${d}`]);
  const mlp = modelOptionTable('mlp').map(([k, d]): [string, string] => [`--${kebab(k)}`, `default ${d}`]);
  const edm2 = modelOptionTable('edm2').map(([k, d]): [string, string] => [`--${kebab(k)}`, `default ${d}`]);
  return `Usage: diffuse train [--config FILE.json] [--resume RUN_DIR] [--OPTION VALUE ...]

Trains a diffusion model and writes its run folder (--out): checkpoint.json with
model/ema/optimizer safetensors, samples-<step>.png grids drawn with the EMA weights,
and loss.png. With no options it trains the embedded default: a class-conditional
U-Net on Fashion-MNIST (see docs/cli.md for the numbers).

Options come from the defaults, then the JSON file (keys as below, camelCase; the model
as {"type": "unet", ...}), then the flags. Ctrl-C writes a checkpoint and exits (130);
a NaN/Inf loss stops training (exit 1) and keeps the last good checkpoint.

  --config FILE       options from a JSON file
  --resume DIR        continue the run in DIR exactly where its checkpoint left off;
                      only ${RESUMABLE_KEYS.join(', ')} may change
  --init DIR          fine-tune the run in DIR (its EMA weights; its options unless flags or
                      --config change them; give --out); with --lora-rank R only LoRA
                      adapters train and OUT/lora holds them (docs/lora.md)
  --print-config      print the resolved options as JSON and exit
  --profile           time ${PROFILE_STEPS} training steps of this config (after one warm-up step) op by op,
                      print where the time goes, and exit without writing anything

Data-parallel training (torchrun's flags; docs/distributed.md). --batch-size is per rank:
  --nproc-per-node N  start N ranks on this machine (threads split between them)
  --nnodes M          machines in the run (default 1)
  --node-rank R       this machine's index, 0..M-1 (default 0)
  --master-addr HOST  the host of rank 0 (default 127.0.0.1)
  --master-port P     its rendezvous port (default 29500)
  --dist-timeout S    seconds a rank waits for the others before failing (default 300)
  -h, --help          this help

Training options:
${table(opts)}

U-Net options (model unet):
${table(unet)}

MLP options (model mlp):
${table(mlp)}

EDM2 U-Net options (model edm2; magnitude-preserving, forced weight normalization):
${table(edm2)}

Examples:
  diffuse train                                    # the default Fashion-MNIST run
  diffuse train --steps 200 --out runs/quick
  diffuse train --data 8gaussians --model mlp --sigma-data 1 --out runs/toy
  diffuse train --objective v --weighting min-snr --out runs/v   # v prediction, min-SNR-5
  diffuse train --model edm2 --out runs/edm2       # EDM2's network, loss and lr schedule
  diffuse train --resume runs/fashion-mnist --steps 6000
  diffuse train --init runs/emoji --data emoji:google --lora-rank 8 --steps 300 --out runs/emoji-lora
  diffuse train --latent runs/ae --data emoji --image-size 64 --out runs/latent   # latent diffusion (docs/latent.md)
  diffuse train --nproc-per-node 2 --batch-size 64 --out runs/dp   # 2 ranks here, global batch 128
`;
}

/** Parses argv into a config and options; throws UsageError/ConfigError. */
export function parseTrainArgs(argv: readonly string[]): { config: TrainConfig; resume: string | null; help: boolean; printConfig: boolean; profile: boolean; launch: LaunchOptions | null } {
  const flagMap = trainFlags();
  const known: Record<string, FlagKind> = { config: 'value', resume: 'value', help: 'switch', 'print-config': 'switch', profile: 'switch' };
  for (const f of LAUNCH_FLAGS) known[f] = 'value';
  for (const [flag, key] of flagMap) known[flag] = BOOL_KEYS.has(key) ? 'bool' : 'value';
  const args = parseArgs(argv, known);
  if (args.flags.has('help')) return { config: TRAIN_DEFAULTS, resume: null, help: true, printConfig: false, profile: false, launch: null };
  if (args.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])} (train takes options only; see diffuse train --help)`);
  const resume = args.flags.get('resume') ?? null;
  const file = args.flags.get('config');
  if (resume && file) throw new UsageError('--config and --resume do not go together: a resumed run takes its options from its checkpoint');
  let base: TrainConfig = TRAIN_DEFAULTS;
  if (file) {
    let raw: unknown;
    try {
      raw = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UsageError(`--config ${file}: ${code === 'ENOENT' ? 'file not found' : code ? `cannot read it (${code})` : `not valid JSON (${(e as Error).message})`}`);
    }
    base = resolveTrainConfig(raw, file, { crossCheck: false });
  }
  const overrides: Override[] = args.list.filter(([f]) => flagMap.has(f)).map(([f, v]) => ({ key: flagMap.get(f)!, value: v, source: `--${f}` }));
  const init = [...overrides].reverse().find((o) => o.key === 'init')?.value;
  if (init !== undefined && !resume && !file) {
    // Fine-tuning: the run in --init gives the options (its network, data, objective), the flags change them.
    if (!overrides.some((o) => o.key === 'out')) throw new UsageError(`--init ${init}: give --out for the fine-tuned run (the run in ${init} stays as it is)`);
    base = { ...readCheckpointMeta(init).config, loraRank: null, loraAlpha: null, loraTargets: TRAIN_DEFAULTS.loraTargets };
  }
  if (resume) {
    base = readCheckpointMeta(resume).config;
    // Flags that repeat the checkpoint's own values are fine (the original command plus --resume works).
    const run = base;
    refuseResumeChanges(overrides, {
      resumable: RESUMABLE_KEYS,
      same: (o) => JSON.stringify(applyOverrides(run, [o])) === JSON.stringify(run),
      value: (key) => readKey(run, key),
      flag: (key) => `--${kebab(key)}`,
      run: resume,
    });
    if (!overrides.some((o) => o.key === 'out')) overrides.push({ key: 'out', value: resume, source: '--resume' });
  }
  return { config: applyOverrides(base, overrides), resume, help: false, printConfig: args.flags.has('print-config'), profile: args.flags.has('profile'), launch: launchFlags(args.flags) };
}

/** The launcher's flags (torchrun's names; not config keys: they say how to run, not what to train). */
const LAUNCH_FLAGS = ['nproc-per-node', 'nnodes', 'node-rank', 'master-addr', 'master-port', 'dist-timeout'] as const;

/** The launcher's options when --nproc-per-node or --nnodes is given (null: run here, or as the rank the environment names). */
function launchFlags(flags: Map<string, string>): LaunchOptions | null {
  if (!flags.has('nproc-per-node') && !flags.has('nnodes')) {
    for (const f of LAUNCH_FLAGS) if (flags.has(f)) throw new UsageError(`--${f} needs --nproc-per-node (the ranks to start on this machine)`);
    return null;
  }
  const num = (f: string, fallback: number | undefined): number | undefined => {
    const v = flags.get(f);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${f} must be a number, got ${JSON.stringify(v)}`);
    return n;
  };
  return {
    nprocPerNode: num('nproc-per-node', 1)!,
    nnodes: num('nnodes', 1),
    nodeRank: num('node-rank', 0),
    masterAddr: flags.get('master-addr'),
    masterPort: num('master-port', undefined),
    timeoutSeconds: num('dist-timeout', undefined),
  };
}

/** argv without the launcher's flags (what each rank runs). */
function withoutLaunchFlags(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith('--') ? argv[i].slice(2).split('=')[0] : '';
    if ((LAUNCH_FLAGS as readonly string[]).includes(name)) {
      if (!argv[i].includes('=')) i++;
    } else out.push(argv[i]);
  }
  return out;
}

export async function trainCommand(argv: readonly string[]): Promise<number> {
  const { config, resume, help, printConfig, profile: profileRun, launch: launchOpts } = parseTrainArgs(argv);
  if (help) {
    process.stdout.write(trainHelp());
    return 0;
  }
  if (printConfig) {
    process.stdout.write(JSON.stringify(config, null, 2) + '\n');
    return 0;
  }
  if (profileRun) return profileTraining(config, resume);
  if (!resume && fs.existsSync(path.join(config.out, 'checkpoint.json')))
    throw new ConfigError('--out', `${config.out} already holds a checkpoint; continue it with --resume ${config.out}, or choose another --out`);
  if (launchOpts) {
    if (rendezvousFromEnv()) throw new UsageError('--nproc-per-node: this process is already a rank of a run (WORLD_SIZE is set); start the launcher from a plain shell');
    if (profileRun) throw new UsageError('--profile times one process: drop --nproc-per-node');
    // Each rank runs this command without the launcher's flags; the environment tells it its rank.
    return launch([path.join(__dirname, 'main.js'), 'train', ...withoutLaunchFlags(argv)], { ...launchOpts, threadsPerRank: config.threads ?? undefined });
  }
  const rv = rendezvousFromEnv();
  const parallel = rv ? new DataParallel(ProcessGroup.init(rv)) : null;
  try {
    const trainer = Trainer.create(config, { resume, handleSigint: true, parallel });
    try {
      const r = await trainer.run();
      return r.status === 'interrupted' ? INTERRUPTED_EXIT_CODE : 0;
    } finally {
      trainer.dispose();
    }
  } finally {
    parallel?.group.destroy();
  }
}

/** The value of a config key (a top-level key or a model field). */
function readKey(c: TrainConfig, key: string): unknown {
  return key in c ? (c as unknown as Record<string, unknown>)[key] : (c.model as unknown as Record<string, unknown>)[key];
}

/** Training steps `diffuse train --profile` times (after one untimed warm-up step). */
export const PROFILE_STEPS = 3;

/** --profile: PROFILE_STEPS steps of the run under the op profiler; prints the table, writes nothing. */
function profileTraining(config: TrainConfig, resume: string | null): number {
  const trainer = Trainer.create(config, { resume, log: null });
  try {
    trainer.trainStep();
    const { report } = profile(() => {
      for (let i = 0; i < PROFILE_STEPS; i++) trainer.trainStep();
    });
    const perStep = report.wallMs / PROFILE_STEPS;
    process.stdout.write(`${trainer.describe()}\n`);
    process.stdout.write(
      `${PROFILE_STEPS} training steps after 1 warm-up step: ${perStep.toFixed(1)} ms per step (${((1000 * config.batchSize) / perStep).toFixed(1)} images/s) under the profiler\n\n`,
    );
    process.stdout.write(report.format({ top: 25 }) + '\n');
    return 0;
  } finally {
    trainer.dispose();
  }
}
