/**
 * Checkpoints: a folder holding the weights, their EMA and the optimizer state as
 * safetensors files, and `checkpoint.json` — the config, the step, the loss history,
 * the generator and data-loader state, and the name, size and SHA-256 of every tensor
 * file. A checkpoint is complete exactly when its JSON is:
 *
 *   1. the tensor files are written under new names (model-<step>.safetensors, ...),
 *      each atomically (temporary file + rename);
 *   2. checkpoint.json is written atomically, naming them: this is the commit;
 *   3. tensor files no JSON names any more are deleted.
 *
 * A crash or Ctrl-C at any moment leaves the previous checkpoint whole. Reading checks
 * every field and every file (present, the recorded size and hash, parseable) and names
 * the file at fault.
 *
 * @example
 *   saveCheckpoint('runs/x', { ...meta }, { model: net.stateDict(), ema: emaState, optimizer: opt.stateDict() });
 *   const ck = loadCheckpoint('runs/x', { parts: ['ema'] });
 *   net.loadStateDict(ck.ema!.tensors);
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadSafetensors, saveSafetensors, SafetensorsError } from '../engine/safetensors';
import { dispose } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { DType } from '../engine/dtype';
import { writeFileAtomic } from '../util/image';
import { ConfigError, resolveTrainConfig, TrainConfig } from './config';
import { buildDenoiser, buildNetwork, DenoiserNet, loraOptions, NetworkSpec, prediction } from './build';
import { applyLora, loadLora, loraMetadata, removeLora } from '../nn/lora';
import { castTensors } from '../nn/io';
import { Denoiser } from '../core/denoiser';
import { resolveNestedUNetConfig } from '../models/nested-unet';
import { resolveUNetConfig } from '../models/unet';
import { resolveMLPDenoiserConfig } from '../models/mlp';
import { EDM2Config, resolveEDM2Config } from '../models/edm2';
import { adapterRecord, DistillationRecord, distillationProblem } from '../distillation/record';
import { LatentCodec, LatentRecord, latentRecordProblem } from '../resolution/latent';
import { loadLatentCodec } from './autoencoder';

export const CHECKPOINT_FILE = 'checkpoint.json';
export const CHECKPOINT_FORMAT = 'diffuse-checkpoint';
export const CHECKPOINT_VERSION = 1;

/**
 * The tensor files a checkpoint may hold ('phema': the power-function EMAs of a run with ema 'phema'; 'target': the EMA target network of a cd or ct student;
 * 'discriminator' and its optimizer: the trainable heads of an ADD student's discriminator; 'fake', 'fake-optimizer': the fake score network of a dmd or dmd2 student).
 */
export type Part = 'model' | 'ema' | 'optimizer' | 'phema' | 'target' | 'discriminator' | 'discriminator-optimizer' | 'fake' | 'fake-optimizer';
export const PARTS: readonly Part[] = ['model', 'ema', 'optimizer', 'phema', 'target', 'discriminator', 'discriminator-optimizer', 'fake', 'fake-optimizer'];

/** A tensor file as checkpoint.json records it. */
export interface FileRecord {
  file: string;
  bytes: number;
  sha256: string;
}

/** What checkpoint.json holds. */
export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  formatVersion: number;
  /** The Diffuse version that wrote it. */
  diffuse: string;
  createdAt: string;
  /** Optimizer steps taken. */
  step: number;
  /** The training config (materialized: every choice concrete). */
  config: TrainConfig;
  /** The exact network. */
  network: NetworkSpec;
  numParameters: number;
  /** Class names when class-conditional (the network's null class is their count). */
  classNames: string[] | null;
  /** The shape of one sample: [C, H, W] or [2]. */
  sampleShape: number[];
  /** The tensor files present. */
  files: Partial<Record<Part, FileRecord>>;
  /** Training state (absent in an export for sampling). */
  state: {
    /** Per-step losses, float32 little-endian, base64 (a multi-phase run: its first phase's). */
    losses: string;
    /** A multi-phase run's other phases' losses, by phase name (training/loop.ts). */
    phaseLosses?: Record<string, string>;
    /** A multi-phase run's phase names in order, the first the one of `losses` (absent in older checkpoints). */
    phases?: string[];
    /** Generator states, base64 (Generator.state()). */
    generators: Record<string, string>;
    loader: { step: number };
    ema: { nimg: number; updates: number };
    /** Ranks of the data-parallel run that wrote it (absent: 1). */
    worldSize?: number;
    /** Seconds spent training so far. */
    trainSeconds: number;
    /** A nested run's per-step loss term at each resolution (keyed by it), float32 base64 like `losses`. */
    levelLosses?: Record<string, string>;
  } | null;
  /** Set on an export: where it came from (posthocEma: reconstructed by `diffuse phema` from that many snapshots). */
  exportedFrom?: { step: number; part: Part; dtype: DType; posthocEma?: { sigmaRel: number; snapshots: number } };
  /** Set on a distilled student: its method, teacher, the sampling it was distilled for and its guidance convention (src/distillation/record.ts). */
  distillation?: DistillationRecord;
  /** Set on a latent diffusion model (config latent): its autoencoder and the normalization of its latents; sampleShape is then the latent shape (src/resolution/latent.ts). */
  latent?: LatentRecord;
}

/** A missing, corrupt or inconsistent checkpoint; `file` is the file at fault. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

/** Diffuse's version (from package.json). */
export function diffuseVersion(): string {
  for (const up of ['../../..', '../..']) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, up, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'diffuse' && pkg.version) return pkg.version;
    } catch {
      /* try the next */
    }
  }
  return 'unknown';
}

/** Float32 values <-> base64 (exact: losses are float32 numbers). */
export function encodeFloats(values: readonly number[]): string {
  return Buffer.from(Float32Array.from(values).buffer).toString('base64');
}
export function decodeFloats(b64: string): number[] {
  const buf = Buffer.from(b64, 'base64');
  if (buf.length % 4) throw new RangeError(`not a list of float32 values (${buf.length} bytes)`);
  return Array.from(new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length)));
}

/** The checkpoint.json path of a checkpoint folder (or the JSON path itself). */
export function checkpointJsonPath(dirOrFile: string): string {
  return path.basename(dirOrFile) === CHECKPOINT_FILE ? dirOrFile : path.join(dirOrFile, CHECKPOINT_FILE);
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** Tensors and string metadata for one part. */
export interface PartState {
  tensors: Record<string, Tensor>;
  metadata?: Record<string, string>;
}

/** A tensor file to write: its name in the folder, its tensors and string metadata. */
export interface TensorFile extends PartState {
  file: string;
}

/**
 * The commit protocol above, for any checkpoint JSON (the diffusion trainer's, the
 * classifier trainer's): writes each tensor file into `dir` (created if needed; each
 * atomically), then the JSON that `json(records)` builds from their records, atomically:
 * the commit; then deletes the files whose names match `stale` and that the JSON does not
 * name. Returns the JSON object written. The caller keeps ownership of the tensors.
 *
 * @example
 *   commitCheckpoint('runs/x', 'checkpoint.json', { model: { file: 'model-00000010.safetensors', tensors } },
 *     (files) => ({ step: 10, files }), /^model-\d+\.safetensors$/);
 */
export function commitCheckpoint<K extends string, T>(dir: string, jsonName: string, parts: Partial<Record<K, TensorFile>>, json: (files: Partial<Record<K, FileRecord>>) => T, stale: RegExp): T {
  fs.mkdirSync(dir, { recursive: true });
  const files: Partial<Record<K, FileRecord>> = {};
  for (const [part, p] of Object.entries(parts) as [K, TensorFile | undefined][]) {
    if (!p) continue;
    const full = path.join(dir, p.file);
    saveSafetensors(full, p.tensors, p.metadata);
    const bytes = fs.readFileSync(full);
    files[part] = { file: p.file, bytes: bytes.length, sha256: sha256(bytes) };
  }
  const out = json(files);
  writeFileAtomic(path.join(dir, jsonName), JSON.stringify(out, null, 1) + '\n'); // the commit
  const keep = new Set(Object.values<FileRecord | undefined>(files).map((f) => f!.file));
  for (const name of fs.readdirSync(dir)) if (stale.test(name) && !keep.has(name)) fs.rmSync(path.join(dir, name), { force: true });
  return out;
}

/**
 * Writes a checkpoint into `dir` (created if needed) as described above. `meta` is
 * everything but the file records, which this fills in. The caller keeps ownership of
 * the tensors.
 */
export function saveCheckpoint(
  dir: string,
  meta: Omit<CheckpointMeta, 'files' | 'format' | 'formatVersion' | 'diffuse' | 'createdAt'>,
  parts: Partial<Record<Part, PartState>>,
  { fileNames }: { fileNames?: Partial<Record<Part, string>> } = {},
): CheckpointMeta {
  const files: Partial<Record<Part, TensorFile>> = {};
  for (const part of PARTS) {
    const p = parts[part];
    if (p) files[part] = { ...p, file: fileNames?.[part] ?? `${part}-${String(meta.step).padStart(8, '0')}.safetensors` };
  }
  return commitCheckpoint(
    dir,
    CHECKPOINT_FILE,
    files,
    (records): CheckpointMeta => ({ format: CHECKPOINT_FORMAT, formatVersion: CHECKPOINT_VERSION, diffuse: diffuseVersion(), createdAt: new Date().toISOString(), ...meta, files: records }),
    new RegExp(`^(${PARTS.join('|')})-\\d+\\.safetensors$`),
  );
}

// ---- reading -----------------------------------------------------------------------

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** What readCheckpointJson expects of a checkpoint JSON, and how its errors name it. */
export interface CheckpointJsonKind {
  /** The "format" field it must have, e.g. "diffuse-checkpoint". */
  format: string;
  /** The one "formatVersion" this Diffuse reads. */
  version: number;
  /** What it is, for errors: "a Diffuse checkpoint". */
  what: string;
  /** The problem when the folder exists but the JSON does not, e.g. "not found: this folder holds no Diffuse checkpoint (...)". */
  missing: string;
}

/**
 * Reads a checkpoint JSON file and checks its format and version, with errors
 * (CheckpointError) that name the file: missing, unreadable, not JSON, another format,
 * another version. Returns the parsed object for the caller to check field by field.
 */
export function readCheckpointJson(file: string, kind: CheckpointJsonKind): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CheckpointError(file, fs.existsSync(path.dirname(file)) ? kind.missing : 'not found: no such checkpoint folder');
    throw new CheckpointError(file, `cannot read it (${code ?? (e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(file, `is not valid JSON, the file is corrupt or truncated (${(e as Error).message})`);
  }
  if (!isObj(raw) || raw.format !== kind.format)
    throw new CheckpointError(file, `is not ${kind.what} (its "format" is ${isObj(raw) ? JSON.stringify(raw.format) : 'missing'}, expected "${kind.format}")`);
  if (raw.formatVersion !== kind.version)
    throw new CheckpointError(
      file,
      `has format version ${JSON.stringify(raw.formatVersion)}; this Diffuse (${diffuseVersion()}) reads version ${kind.version}${typeof raw.formatVersion === 'number' && raw.formatVersion > kind.version ? ' (it was written by a newer Diffuse)' : ''}`,
    );
  return raw;
}

/** Reads and checks checkpoint.json (not the tensor files). */
export function readCheckpointMeta(dirOrFile: string): CheckpointMeta {
  const file = checkpointJsonPath(dirOrFile);
  const raw = readCheckpointJson(file, {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    what: 'a Diffuse checkpoint',
    missing: 'not found: this folder holds no Diffuse checkpoint (no checkpoint.json; was the run stopped before its first checkpoint?)',
  });
  const bad = (what: string) => new CheckpointError(file, what);
  const nonNegInt = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (!nonNegInt(raw.step)) throw bad(`"step" must be a non-negative integer, got ${JSON.stringify(raw.step)}`);
  let config: TrainConfig;
  try {
    config = resolveTrainConfig(raw.config, `${file}: config`);
  } catch (e) {
    throw e instanceof ConfigError ? new CheckpointError(file, `has an invalid config: ${e.message.slice(file.length + 2)}`) : e;
  }
  const net = raw.network;
  if (!isObj(net) || (net.type !== 'unet' && net.type !== 'mlp' && net.type !== 'edm2' && net.type !== 'nested') || !isObj(net.config))
    throw bad(`"network" must be {"type": "unet" | "mlp" | "edm2" | "nested", "config": {...}}, got ${JSON.stringify(net)?.slice(0, 80)}`);
  try {
    if (net.type === 'unet') resolveUNetConfig(net.config);
    else if (net.type === 'edm2') resolveEDM2Config(net.config as unknown as EDM2Config);
    else if (net.type === 'nested') resolveNestedUNetConfig(net.config);
    else resolveMLPDenoiserConfig(net.config);
  } catch (e) {
    throw bad(`has an invalid network config: ${(e as Error).message}`);
  }
  if (raw.distillation !== undefined) {
    const problem = distillationProblem(raw.distillation);
    if (problem) throw bad(problem);
  }
  if (raw.latent !== undefined) {
    const problem = latentRecordProblem(raw.latent);
    if (problem) throw bad(problem);
  }
  if ((config.latent !== null) !== (raw.latent !== undefined))
    throw bad(config.latent !== null ? `its config trains on latents (latent ${JSON.stringify(config.latent)}) but it has no "latent" record` : 'has a "latent" record but its config has no latent');
  if (raw.classNames !== null && !(Array.isArray(raw.classNames) && raw.classNames.every((c) => typeof c === 'string'))) throw bad('"classNames" must be a list of strings or null');
  if (!(Array.isArray(raw.sampleShape) && raw.sampleShape.length > 0 && raw.sampleShape.every((d) => Number.isSafeInteger(d) && d > 0)))
    throw bad(`"sampleShape" must be a list of positive integers, got ${JSON.stringify(raw.sampleShape)}`);
  if (!isObj(raw.files)) throw bad('"files" is missing');
  for (const [part, rec] of Object.entries(raw.files)) {
    if (!(PARTS as readonly string[]).includes(part)) throw bad(`"files" has an unknown part ${JSON.stringify(part)} (known: ${PARTS.join(', ')})`);
    if (!isObj(rec) || typeof rec.file !== 'string' || !nonNegInt(rec.bytes) || typeof rec.sha256 !== 'string' || rec.file.includes('/') || rec.file.includes('\\'))
      throw bad(`"files.${part}" must be {"file": name, "bytes": n, "sha256": hex}, got ${JSON.stringify(rec)}`);
  }
  if (!raw.files.model && !raw.files.ema) throw bad('holds neither model nor EMA weights ("files" names no model or ema file)');
  const st = raw.state;
  if (st !== null) {
    if (!isObj(st)) throw bad('"state" must be an object or null');
    if (typeof st.losses !== 'string') throw bad('"state.losses" must be a base64 string');
    try {
      decodeFloats(st.losses);
    } catch (e) {
      throw bad(`"state.losses" is corrupt: ${(e as Error).message}`);
    }
    if (!isObj(st.generators) || !Object.values(st.generators).every((g) => typeof g === 'string')) throw bad('"state.generators" must map names to base64 strings');
    if (!isObj(st.loader) || !nonNegInt(st.loader.step)) throw bad('"state.loader.step" must be a non-negative integer');
    if (!isObj(st.ema) || typeof st.ema.nimg !== 'number' || !nonNegInt(st.ema.updates)) throw bad('"state.ema" must be {"nimg": n, "updates": n}');
    if (typeof st.trainSeconds !== 'number') throw bad('"state.trainSeconds" must be a number');
  }
  return mapLatentPaths({ ...(raw as unknown as CheckpointMeta), config }, (p) => path.resolve(path.dirname(file), p)); // an export's relative path is relative to its folder
}

/** Reads one tensor file of a checkpoint, checking it against its record. */
export function loadPart(dirOrFile: string, meta: CheckpointMeta, part: Part): Required<PartState> {
  const rec = meta.files[part];
  const jsonFile = checkpointJsonPath(dirOrFile);
  if (!rec) throw new CheckpointError(jsonFile, `has no ${part} file${part === 'optimizer' ? ' (an export for sampling cannot be resumed; resume from the training run folder)' : ''}`);
  return readTensorFile(jsonFile, rec, part);
}

/**
 * Reads the tensor file that the checkpoint JSON `jsonFile` records as `part` (in the
 * JSON's folder), checking its size and SHA-256 against the record; errors name the file.
 * Dispose the tensors when done.
 */
export function readTensorFile(jsonFile: string, rec: FileRecord, part: string): Required<PartState> {
  const file = path.join(path.dirname(jsonFile), rec.file);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(file, code === 'ENOENT' ? `not found (${path.basename(jsonFile)} names it as the ${part} file)` : `cannot read it (${code ?? (e as Error).message})`);
  }
  if (bytes.length !== rec.bytes) throw new CheckpointError(file, `has ${bytes.length} bytes but ${path.basename(jsonFile)} records ${rec.bytes}: the file is truncated or was replaced`);
  if (sha256(bytes) !== rec.sha256) throw new CheckpointError(file, `is corrupt: its SHA-256 does not match the one ${path.basename(jsonFile)} records`);
  try {
    const { tensors, metadata } = loadSafetensors(file);
    return { tensors, metadata: metadata ?? {} };
  } catch (e) {
    if (e instanceof SafetensorsError) throw new CheckpointError(file, e.message.replace(`invalid safetensors file ${file}: `, 'invalid safetensors file: '));
    throw e;
  }
}

/** A checkpoint's metadata and the parts asked for (default: every part it has), all checked. Dispose the tensors when done. */
export function loadCheckpoint(dirOrFile: string, { parts }: { parts?: readonly Part[] } = {}): { meta: CheckpointMeta } & Partial<Record<Part, Required<PartState>>> {
  const meta = readCheckpointMeta(dirOrFile);
  const out: { meta: CheckpointMeta } & Partial<Record<Part, Required<PartState>>> = { meta };
  try {
    for (const part of parts ?? PARTS.filter((p) => meta.files[p])) out[part] = loadPart(dirOrFile, meta, part);
  } catch (e) {
    for (const p of PARTS) if (out[p]) dispose(out[p].tensors);
    throw e;
  }
  return out;
}

/**
 * Writes a sampling-only copy of a checkpoint: the EMA weights (or the raw ones, part
 * 'model') cast to `dtype` (float16 halves the size), and checkpoint.json without the
 * optimizer and generator state (the loss history is kept for `diffuse info`).
 */
export function exportCheckpoint(
  src: string,
  dst: string,
  { dtype = 'float16', part = 'ema', lora = null }: { dtype?: DType; part?: 'ema' | 'model'; lora?: { path: string; scale?: number } | null } = {},
): CheckpointMeta {
  const ck = loadCheckpoint(src, { parts: [part] });
  const file = path.join(path.dirname(checkpointJsonPath(src)), ck.meta.files[part]!.file);
  try {
    if (!lora && !hasLoraWeights(ck[part]!.tensors)) return saveSamplingCheckpoint(dst, ck.meta, { part, ...ck[part]!, dtype });
    // A LoRA run's adapters, and an adapter given here, merged into the base: a plain network (LoRA's merged W').
    const net = networkFromWeights(ck.meta, ck[part]!.tensors, file);
    try {
      let meta = ck.meta;
      if (lora) {
        loadLora(net, lora.path, { scale: lora.scale ?? 1 });
        removeLora(net, { merge: true });
        meta = withAdapterRecord(meta, adapterRecord(loraMetadata(lora.path), lora.path));
      }
      return saveSamplingCheckpoint(dst, meta, { part, tensors: net.stateDict(), metadata: ck[part]!.metadata, dtype });
    } finally {
      net.dispose();
    }
  } finally {
    dispose(ck[part]!.tensors);
  }
}

/** meta with a latent model's two autoencoder paths (config.latent and latent.autoencoder) mapped by f; other models as they are. */
function mapLatentPaths(meta: CheckpointMeta, f: (p: string) => string): CheckpointMeta {
  if (!meta.latent || meta.config.latent === null) return meta;
  return { ...meta, config: { ...meta.config, latent: f(meta.config.latent) }, latent: { ...meta.latent, autoencoder: f(meta.latent.autoencoder) } };
}

/**
 * Writes weights of a run (`meta`, a training checkpoint's) as a sampling-only checkpoint
 * in `dst`: `<part>.safetensors` cast to `dtype`, and checkpoint.json without optimizer or
 * generator state, at `step` (default meta.step; the loss history is cut there). Serves
 * exportCheckpoint and `diffuse phema` (posthocEma: what was reconstructed). The caller
 * keeps ownership of the tensors.
 *
 * @example
 *   saveSamplingCheckpoint('runs/x/posthoc/ema-0.1', meta, { part: 'ema', tensors, dtype: 'float32', step: 800 });
 */
export function saveSamplingCheckpoint(
  dst: string,
  meta: CheckpointMeta,
  {
    part,
    tensors,
    metadata = {},
    dtype,
    step = meta.step,
    posthocEma,
  }: { part: 'ema' | 'model'; tensors: Record<string, Tensor>; metadata?: Record<string, string>; dtype: DType; step?: number; posthocEma?: { sigmaRel: number; snapshots: number } },
): CheckpointMeta {
  if (!['float16', 'bfloat16', 'float32'].includes(dtype)) throw new RangeError(`saveSamplingCheckpoint: dtype must be float16, bfloat16 or float32, got ${dtype}`);
  if (!(Number.isSafeInteger(step) && step >= 0 && step <= meta.step)) throw new RangeError(`saveSamplingCheckpoint: step must be an integer in [0, ${meta.step}], got ${step}`);
  const cast = castTensors(tensors, dtype);
  // An export names a latent model's autoencoder relative to its own folder, so the two move together (models/x and ../emoji-ae-f4).
  const placed = mapLatentPaths(meta, (p) => path.relative(path.resolve(dst), p).split(path.sep).join('/') || '.');
  try {
    const state = meta.state ? { ...meta.state, losses: encodeFloats(decodeFloats(meta.state.losses).slice(0, step)), generators: {}, loader: { step } } : null;
    const exportedFrom = { step, part, dtype, ...(posthocEma ? { posthocEma } : {}) };
    return saveCheckpoint(
      dst,
      {
        step,
        config: placed.config,
        network: meta.network,
        numParameters: meta.numParameters,
        classNames: meta.classNames,
        sampleShape: meta.sampleShape,
        state,
        exportedFrom,
        ...(meta.distillation ? { distillation: meta.distillation } : {}),
        ...(placed.latent ? { latent: placed.latent } : {}),
      },
      { [part]: { tensors: cast, metadata } },
      { fileNames: { [part]: `${part}.safetensors` } },
    );
  } finally {
    dispose(cast);
  }
}

/**
 * A base model's meta with an adapter's student record (LCM-LoRA: the merged network is a consistency
 * student); the meta itself when the adapter carries none. The base must be an undistilled model whose
 * prediction the record's student keeps.
 *
 * @example
 *   const m = withAdapterRecord(loadModel('models/fashion-mnist').meta, adapterRecord(loraMetadata(dir), dir));
 */
export function withAdapterRecord(meta: CheckpointMeta, rec: DistillationRecord | null): CheckpointMeta {
  if (!rec) return meta;
  if (meta.distillation) throw new Error(`loadLora: the adapter is a distilled student's (${rec.method}); load it on an undistilled base model, not on a ${meta.distillation.method} student`);
  const p = prediction(meta.config.objective);
  if (p !== rec.parameterization) throw new Error(`loadLora: the adapter's student reads the network as ${rec.parameterization} prediction; this model's objective is ${meta.config.objective}`);
  return { ...meta, distillation: rec };
}

/** Whether a state dict holds LoRA adapters (a LoRA run's weights: `<path>.lora_A.weight`, ...). */
const hasLoraWeights = (tensors: Record<string, Tensor>) => Object.keys(tensors).some((k) => /\.lora_[AB]\.weight$/.test(k));

/** The network checkpoint.json describes with these weights (`file` names them in errors); a LoRA run's adapters are merged into the base. */
function networkFromWeights(meta: CheckpointMeta, tensors: Record<string, Tensor>, file: string): DenoiserNet {
  const net = buildNetwork(meta.network);
  try {
    const lora = hasLoraWeights(tensors) ? loraOptions(meta.config) : null;
    if (lora) applyLora(net, lora);
    net.loadStateDict(tensors);
    if (lora) removeLora(net, { merge: true });
  } catch (e) {
    net.dispose();
    throw new CheckpointError(file, `does not fit the network checkpoint.json describes: ${(e as Error).message}`);
  }
  return net;
}

/**
 * A checkpoint's network with its EMA weights (or the raw ones: weights 'model'), in eval
 * mode and float32, and its denoiser, ready to sample. Dispose the network when done.
 *
 * A latent diffusion model (meta.latent) loads only with `latent: true`, from a caller that
 * decodes what it samples: `latent` is then its autoencoder's codec (pass latent.decode to
 * generateSamples; dispose it too). Without it, such a model is refused with a clear error, so
 * a command that would treat latents as images never sees one.
 *
 * @example
 *   const { meta, net, denoiser } = loadModel('models/fashion-mnist');
 *   const x = generateSamples(denoiser, meta.config, { shape: meta.sampleShape, n: 16, seed: 0, labels: null });
 *   const m = loadModel('runs/latent', { latent: true });    // a latent model: decode its samples
 *   const y = generateSamples(m.denoiser, m.meta.config, { shape: m.meta.sampleShape, n: 16, seed: 0, labels: null, decode: (z) => m.latent!.decode(z) });
 */
export function loadModel(
  dirOrFile: string,
  { weights, latent: acceptLatent = false }: { weights?: 'ema' | 'model'; latent?: boolean } = {},
): { meta: CheckpointMeta; net: DenoiserNet; denoiser: Denoiser; weights: 'ema' | 'model'; latent: LatentCodec | null } {
  const meta = readCheckpointMeta(dirOrFile);
  if (meta.latent && !acceptLatent)
    throw new CheckpointError(
      checkpointJsonPath(dirOrFile),
      `is a latent diffusion model (autoencoder ${meta.latent.autoencoder}): this command does not decode latents yet (diffuse sample, eval and info do)`,
    );
  let latent: LatentCodec | null = null;
  if (meta.latent) {
    try {
      latent = loadLatentCodec(meta.latent);
    } catch (e) {
      throw new CheckpointError(checkpointJsonPath(dirOrFile), (e as Error).message);
    }
  }
  const part = weights ?? (meta.files.ema ? 'ema' : 'model');
  let net: DenoiserNet;
  try {
    const { tensors } = loadPart(dirOrFile, meta, part);
    try {
      net = networkFromWeights(meta, tensors, path.join(path.dirname(checkpointJsonPath(dirOrFile)), meta.files[part]!.file));
    } finally {
      dispose(tensors);
    }
  } catch (e) {
    latent?.dispose();
    throw e;
  }
  net.eval();
  return { meta, net, denoiser: buildDenoiser(meta.config, net, { consistency: meta.distillation?.consistency }), weights: part, latent };
}
