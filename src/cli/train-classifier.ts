/**
 * `diffuse train-classifier`: trains the Fashion-MNIST CNN classifier on the train split
 * (clean, or noise-conditional on the DDPM sigmas for classifier guidance), evaluates it
 * on the test split and writes a classifier folder (weights.safetensors + classifier.json).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setNumThreads } from '../engine/runtime';
import { FASHION_MNIST_CLASSES, loadFashionMNIST } from '../data/fashion-mnist';
import { dispose } from '../engine/scope';
import { CLASSIFIER_FILE, evaluateClassifier, saveClassifier, trainClassifier } from '../training/classifier';
import { choiceFlag, intFlag, numberFlag, parseArgs, table, UsageError } from './args';

/** The noise levels a noise-conditional run reports its test accuracy at. */
export const REPORT_SIGMAS: readonly number[] = [0.1, 1, 5, 20];

export function trainClassifierHelp(): string {
  return `Usage: diffuse train-classifier [options]

Trains a small CNN classifier on the Fashion-MNIST train split (Adam, cosine learning
rate), reports its accuracy on the test split and writes DIR/weights.safetensors and
DIR/classifier.json. With --noise ddpm it is noise-conditional: each training image is
x0 + sigma n with sigma from the DDPM schedule (linear betas, t uniform in 1..1000), the
classifier of classifier guidance; the accuracy is also reported at sigma = ${REPORT_SIGMAS.join(', ')}.

${table([
  ['--noise none|ddpm', "'none': a clean classifier / feature net (default); 'ddpm': noise-conditional"],
  ['--steps N', 'optimizer steps (default 1200, about 2.6 epochs at batch 128)'],
  ['--batch-size N', 'images per step (default 128)'],
  ['--lr LR', 'peak learning rate (default 0.002)'],
  ['--seed S', 'seed of the weights, batches and noise (default 0)'],
  ['--name NAME', 'the name recorded in classifier.json (default fmnist-cnn-custom)'],
  ['--out DIR', 'output folder (default runs/classifier, or runs/classifier-ddpm)'],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['-h, --help', 'this help'],
])}

Examples:
  diffuse train-classifier --out runs/features
  diffuse train-classifier --noise ddpm --steps 1500 --out runs/noisy
`;
}

export async function trainClassifierCommand(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, { noise: 'value', steps: 'value', 'batch-size': 'value', lr: 'value', seed: 'value', name: 'value', out: 'value', threads: 'value', help: 'switch' });
  if (args.flags.has('help')) {
    process.stdout.write(trainClassifierHelp());
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])} (train-classifier takes options only)`);
  const noise = choiceFlag(args, 'noise', ['none', 'ddpm'] as const, 'none');
  const steps = intFlag(args, 'steps', 1200, { min: 1, max: 10_000_000 });
  const batchSize = intFlag(args, 'batch-size', 128, { min: 1, max: 60_000 });
  const seed = intFlag(args, 'seed', 0, { min: 0, max: 2 ** 31 });
  const lr = numberFlag(args, 'lr', { greaterThan: 0 }) ?? 2e-3;
  const name = args.flags.get('name') ?? 'fmnist-cnn-custom';
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new UsageError(`--name: letters, digits, '.', '_' and '-' only, got ${JSON.stringify(name)}`);
  const out = args.flags.get('out') ?? (noise === 'none' ? 'runs/classifier' : 'runs/classifier-ddpm');
  if (args.flags.has('threads')) setNumThreads(intFlag(args, 'threads', 1, { min: 1 }));
  if (fs.existsSync(path.join(out, CLASSIFIER_FILE))) throw new UsageError(`--out ${out}: already holds a classifier (${CLASSIFIER_FILE}); choose another --out`);

  const { net, losses, seconds } = trainClassifier({ noise, steps, batchSize, lr, seed });
  try {
    const test = loadFashionMNIST({ split: 'test' });
    try {
      const testAccuracy = evaluateClassifier(net, test, noise === 'none' ? {} : { sigma: 0.01 });
      process.stdout.write(`test accuracy${noise === 'none' ? '' : ' at sigma 0.01 (the smallest DDPM sigma)'}: ${(100 * testAccuracy).toFixed(2)}% (10,000 test images)\n`);
      let accuracyBySigma: Record<string, number> | null = null;
      if (noise !== 'none') {
        accuracyBySigma = {};
        for (const s of REPORT_SIGMAS) {
          accuracyBySigma[String(s)] = evaluateClassifier(net, test, { sigma: s });
          process.stdout.write(`test accuracy at sigma ${s}: ${(100 * accuracyBySigma[String(s)]).toFixed(2)}%\n`);
        }
      }
      const command = ['diffuse', 'train-classifier', ...argv].join(' ');
      saveClassifier(out, net, {
        name,
        classNames: FASHION_MNIST_CLASSES.slice(),
        testAccuracy,
        accuracyBySigma,
        training: { noise, steps, batchSize, lr, seed, seconds: Math.round(seconds), finalLoss: mean(losses.slice(-50)), command },
      });
      process.stdout.write(`wrote ${out}/${CLASSIFIER_FILE} (${name}, ${net.numParameters()} parameters, ${seconds.toFixed(0)} s of training)\n`);
    } finally {
      dispose([test.images, test.labels]);
    }
  } finally {
    net.dispose();
  }
  return 0;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
