/**
 * Training, evaluating, saving and loading the image classifier of src/models/classifier.ts.
 *
 * - Clean classifier (noise 'none'): cross-entropy on Fashion-MNIST train images.
 * - Noisy classifier (noise 'ddpm', for classifier guidance): each sample gets its own
 *   sigma = sigma_t of the linear-beta DDPM schedule with t ~ Uniform{1..1000} (Ho et al.
 *   2020, Algorithm 1; Dhariwal & Nichol 2021 train their classifier on the diffusion
 *   model's own noise levels), sigma in [0.01, 157], and sees x = x0 + sigma n.
 *
 * Training uses the TRAIN split only (Adam, seeded batches from DataLoader, a cosine
 * learning rate); evaluation uses the TEST split. A saved classifier is a folder:
 *
 *   weights.safetensors   the state dict (float32)
 *   classifier.json       name, architecture config, accuracies, the training command and
 *                         options, and the weights' size and SHA-256; written last and
 *                         atomically, so it is the commit (a crash leaves no half-written net).
 *
 * @example
 *   const { net, losses } = trainClassifier({ noise: 'ddpm', steps: 1000, seed: 0 });
 *   const acc = evaluateClassifier(net, loadFashionMNIST({ split: 'test' }), { sigma: 1 });
 *   saveClassifier('runs/cls', net, { name: 'my-net', testAccuracy: acc, ... });
 *   const again = loadClassifier('runs/cls').net;
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tensor } from '../engine/create';
import * as F from '../engine/functional';
import { Generator } from '../engine/random';
import { loadSafetensors, saveSafetensors } from '../engine/safetensors';
import { dispose, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { discreteVP, linearBetas } from '../core/schedules';
import { loadFashionMNIST } from '../data/fashion-mnist';
import { DataLoader, ImageDataset } from '../data/loader';
import { Classifier, ClassifierConfig, resolveClassifierConfig } from '../models/classifier';
import { Adam } from '../optim/adam';
import { cosineSchedule } from '../optim/schedule';
import { writeFileAtomic } from '../util/image';
import { Progress } from '../util/progress';
import { diffuseVersion } from './checkpoint';
import { discreteSigma, SigmaSampler } from './sigma-sampling';
import { shippedDir } from '../util/shipped';

/** How training noises the images: not at all, or with the DDPM schedule's sigmas. */
export type ClassifierNoise = 'none' | 'ddpm';

export interface ClassifierTrainOptions {
  /** 'none' (a clean classifier, default) or 'ddpm' (noise-conditional, for guidance). */
  noise?: ClassifierNoise;
  /** Optimizer steps (default 1200: 2.6 epochs at batch 128). */
  steps?: number;
  /** Images per step (default 128). */
  batchSize?: number;
  /** Peak learning rate of the cosine schedule (default 2e-3; warm-up over min(50, steps / 10) steps). */
  lr?: number;
  /** Seed of the weights, the batches and the noise (default 0). */
  seed?: number;
  /** Architecture (noiseConditional is set from `noise`). */
  config?: Partial<ClassifierConfig>;
  /** The training images (default: Fashion-MNIST's train split). */
  data?: ImageDataset;
  /** Progress bar stream (default process.stderr; null: silent). */
  log?: NodeJS.WritableStream | null;
}

export interface ClassifierTrainResult {
  net: Classifier;
  /** The loss of every step. */
  losses: number[];
  seconds: number;
}

/** The sigma sampler of a noise kind (null for 'none'). */
export function classifierSigmaSampler(noise: ClassifierNoise): SigmaSampler | null {
  if (noise === 'none') return null;
  if (noise === 'ddpm') return discreteSigma(discreteVP(linearBetas()));
  throw new TypeError(`classifier noise must be 'none' or 'ddpm', got ${JSON.stringify(noise)}`);
}

/** Cross-entropy of the net on x0 (clean), or on x0 + sigma n with a sigma per sample. [] scalar. */
export function classifierLoss(net: Classifier, x0: Tensor, labels: Tensor, sampler: SigmaSampler | null, generator: Generator): Tensor {
  return tidy(() => {
    if (!sampler) return F.crossEntropy(net.forward(x0), labels);
    const sigma = sampler(x0.dim(0), generator, { dtype: x0.dtype }); // [B]
    const x = x0.add(generator.randnLike(x0).mul(sigma.reshape([-1, 1, 1, 1]))); // x = x0 + sigma n
    return F.crossEntropy(net.forward(x, sigma), labels);
  });
}

/** Trains a classifier (see the module comment); the caller disposes result.net. */
export function trainClassifier(opts: ClassifierTrainOptions = {}): ClassifierTrainResult {
  const { noise = 'none', steps = 1200, batchSize = 128, lr = 2e-3, seed = 0, log = process.stderr } = opts;
  checkInt('steps', steps, 1);
  checkInt('batchSize', batchSize, 1);
  checkInt('seed', seed, 0);
  if (!(lr > 0 && Number.isFinite(lr))) throw new RangeError(`trainClassifier: lr must be a positive number, got ${lr}`);
  const sampler = classifierSigmaSampler(noise);
  const data = opts.data ?? loadFashionMNIST({ split: 'train' });
  const net = new Classifier({ ...opts.config, noiseConditional: noise !== 'none' }, { generator: new Generator(seed) });
  const loader = new DataLoader(data, { batchSize, seed });
  const noiseGen = new Generator(seed + 1);
  const opt = new Adam(net.parameters(), { lr });
  const schedule = cosineSchedule({ lr, totalSteps: steps, warmupSteps: Math.min(50, Math.floor(steps / 10)) });
  const bar = log ? new Progress(steps, noise === 'none' ? 'train-classifier' : 'train-classifier (noisy)', log as NodeJS.WriteStream) : null;
  const losses: number[] = [];
  const t0 = performance.now();
  try {
    net.train();
    for (let k = 0; k < steps; k++) {
      const loss = tidy(() => {
        const { x, labels } = loader.next();
        const l = classifierLoss(net, x, labels!, sampler, noiseGen);
        const v = l.item();
        if (!Number.isFinite(v)) throw new Error(`trainClassifier: the loss is ${v} at step ${k + 1}; lower lr (now ${lr})`);
        opt.lr = schedule(k);
        opt.zeroGrad();
        l.backward();
        opt.step();
        return v;
      });
      losses.push(loss);
      bar?.tick({ loss });
    }
    bar?.done();
  } catch (e) {
    net.dispose();
    throw e;
  } finally {
    opt.dispose();
    loader.dispose();
    if (!opts.data) dispose([data.images, data.labels]);
  }
  net.eval();
  return { net, losses, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Top-1 accuracy on a labeled dataset (uint8 images), batched under noGrad. With `sigma`,
 * each image is noised as x0 + sigma n (n from a Generator seeded by `seed`, so the number
 * is reproducible) and the net is told sigma.
 */
export function evaluateClassifier(net: Classifier, data: ImageDataset, { sigma, batchSize = 500, seed = 12345 }: { sigma?: number; batchSize?: number; seed?: number } = {}): number {
  if (sigma !== undefined && !(sigma > 0)) throw new RangeError(`evaluateClassifier: sigma must be positive, got ${sigma}`);
  const n = data.images.dim(0);
  const g = new Generator(seed);
  let correct = 0;
  for (let i = 0; i < n; i += batchSize)
    correct += noGrad(() =>
      tidy(() => {
        const len = Math.min(batchSize, n - i);
        let x = data.images.narrow(0, i, len).float().div(127.5).sub(1); // [b, 1, H, W] in [-1, 1]
        const s = sigma === undefined ? undefined : tensor([sigma]).expand([len]);
        if (s) x = x.add(g.randnLike(x).mul(sigma!));
        const pred = net.forward(x, s).argmax(1);
        return pred.eq(data.labels.narrow(0, i, len)).sum().item();
      }),
    );
  return correct / n;
}

// ---- the saved format --------------------------------------------------------------

export const CLASSIFIER_FILE = 'classifier.json';
export const CLASSIFIER_WEIGHTS = 'weights.safetensors';
export const CLASSIFIER_FORMAT = 'diffuse-classifier';

/** What classifier.json holds. */
export interface ClassifierMeta {
  format: typeof CLASSIFIER_FORMAT;
  formatVersion: 1;
  /** The net's published name, e.g. "fmnist-cnn-v1": fixed weights; a changed net gets a new name. */
  name: string;
  diffuse: string;
  createdAt: string;
  config: ClassifierConfig;
  numParameters: number;
  classNames: string[];
  /** Top-1 accuracy on the test split (clean images). */
  testAccuracy: number;
  /** Test accuracy at fixed noise levels (noise-conditional nets), keyed by sigma. */
  accuracyBySigma: Record<string, number> | null;
  /** How it was trained. */
  training: { noise: ClassifierNoise; steps: number; batchSize: number; lr: number; seed: number; seconds: number; finalLoss: number; command: string };
  weights: { file: string; bytes: number; sha256: string };
}

/** Writes a classifier folder: the weights, then classifier.json (atomically, the commit). */
export function saveClassifier(dir: string, net: Classifier, meta: Omit<ClassifierMeta, 'format' | 'formatVersion' | 'diffuse' | 'createdAt' | 'config' | 'numParameters' | 'weights'>): ClassifierMeta {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, CLASSIFIER_WEIGHTS);
  saveSafetensors(file, net.stateDict(), { format: CLASSIFIER_FORMAT, name: meta.name }); // atomic (temporary file + rename)
  const bytes = fs.readFileSync(file);
  const out: ClassifierMeta = {
    format: CLASSIFIER_FORMAT,
    formatVersion: 1,
    diffuse: diffuseVersion(),
    createdAt: new Date().toISOString(),
    ...meta,
    config: net.config,
    numParameters: net.numParameters(),
    weights: { file: CLASSIFIER_WEIGHTS, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') },
  };
  writeFileAtomic(path.join(dir, CLASSIFIER_FILE), JSON.stringify(out, null, 1) + '\n');
  return out;
}

/** Reads and checks classifier.json and the weights (size, SHA-256, names, shapes); the net is in eval mode. Dispose it when done. */
export function loadClassifier(dir: string): { meta: ClassifierMeta; net: Classifier } {
  const jsonFile = path.join(dir, CLASSIFIER_FILE);
  if (!fs.existsSync(jsonFile)) throw new Error(`loadClassifier: ${jsonFile} not found (not a classifier folder?)`);
  let meta: ClassifierMeta;
  try {
    meta = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as ClassifierMeta;
  } catch (e) {
    throw new Error(`loadClassifier: ${jsonFile} is not valid JSON (${(e as Error).message})`);
  }
  if (meta?.format !== CLASSIFIER_FORMAT) throw new Error(`loadClassifier: ${jsonFile} is not a Diffuse classifier (format ${JSON.stringify(meta?.format)}, expected "${CLASSIFIER_FORMAT}")`);
  const wfile = path.join(dir, meta.weights.file);
  const bytes = fs.readFileSync(wfile);
  if (bytes.length !== meta.weights.bytes || createHash('sha256').update(bytes).digest('hex') !== meta.weights.sha256)
    throw new Error(`loadClassifier: ${wfile} does not match the size/SHA-256 that ${CLASSIFIER_FILE} records (corrupt or replaced)`);
  const net = new Classifier(resolveClassifierConfig(meta.config));
  const { tensors } = loadSafetensors(wfile);
  try {
    net.loadStateDict(tensors);
  } catch (e) {
    net.dispose();
    throw new Error(`loadClassifier: ${wfile} does not fit the architecture in ${CLASSIFIER_FILE}: ${(e as Error).message}`);
  } finally {
    dispose(tensors);
  }
  return { meta, net: net.eval() };
}

/** The shipped noise-conditional Fashion-MNIST classifier (models/fashion-mnist-classifier). */
export function shippedClassifierDir(): string {
  return shippedDir('fashion-mnist-classifier');
}

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`trainClassifier: ${name} must be an integer >= ${min}, got ${v}`);
}
