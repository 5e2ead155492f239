/**
 * Post-hoc EMA in a training run (EDM2, Karras et al. 2024, Sec. 3 and Appendix C): the
 * run tracks power-function EMAs (src/optim/phema.ts) and writes snapshots of them into
 * its folder; afterwards reconstructRunEma turns the snapshots into the EMA of any
 * sigma_rel, as checkpoints that `diffuse sample` and `diffuse eval` load.
 *
 * Time is counted in optimizer steps (t = step). EDM2 counts training images; with a fixed
 * batch size the betas and the reconstruction coefficients are the same either way, since
 * both depend only on ratios of times.
 *
 * Snapshots are `phema/phema-<step, 8 digits>-<sigma_rel>.safetensors` in the run folder,
 * one per tracked sigma_rel, float32 (not float16 as an export: the reconstruction is a
 * signed combination whose coefficients can exceed 1 in magnitude, so rounding errors of
 * the snapshots add up; a small model's snapshots are ~1 MB each), each written atomically
 * with metadata `phema.t`, `phema.sigmaRel` and `phema.step`. Their names depend only on
 * the step, so a resumed run rewrites the same files with the same bytes, never a duplicate.
 *
 * @example
 *   const tracker = new PhemaTracker(net.namedParameters(), { stds: [0.05, 0.1], snapshotEvery: 100 });
 *   // each step: opt.step(); tracker.update(); tracker.maybeSnapshot(step, 'runs/x');
 *   reconstructRunEma('runs/x', { stds: [0.07, 0.15] }); // runs/x/posthoc/ema-0.07-00001200/, ...
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../engine/safetensors';
import { dispose } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { DType } from '../engine/dtype';
import { Params } from '../optim/params';
import { MAX_SIGMA_REL, phemaSnapshotFromState, PhemaSnapshot, phemaSnapshotState, PowerFunctionEMA, reconstructPhema } from '../optim/phema';
import { CheckpointError, CheckpointMeta, loadPart, PartState, readCheckpointMeta, saveSamplingCheckpoint } from './checkpoint';

/** The run folder's subfolder of snapshots. */
export const PHEMA_DIR = 'phema';

const SNAPSHOT_RE = /^phema-(\d{8})-(.+)\.safetensors$/;

/** The file name of the snapshot of sigma_rel `std` at `step`. */
export function phemaSnapshotName(step: number, std: number): string {
  return `phema-${String(step).padStart(8, '0')}-${std}.safetensors`;
}

/** The snapshot files in `runDir/phema` (by name only: step and path), in step order. */
export function listSnapshotFiles(runDir: string): { file: string; step: number }[] {
  const dir = path.join(runDir, PHEMA_DIR);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((name) => ({ name, m: SNAPSHOT_RE.exec(name) }))
    .filter((e) => e.m !== null)
    .map((e) => ({ file: path.join(dir, e.name), step: Number(e.m![1]) }))
    .sort((a, b) => a.step - b.step || a.file.localeCompare(b.file));
}

/** A snapshot on disk: its file and step, and the PhemaSnapshot (loaded lazily). */
export interface SnapshotFile extends PhemaSnapshot {
  file: string;
  step: number;
}

/**
 * The snapshots of a run (reading only their headers: t and sigma_rel come from the
 * metadata); each one's `tensors` loads its file when called.
 */
export function listPhemaSnapshots(runDir: string): SnapshotFile[] {
  return listSnapshotFiles(runDir).map(({ file, step }) => {
    const { metadata } = readSafetensorsHeader(file);
    let s: PhemaSnapshot;
    try {
      s = phemaSnapshotFromState({ tensors: {}, metadata });
    } catch (e) {
      throw new CheckpointError(file, `is not a post-hoc EMA snapshot: ${(e as Error).message}`);
    }
    return { file, step, t: s.t, sigmaRel: s.sigmaRel, tensors: () => loadSafetensors(file).tensors };
  });
}

/** What PhemaTracker needs: the sigma_rels and the steps between snapshots (TrainConfig's phemaStds, phemaSnapshotEvery). */
export interface PhemaTrackerOptions {
  stds: readonly number[];
  snapshotEvery: number;
}

/**
 * The power-function EMAs of a training run and their snapshots: one small object the
 * training loop calls in a few places (update, maybeSnapshot, the checkpoint's state,
 * resume). The first average is the run's EMA (sample grids, the checkpoint's ema file).
 *
 * @example
 *   const tracker = new PhemaTracker(params, { stds: [0.05, 0.1], snapshotEvery: 100 });
 *   tracker.update();                              // after each optimizer step
 *   tracker.maybeSnapshot(step, out);              // writes at multiples of snapshotEvery
 *   saveCheckpoint(out, meta, { ..., phema: tracker.stateDict() });
 */
export class PhemaTracker {
  readonly stds: readonly number[];
  readonly snapshotEvery: number;
  readonly #ema: PowerFunctionEMA;
  /** The step of the last snapshot written by this object (so the end of a run does not write twice). */
  #lastSnapshot = -1;

  constructor(params: Params, { stds, snapshotEvery }: PhemaTrackerOptions) {
    if (!(Number.isSafeInteger(snapshotEvery) && snapshotEvery >= 1)) throw new RangeError(`PhemaTracker: snapshotEvery must be an integer >= 1, got ${snapshotEvery}`);
    this.#ema = new PowerFunctionEMA(params, { sigmaRels: stds });
    this.stds = this.#ema.sigmaRels;
    this.snapshotEvery = snapshotEvery;
  }

  /** Steps folded in so far (t of the averages). */
  get step(): number {
    return this.#ema.t;
  }

  /** Folds the parameters of the step just taken into every average. */
  update(): void {
    this.#ema.update(1);
  }

  /** The first average (the run's EMA), in parameter order (owned: do not dispose). */
  get averages(): readonly Tensor[] {
    return this.#ema.averages(0);
  }

  /** Copies the first average into `params`. */
  copyTo(params: Params): void {
    this.#ema.copyTo(0, params);
  }

  /**
   * Writes the snapshots of `step` into `outDir/phema` when step is a multiple of
   * snapshotEvery, or when `final` (the end of a run) and this step has none yet.
   * Returns the files written.
   */
  maybeSnapshot(step: number, outDir: string, { final = false }: { final?: boolean } = {}): string[] {
    if (step !== this.#ema.t) throw new Error(`PhemaTracker.maybeSnapshot: step ${step} is not the tracked step ${this.#ema.t}`);
    if (step === 0 || step === this.#lastSnapshot || !(final || step % this.snapshotEvery === 0)) return [];
    const dir = path.join(outDir, PHEMA_DIR);
    fs.mkdirSync(dir, { recursive: true });
    const files = this.stds.map((sigmaRel, k) => {
      const avg = this.#ema.averages(k);
      const tensors = Object.fromEntries(this.#ema.names.map((n, i) => [n, avg[i]]));
      const { metadata } = phemaSnapshotState({ t: step, sigmaRel, tensors });
      const file = path.join(dir, phemaSnapshotName(step, sigmaRel));
      saveSafetensors(file, tensors, { ...metadata, 'phema.step': String(step) }); // atomic
      return file;
    });
    this.#lastSnapshot = step;
    return files;
  }

  /** The state for a checkpoint (the averages as new handles, no copies: dispose them after saving; t and the sigma_rels). */
  stateDict(): Required<PartState> {
    return this.#ema.stateDict();
  }

  loadStateDict(state: PartState): void {
    this.#ema.loadStateDict({ tensors: state.tensors, metadata: state.metadata ?? {} });
  }

  /**
   * On resume from the checkpoint of `step` in `fromDir` into `toDir`: the snapshots after
   * `step` (written before a crash) are deleted, since the resumed run writes them again
   * (the same bytes, unless a resumable option such as steps changed the schedule); when
   * toDir is another folder, the snapshots up to `step` are copied there, so it holds the
   * whole history.
   */
  resumeSnapshots(fromDir: string, toDir: string, step: number): void {
    if (path.resolve(fromDir) !== path.resolve(toDir)) {
      const dir = path.join(toDir, PHEMA_DIR);
      for (const { file, step: s } of listSnapshotFiles(fromDir)) {
        if (s > step) continue;
        fs.mkdirSync(dir, { recursive: true });
        const dst = path.join(dir, path.basename(file));
        const tmp = `${dst}.tmp-${process.pid}`;
        fs.copyFileSync(file, tmp);
        fs.renameSync(tmp, dst);
      }
    }
    for (const { file, step: s } of listSnapshotFiles(toDir)) if (s > step) fs.rmSync(file, { force: true });
  }

  dispose(): void {
    this.#ema.dispose();
  }
}

/** Options of reconstructRunEma. */
export interface ReconstructOptions {
  /** The sigma_rels wanted, each in (0, 1/sqrt(12)). */
  stds: readonly number[];
  /** Reconstruct at this snapshot step (default: the latest snapshot at or before the run's checkpoint). */
  step?: number;
  /** The folder that receives one checkpoint folder per std (default RUN/posthoc). */
  out?: string;
  /** The weights' dtype (default float32). */
  dtype?: DType;
  /** Called as each snapshot file is loaded, with the number of loads in all (stds x snapshots): a progress bar. */
  onSnapshot?: (total: number) => void;
}

/** One reconstructed checkpoint. */
export interface Reconstructed {
  std: number;
  step: number;
  dir: string;
  /** Snapshots combined, and the largest |coefficient| (large values mean an extrapolation). */
  snapshots: number;
  maxAbsCoefficient: number;
}

/** The folder name of the reconstruction of `std` at `step`. */
export function posthocName(std: number, step: number): string {
  return `ema-${std}-${String(step).padStart(8, '0')}`;
}

/**
 * Post-hoc EMA of a run (EDM2 Algorithm 3, per std): from the run's snapshots up to
 * `step`, the power-function EMA of each sigma_rel in `stds`, written as a sampling-only
 * checkpoint folder (checkpoint.json + ema.safetensors, as `diffuse export` writes:
 * the run's EMA state dict with its parameters replaced) under `out`.
 *
 * @example
 *   const [r] = reconstructRunEma('runs/x', { stds: [0.1] });
 *   const { denoiser } = loadModel(r.dir);
 */
export function reconstructRunEma(run: string, { stds, step, out, dtype = 'float32', onSnapshot }: ReconstructOptions): Reconstructed[] {
  const who = 'reconstructRunEma';
  if (!Array.isArray(stds satisfies unknown) || stds.length === 0) throw new RangeError(`${who}: stds must be a non-empty list`);
  for (const std of stds)
    if (!(typeof std === 'number' && std > 0 && std < MAX_SIGMA_REL))
      throw new RangeError(`${who}: std ${std} is out of range: a sigma_rel must be in (0, ${MAX_SIGMA_REL.toFixed(4)}) (1/sqrt(12), a uniform average)`);
  const meta: CheckpointMeta = readCheckpointMeta(run);
  const all = listPhemaSnapshots(run);
  if (all.length === 0) throw new CheckpointError(path.join(run, PHEMA_DIR), `the run has no post-hoc EMA snapshots (phema/phema-<step>-<std>.safetensors); train it with --ema phema`);
  // The run's state is its checkpoint: snapshots after it (left by a crash) are not used.
  const steps: number[] = [...new Set(all.map((s) => s.step))].filter((s) => s <= meta.step);
  if (steps.length === 0) throw new CheckpointError(path.join(run, PHEMA_DIR), `has no snapshot at or before the checkpoint's step ${meta.step}`);
  const at: number = step ?? Math.max(...steps);
  if (!steps.includes(at)) throw new RangeError(`${who}: step ${at} has no snapshot; the snapshot steps are ${steps.join(', ')}`);
  for (const s of all) if (s.t !== s.step) throw new CheckpointError(s.file, `records t = ${s.t}, but its name says step ${s.step} (t counts steps)`);
  const upTo = all.filter((s) => s.step <= at);
  const used: SnapshotFile[] = upTo.map((s) => ({
    ...s,
    tensors: () => {
      onSnapshot?.(stds.length * upTo.length);
      return (s.tensors as () => Record<string, Tensor>)();
    },
  }));
  const dest = out ?? path.join(run, 'posthoc');
  const base = loadPart(run, meta, meta.files.ema ? 'ema' : 'model');
  try {
    return stds.map((std) => {
      const rec = reconstructPhema(used, { sigmaRel: std, t: at });
      try {
        for (const n of Object.keys(rec.tensors)) if (!(n in base.tensors)) throw new CheckpointError(used[0].file, `holds ${n}, which the run's network does not have`);
        const dir = path.join(dest, posthocName(std, at));
        saveSamplingCheckpoint(dir, meta, {
          part: 'ema',
          tensors: { ...base.tensors, ...rec.tensors },
          metadata: { network: JSON.stringify(meta.network), 'phema.sigmaRel': String(std), 'phema.step': String(at) },
          dtype,
          step: at,
          posthocEma: { sigmaRel: std, snapshots: rec.used.length },
        });
        return { std, step: at, dir, snapshots: rec.used.length, maxAbsCoefficient: Math.max(...rec.coefficients.map(Math.abs)) };
      } finally {
        dispose(rec.tensors);
      }
    });
  } finally {
    dispose(base.tensors);
  }
}
