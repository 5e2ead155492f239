/**
 * `diffuse train-classifier`: trains the CNN classifier on the train split of Fashion-MNIST or emoji
 * (clean, or noise-conditional on the DDPM sigmas for classifier guidance), evaluates it
 * on the test split and writes a classifier folder (weights.safetensors + classifier.json).
 * On the way it checkpoints into the same folder (Ctrl-C too: exit 130), and --resume
 * continues from such a checkpoint exactly where it left off.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setNumThreads } from '../engine/runtime';
import { dispose } from '../engine/scope';
import {
  CLASSIFIER_CHECKPOINT_FILE,
  CLASSIFIER_FIELDS,
  ClassifierRunOptions,
  CLASSIFIER_FILE,
  ClassifierTrainer,
  evaluateClassifier,
  loadClassifierData,
  readClassifierCheckpoint,
  removeClassifierCheckpoint,
  saveClassifier,
} from '../training/classifier';
import { INTERRUPTED_EXIT_CODE } from '../training/interrupt';
import { kebab, parseArgs, table, UsageError } from './args';
import { Override, parseValue, readOptionsFile, refuseResumeChanges, resumableKeys } from '../training/options';

/** The noise levels a noise-conditional run reports its test accuracy at. */
export const REPORT_SIGMAS: readonly number[] = [0.1, 1, 5, 20];

const DEFAULT_NAME = 'fmnist-cnn-custom';
const DEFAULT_EMOJI_NAME = 'emoji-cnn-custom';

export function trainClassifierHelp(): string {
  return `Usage: diffuse train-classifier [options]
       diffuse train-classifier --resume DIR [--steps N] [--out DIR] [--name NAME] [--checkpoint-every N]

Trains a small CNN classifier on the train split of Fashion-MNIST or of the emoji (--data;
RGB, 9 categories, flipped left-right at random), with Adam and a cosine learning rate;
reports its accuracy on the test split and writes DIR/weights.safetensors and
DIR/classifier.json. With --noise ddpm it is noise-conditional: each training image is
x0 + sigma n with sigma from the DDPM schedule (linear betas, t uniform in 1..1000), the
classifier of classifier guidance; the accuracy is also reported at sigma = ${REPORT_SIGMAS.join(', ')}.

While it trains, DIR holds a checkpoint (${CLASSIFIER_CHECKPOINT_FILE} and two tensor
files: weights, Adam state, step, losses, data order and noise generator state), written
every --checkpoint-every steps. Ctrl-C finishes the step, writes the checkpoint and exits
(130); a second Ctrl-C quits at once. --resume DIR continues such a run exactly where it
left off, with the checkpoint's options: --noise, --data, --image-size, --flip,
--batch-size, --lr and --seed cannot change. The classifier files are written when training completes; the checkpoint is
then deleted.

${table([
  ['--noise none|ddpm', "'none': a clean classifier / feature net (default); 'ddpm': noise-conditional"],
  ['--data NAME', 'fashion-mnist (default), emoji, emoji:google or emoji:twitter: the train split it learns, the test split it reports'],
  ['--image-size N', 'fashion-mnist: 28 (default); emoji: 16, 32 or 64 (default 64)'],
  ['--flip BOOL', 'random left-right flips of the training images (default: true for emoji, false for fashion-mnist)'],
  ['--steps N', 'optimizer steps (default 1200, about 2.6 epochs at batch 128); with --resume, the step to go on to'],
  ['--batch-size N', 'images per step (default 128)'],
  ['--lr LR', 'peak learning rate (default 0.002)'],
  ['--seed S', 'seed of the weights, batches and noise (default 0)'],
  ['--warmup-steps N', 'linear warm-up steps of the cosine schedule (default min(50, steps / 10))'],
  ['--name NAME', `the name recorded in classifier.json (default ${DEFAULT_NAME}, or ${DEFAULT_EMOJI_NAME})`],
  ['--out DIR', 'output folder (default runs/classifier, or runs/classifier-ddpm; with --resume, the resumed folder)'],
  ['--checkpoint-every N', 'steps between checkpoints (default 200; 0: only on Ctrl-C and at the end)'],
  ['--config FILE', 'options from a JSON file (keys as the flags, camelCase: {"steps": 500, "batchSize": 64}); flags override it'],
  ['--resume DIR', "continue the run whose checkpoint is in DIR, with the checkpoint's options"],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['-h, --help', 'this help'],
])}

Examples:
  diffuse train-classifier --out runs/features
  diffuse train-classifier --noise ddpm --steps 1500 --out runs/noisy
  diffuse train-classifier --data emoji --image-size 64 --out runs/emoji-features
  diffuse train-classifier --resume runs/noisy                # after a Ctrl-C
`;
}

/** Flag name -> option key, for every option of the classifier's table. */
const FLAGS = new Map(Object.keys(CLASSIFIER_FIELDS).map((k) => [kebab(k), k as keyof typeof CLASSIFIER_FIELDS]));

export async function trainClassifierCommand(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, { ...Object.fromEntries([...FLAGS.keys()].map((f) => [f, 'value' as const])), config: 'value', resume: 'value', help: 'switch' });
  if (args.flags.has('help')) {
    process.stdout.write(trainClassifierHelp());
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])} (train-classifier takes options only)`);
  // Every flag parsed and checked against the options' table (the library checks the same table).
  const overrides: Override[] = args.list.filter(([f]) => FLAGS.has(f)).map(([f, v]) => ({ key: FLAGS.get(f)!, value: v, source: `--${f}` }));
  // Defaults, then the JSON file, then the flags.
  const file = args.flags.get('config');
  if (file !== undefined && args.flags.has('resume')) throw new UsageError('--config and --resume do not go together: a resumed run takes its options from its checkpoint');
  const given: Record<string, unknown> = file === undefined ? {} : readOptionsFile(file, CLASSIFIER_FIELDS);
  for (const o of overrides) given[o.key] = parseValue(o.source, CLASSIFIER_FIELDS[o.key as keyof typeof CLASSIFIER_FIELDS], o.value);
  if (typeof given.threads === 'number') setNumThreads(given.threads);
  const command = ['diffuse', 'train-classifier', ...argv].join(' ');
  const resume = args.flags.get('resume');
  const trainer = resume === undefined ? startRun(given, command) : resumeRun(given, overrides, resume, command);
  try {
    const out = trainer.out!;
    const r = await trainer.run();
    if (r.status === 'interrupted') {
      process.stderr.write(`interrupted at step ${r.step} of ${trainer.options.steps}: the checkpoint is in ${out}\nresume with: diffuse train-classifier --resume ${out}\n`);
      return INTERRUPTED_EXIT_CODE;
    }
    writeClassifier(trainer, out);
  } finally {
    trainer.dispose();
  }
  return 0;
}

type Given = Partial<Record<keyof typeof CLASSIFIER_FIELDS, unknown>>;

/** A new run from the flags. */
function startRun(given: Given, command: string): ClassifierTrainer {
  const noise = (given.noise as 'none' | 'ddpm' | undefined) ?? 'none';
  const dataset = (given.data as ClassifierRunOptions['dataset'] | undefined) ?? 'fashion-mnist';
  const name = nameFlag((given.name as string | undefined) ?? (dataset === 'fashion-mnist' ? DEFAULT_NAME : DEFAULT_EMOJI_NAME));
  const out = (given.out as string | undefined) ?? (noise === 'none' ? 'runs/classifier' : 'runs/classifier-ddpm');
  refuseFinished(out);
  if (fs.existsSync(path.join(out, CLASSIFIER_CHECKPOINT_FILE)))
    throw new UsageError(`--out ${out}: already holds an unfinished run (${CLASSIFIER_CHECKPOINT_FILE}); continue it with --resume ${out}, or choose another --out`);
  const { steps, batchSize, lr, seed, warmupSteps, checkpointEvery } = given as Partial<ClassifierRunOptions>;
  const imageSize = (given.imageSize as number | null | undefined) ?? undefined;
  const flip = (given.flip as boolean | null | undefined) ?? undefined;
  try {
    return ClassifierTrainer.create({ noise, dataset, imageSize, flip, steps, batchSize, lr, seed, warmupSteps, checkpointEvery, out, notes: { name, command }, handleSigint: true });
  } catch (e) {
    if (e instanceof RangeError && /imageSize/.test(e.message)) throw new UsageError(`--image-size ${imageSize}: ${e.message.replace(/^train-classifier: /, '')}`);
    throw e;
  }
}

/** The run in `dir` continued: its checkpoint's options, with the resumable flags on top. */
function resumeRun(given: Given, overrides: readonly Override[], dir: string, command: string): ClassifierTrainer {
  const meta = readClassifierCheckpoint(dir);
  const o = meta.options as unknown as Record<string, unknown>;
  refuseResumeChanges(overrides, {
    resumable: resumableKeys(CLASSIFIER_FIELDS),
    same: (ov) => given[ov.key as keyof Given] === o[ov.key],
    value: (key) => o[key],
    flag: (key) => `--${kebab(key)}`,
    run: dir,
  });
  const steps = (given.steps as number | undefined) ?? meta.options.steps;
  if (steps < meta.step) throw new UsageError(`--steps ${steps}: the checkpoint in ${dir} is already at step ${meta.step}; give --steps ${meta.step} or more`);
  const name = nameFlag((given.name as string | undefined) ?? meta.options.notes.name ?? DEFAULT_NAME);
  const checkpointEvery = (given.checkpointEvery as number | undefined) ?? meta.options.checkpointEvery;
  const out = (given.out as string | undefined) ?? dir;
  refuseFinished(out);
  if (path.resolve(out) !== path.resolve(dir) && fs.existsSync(path.join(out, CLASSIFIER_CHECKPOINT_FILE)))
    throw new UsageError(`--out ${out}: already holds another unfinished run (${CLASSIFIER_CHECKPOINT_FILE}); choose another --out`);
  const notes = { ...meta.options.notes, name, command: meta.options.notes.command ? `${meta.options.notes.command}; resumed at step ${meta.step}: ${command}` : command };
  return ClassifierTrainer.resume(dir, { steps, out, checkpointEvery, notes, handleSigint: true });
}

/** --name: letters, digits, '.', '_' and '-'. */
function nameFlag(name: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new UsageError(`--name: letters, digits, '.', '_' and '-' only, got ${JSON.stringify(name)}`);
  return name;
}

/** --out must not hold a finished classifier. */
function refuseFinished(out: string): void {
  if (fs.existsSync(path.join(out, CLASSIFIER_FILE))) throw new UsageError(`--out ${out}: already holds a classifier (${CLASSIFIER_FILE}); choose another --out`);
}

/** Evaluates the trained net on the test split, writes the classifier folder and deletes the checkpoint. */
function writeClassifier(trainer: ClassifierTrainer, out: string): void {
  const { noise, dataset, imageSize, flip, steps, batchSize, lr, seed, notes } = trainer.options;
  const { losses, seconds } = trainer;
  const net = trainer.releaseNet();
  try {
    const test = loadClassifierData(dataset, 'test', imageSize);
    try {
      const testAccuracy = evaluateClassifier(net, test, noise === 'none' ? {} : { sigma: 0.01 });
      const n = test.images.dim(0).toLocaleString('en-US');
      process.stdout.write(`test accuracy${noise === 'none' ? '' : ' at sigma 0.01 (the smallest DDPM sigma)'}: ${(100 * testAccuracy).toFixed(2)}% (${n} ${dataset} test images)\n`);
      let accuracyBySigma: Record<string, number> | null = null;
      if (noise !== 'none') {
        accuracyBySigma = {};
        for (const s of REPORT_SIGMAS) {
          accuracyBySigma[String(s)] = evaluateClassifier(net, test, { sigma: s });
          process.stdout.write(`test accuracy at sigma ${s}: ${(100 * accuracyBySigma[String(s)]).toFixed(2)}%\n`);
        }
      }
      const name = notes.name ?? DEFAULT_NAME;
      saveClassifier(out, net, {
        name,
        classNames: test.classNames.slice(),
        testAccuracy,
        accuracyBySigma,
        training: { noise, dataset, imageSize, flip, steps, batchSize, lr, seed, seconds: Math.round(seconds), finalLoss: mean(losses.slice(-50)), command: notes.command ?? '' },
      });
      removeClassifierCheckpoint(out); // after the commit of classifier.json: a crash between the two leaves both, never neither
      process.stdout.write(`wrote ${out}/${CLASSIFIER_FILE} (${name}, ${net.numParameters()} parameters, ${seconds.toFixed(0)} s of training)\n`);
    } finally {
      dispose([test.images, test.labels]);
    }
  } finally {
    net.dispose();
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
