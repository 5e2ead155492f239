/**
 * DMD's paired dataset (Yin et al. 2023, Sec. 4.3): noise z and the teacher's deterministic ODE
 * output y = ODE(sigma_max z) for it, made once, read by the regression loss ||G(z) - y||. A folder
 * of chunks, each written atomically, and pairs.json with the settings: a run stopped at any point
 * (a crash, Ctrl-C) is continued by the same call, which skips the chunks already there.
 *
 *   pairs.json                 { format, teacher, n, chunk, sampler, grid, steps, guidance, seed, sigmaMax, shape, classes }
 *   pairs-00000.safetensors    noise [c, ...shape] (z ~ N(0, I)), images [c, ...shape] (y), labels [c] int64 (class-conditional teachers)
 *
 * Pair i draws z from Generator(seed + i) as `diffuse sample` does (sampleInBatches), so y is exactly
 * the teacher's sample i at these settings; its class is i mod K (balanced), a guided teacher's scale w.
 *
 * @example
 *   await makePairs({ ...PAIRS_DEFAULTS, teacher: 'models/fashion-mnist', out: 'runs/pairs', n: 10000 });
 *   const p = readPairs('runs/pairs'); // p.noise [10000, 1, 32, 32], p.images, p.labels
 *   p.dispose();
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cat, tensor } from '../engine/create';
import { loadSafetensors, saveSafetensors } from '../engine/safetensors';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { classifierFreeGuidance } from '../guidance/cfg';
import { getSampler } from '../sampling/index';
import { initialNoise, sampleInBatches } from '../sampling/generate';
import { seededNoise } from '../sampling/noise';
import { samplingSigmas } from '../training/build';
import { CheckpointMeta, loadModel } from '../training/checkpoint';
import { ConfigError } from '../training/config';
import { writeFileAtomic } from '../util/image';
import { Progress } from '../util/progress';

export const PAIRS_FILE = 'pairs.json';
const PAIRS_FORMAT = 'diffuse-dmd-pairs';

/** How the pairs are made. */
export interface PairsOptions {
  /** The teacher's checkpoint folder. */
  teacher: string;
  /** The pairs' folder. */
  out: string;
  /** How many pairs. */
  n: number;
  /** The teacher's ODE sampler, grid and steps (its best deterministic one here: dpmpp-2m on Karras, docs/samplers.md). */
  sampler: string;
  grid: string;
  steps: number;
  /** The teacher's classifier-free guidance scale (null: none); a DMD run on these pairs uses the same. */
  guidance: number | null;
  /** Pair i draws its noise from Generator(seed + i). */
  seed: number;
  /** Pairs per file. */
  chunk: number;
}

/** The defaults: DPM-Solver++(2M) on the Karras grid in 25 steps (dpmpp-2m's FD is within noise of its 100-step value there: docs/samplers.md). */
export const PAIRS_DEFAULTS: Readonly<Omit<PairsOptions, 'teacher' | 'out' | 'n'>> = Object.freeze({ sampler: 'dpmpp-2m', grid: 'karras', steps: 25, guidance: null, seed: 0, chunk: 256 });

/** pairs.json: the settings, and what a DMD run checks against its own (teacher, guidance, sigma_max, shape). */
export interface PairsManifest extends Omit<PairsOptions, 'out' | 'teacher'> {
  format: string;
  formatVersion: number;
  teacher: { checkpoint: string; step: number };
  /** The grid's first sigma: the noise is x_T / sigmaMax. */
  sigmaMax: number;
  shape: number[];
  /** The teacher's classes (null: unconditional). */
  classes: number | null;
}

/** The real score: the frozen teacher's denoiser, behind classifier-free guidance at `scale` (null: none; Diffuse's convention, record.ts). */
export function teacherDenoiser(teacher: { denoiser: Denoiser; meta: Pick<CheckpointMeta, 'classNames'> }, scale: number | null, who: string): Denoiser {
  if (scale === null) return teacher.denoiser;
  if (!teacher.meta.classNames) throw new ConfigError('guidance', `${scale}: classifier-free guidance needs a class-conditional teacher (${who} is not)`);
  return classifierFreeGuidance(teacher.denoiser, { scale, nullClass: teacher.meta.classNames.length });
}

const chunkFile = (dir: string, c: number) => path.join(dir, `pairs-${String(c).padStart(5, '0')}.safetensors`);

/** Checks the options (errors name the option and the value). */
function checkPairsOptions(o: PairsOptions): void {
  const fail = (k: keyof PairsOptions, why: string) => new ConfigError(k, `${why}, got ${JSON.stringify(o[k])}`);
  for (const k of ['n', 'steps', 'chunk'] as const) if (!(Number.isSafeInteger(o[k]) && o[k] >= 1)) throw fail(k, 'expected a positive integer');
  if (!(Number.isSafeInteger(o.seed) && o.seed >= 0)) throw fail('seed', 'expected an integer >= 0');
  if (!(o.guidance === null || Number.isFinite(o.guidance))) throw fail('guidance', 'expected a number or null');
  try {
    getSampler(o.sampler);
  } catch (e) {
    throw new ConfigError('sampler', (e as Error).message);
  }
  if (getSampler(o.sampler).info.stochastic) throw fail('sampler', 'the pairs need a deterministic (ODE) sampler');
}

/**
 * Makes the pairs of `o` in o.out, or continues a folder that holds some of them (same settings):
 * chunks already written are kept. Returns how many chunks this call wrote.
 */
export function makePairs(o: PairsOptions, { log = process.stderr, onChunk }: { log?: NodeJS.WritableStream | null; onChunk?: (c: number) => void } = {}): { chunks: number; written: number } {
  checkPairsOptions(o);
  const teacher = loadModel(o.teacher);
  try {
    const tm = teacher.meta;
    const sigmas = samplingSigmas(tm.config, o.steps, o.grid);
    const manifest: PairsManifest = {
      format: PAIRS_FORMAT,
      formatVersion: 1,
      teacher: { checkpoint: o.teacher, step: tm.step },
      n: o.n,
      chunk: o.chunk,
      sampler: o.sampler,
      grid: o.grid,
      steps: o.steps,
      guidance: o.guidance,
      seed: o.seed,
      sigmaMax: tidy(() => sigmas.select(0, 0).item()),
      shape: tm.sampleShape,
      classes: tm.classNames?.length ?? null,
    };
    try {
      startManifest(o.out, manifest);
      const D = teacherDenoiser(teacher, o.guidance, o.teacher);
      const chunks = Math.ceil(o.n / o.chunk);
      const todo = Array.from({ length: chunks }, (_, c) => c).filter((c) => !fs.existsSync(chunkFile(o.out, c)));
      const bar = log && todo.length ? new Progress(todo.length, `dmd pairs (${chunks - todo.length} of ${chunks} chunks there)`, log as NodeJS.WriteStream) : null;
      for (const c of todo) {
        writeChunk(D, sigmas, manifest, c, o.out);
        bar?.tick({ chunk: c });
        onChunk?.(c);
      }
      bar?.done();
      return { chunks, written: todo.length };
    } finally {
      sigmas.dispose();
    }
  } finally {
    teacher.net.dispose();
  }
}

/** Writes pairs.json for a new folder, or checks that the one there has the same settings. */
function startManifest(dir: string, m: PairsManifest): void {
  const file = path.join(dir, PAIRS_FILE);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true });
    writeFileAtomic(file, JSON.stringify(m, null, 1) + '\n');
    return;
  }
  const old = readManifest(dir);
  for (const k of Object.keys(m) as (keyof PairsManifest)[])
    if (JSON.stringify(old[k]) !== JSON.stringify(m[k]))
      throw new ConfigError('out', `${dir} holds pairs made with ${k} = ${JSON.stringify(old[k])}, not ${JSON.stringify(m[k])}: continue with its settings or choose another --out`);
}

/** One chunk: pairs c * chunk .. , the noise of pair i the first draw of Generator(seed + i), its image the teacher's ODE sample from sigma_max times it. */
function writeChunk(D: Denoiser, sigmas: Tensor, m: PairsManifest, c: number, dir: string): void {
  const start = c * m.chunk;
  const size = Math.min(m.chunk, m.n - start);
  const labels = m.classes === null ? null : Array.from({ length: size }, (_, j) => (start + j) % m.classes!);
  const images = sampleInBatches(D, sigmas, { shape: m.shape, n: size, seed: m.seed + start, labels, sampler: m.sampler, clip: m.shape.length === 3 ? [-1, 1] : null });
  try {
    tidy(() => {
      const noise = noGrad(() => initialNoise(seededNoise(m.seed + start, size), size, m.shape, 1)); // z: x_T / sigma_max, as sampleInBatches drew it
      const tensors: Record<string, Tensor> = { noise, images };
      if (labels) tensors.labels = tensor(labels, { dtype: 'int64' });
      saveSafetensors(chunkFile(dir, c), tensors, { start: String(start) });
    });
  } finally {
    images.dispose();
  }
}

/** pairs.json in `dir`, checked. */
export function readManifest(dir: string): PairsManifest {
  const file = path.join(dir, PAIRS_FILE);
  let m: PairsManifest;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8')) as PairsManifest;
  } catch (e) {
    throw new ConfigError(
      'pairs',
      `${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found: this folder holds no DMD pairs (make them with diffuse distill dmd-pairs)' : `unreadable (${(e as Error).message})`}`,
    );
  }
  if (m?.format !== PAIRS_FORMAT) throw new ConfigError('pairs', `${file}: not a DMD pairs file (format ${JSON.stringify(m?.format)})`);
  return m;
}

/** The pairs in memory: noise, images [n, ...shape] and labels [n] (null: unconditional). */
export interface Pairs {
  manifest: PairsManifest;
  noise: Tensor;
  images: Tensor;
  labels: Tensor | null;
  dispose(): void;
}

/** Reads every chunk of a complete pairs folder (an incomplete one is an error that says how to finish it). */
export function readPairs(dir: string): Pairs {
  const m = readManifest(dir);
  const chunks = Math.ceil(m.n / m.chunk);
  const missing = Array.from({ length: chunks }, (_, c) => c).filter((c) => !fs.existsSync(chunkFile(dir, c)));
  if (missing.length)
    throw new ConfigError('pairs', `${dir}: ${missing.length} of ${chunks} chunks are missing (a stopped run): finish them with diffuse distill dmd-pairs --out ${dir} and the same settings`);
  const parts = Array.from({ length: chunks }, (_, c) => loadSafetensors(chunkFile(dir, c)).tensors);
  try {
    const join = (k: string) => cat(parts.map((p) => p[k]));
    const out = { noise: join('noise'), images: join('images'), labels: m.classes === null ? null : join('labels') };
    if (out.noise.dim(0) !== m.n) throw new ConfigError('pairs', `${dir}: holds ${out.noise.dim(0)} pairs, pairs.json says ${m.n}`);
    return { manifest: m, ...out, dispose: () => [out.noise, out.images, out.labels].forEach((t) => t?.dispose()) };
  } finally {
    for (const p of parts) for (const t of Object.values(p)) t.dispose();
  }
}
