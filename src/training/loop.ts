/**
 * The one training loop (DESIGN.md, "One training loop, many tasks"). Every training run
 * in Diffuse — a denoiser, a classifier, and later an autoencoder, a super-resolution
 * stage, a student with its discriminator or fake-score network — is this loop with a
 * task plugged into it. The loop owns what they share:
 *
 *   - steps, and per part (a module with its optimizer): the learning-rate schedule,
 *     gradient clipping, an optional EMA of the weights, and its update ratio;
 *   - the NaN/Inf stop (before anything is updated, naming the step), Ctrl-C (finish the
 *     step, write a checkpoint, return 'interrupted'), and the progress bar;
 *   - atomic checkpoints (src/training/checkpoint.ts's commit protocol) holding every
 *     part's weights, optimizer state and EMA, every named generator's state, the loss
 *     history and the time spent, so that a resumed run takes exactly the steps an
 *     uninterrupted one takes: the same losses and weights, bit for bit;
 *   - the loss plot and the task's periodic previews (sample grids).
 *
 * A task subclasses TrainingLoop: it builds its modules, generators and data, then calls
 * `setup()` with its parts and phases. A phase is one loss and the part whose optimizer
 * takes its gradient; a step runs every phase that is due, in order (a GAN: the
 * discriminator's phase, then the generator's; DMD2: several fake-score phases per
 * generator phase). The task names its checkpoint JSON and files, adds its own fields
 * to the JSON, and draws its previews.
 *
 * One phase, in order: tidy { loss = phase.loss(k); check finite; backward } -> clip the
 * part's gradient norm (a non-finite norm also stops) -> lr = schedule(k) -> optimizer
 * step -> zero every part's gradients (a generator's loss also fills the discriminator's)
 * -> EMA update.
 *
 * Data parallel (settings.parallel, src/distributed/): the task computes its loss on this
 * rank's shard of the global batch; the loop checks at the start that every rank has the same
 * parts at the same step and gives them rank 0's weights and EMA, averages the loss (and any
 * rank's stop request) over the ranks before the finite check, and the gradients after
 * backward. Only rank 0 writes checkpoints, previews, the loss plot and log lines; every rank
 * resumes from rank 0's checkpoint, and a run ends when rank 0's last checkpoint is committed.
 *
 * @example
 *   class MyTask extends TrainingLoop {
 *     constructor() {
 *       super({ steps: 100, out: 'runs/my', label: 'my task' });
 *       const net = new nn.Linear(2, 2);
 *       const part = { name: 'model', module: net, optimizer: new Adam(net.namedParameters(), { lr: 1e-3 }), lr: () => 1e-3, files: { weights: 'model', optimizer: 'optimizer' } };
 *       this.setup({ parts: [part], phases: [{ name: 'model', part, loss: (k) => F.mseLoss(net.forward(x), y) }], generators: {} });
 *     }
 *     protected checkpointFormat() { return { json: 'my-checkpoint.json', format: 'my-checkpoint', version: 1, prefix: 'my-', fields: () => ({}) }; }
 *     describe() { return 'my task'; }
 *   }
 *   const r = await new MyTask().run();
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Generator } from '../engine/random';
import { dispose, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { DataParallel } from '../distributed/data-parallel';
import { Module } from '../nn/module';
import { clipGradNorm } from '../optim/clip';
import { EMA } from '../optim/ema';
import { Optimizer } from '../optim/optimizer';
import { LrSchedule } from '../optim/schedule';
import { writeFileAtomic } from '../util/image';
import { lossCurvePNG } from '../util/plot';
import { Progress } from '../util/progress';
import { CheckpointError, commitCheckpoint, decodeFloats, diffuseVersion, encodeFloats, FileRecord, readTensorFile, TensorFile } from './checkpoint';
import { onCtrlC, yieldToEventLoop } from './interrupt';

/** A loss (or gradient norm) that is NaN or infinite: training stopped before the update of `step`. */
export class NonFiniteLossError extends Error {
  override name = 'NonFiniteLossError';
  constructor(
    readonly step: number,
    readonly value: number,
    /** The step of the last checkpoint written (null: none yet), and its folder. */
    readonly lastCheckpoint: number | null,
    readonly out: string | null,
    what = 'the loss',
  ) {
    super(
      `training stopped at step ${step}: ${what} is ${value} (not finite). ` +
        (lastCheckpoint === null
          ? 'No checkpoint had been written yet. '
          : `Nothing was written after step ${lastCheckpoint}: the checkpoint in ${out} (step ${lastCheckpoint}) is the last good one. `) +
        'Lower the learning rate (lr), add gradient clipping (gradClip), or check the data.',
    );
  }
}

/** A trainable part of a task: a module, its optimizer and learning-rate schedule, and what the loop does around its updates. */
export interface TrainPart {
  /** Its name in errors and in the checkpoint ('model', 'discriminator'). */
  name: string;
  module: Module;
  optimizer: Optimizer;
  /** The learning rate at step k (0-based). */
  lr: LrSchedule;
  /** Clip the gradient norm of the part's parameters to this before each update (null: none). */
  gradClip?: number | null;
  /** An EMA of the part's parameters, updated after each of its updates (null: none). */
  ema?: EMA | null;
  /** The checkpoint's file keys for the weights, the optimizer state and the EMA (default: the part's name, `${name}-optimizer`, `${name}-ema`). */
  files?: { weights: string; optimizer: string; ema?: string };
  /** String metadata written into the weights and EMA files (e.g. the network's description). */
  metadata?: Record<string, string>;
  /** Other averages of the part's parameters kept beside it (EDM2's post-hoc EMA), each its own checkpoint file. */
  trackers?: Tracker[];
}

/**
 * Something the loop keeps beside a part: updated after each of the part's updates,
 * told about every step (to write snapshots into the run folder), saved in the
 * checkpoint under its key and restored from it. PhemaTracker is one.
 */
export interface Tracker {
  /** Its checkpoint file key. */
  readonly key: string;
  update(): void;
  /** Its state for the checkpoint; the loop disposes the tensors after writing them. */
  stateDict(): { tensors: Record<string, Tensor>; metadata: Record<string, string> };
  loadStateDict(state: { tensors: Record<string, Tensor>; metadata?: Record<string, string> }): void;
  /** After step `step` (and at the end of the run: final) when the run has a folder. */
  afterStep?(step: number, out: string, final: boolean): void;
  /** After a restore from the checkpoint in `from`, for a run that writes into `out`. */
  resumed?(from: string, out: string | null, step: number): void;
  dispose(): void;
}

/** One loss of a step and the part it trains. */
export interface Phase {
  /** Its name in the loss history (the first phase's losses are the run's `losses`). */
  name: string;
  part: TrainPart;
  /** Run on steps k (0-based) with k % every === 0 (default 1: every step). */
  every?: number;
  /** Updates of the part per due step (default 1; DMD2's fake score takes several per generator update). */
  repeat?: number;
  /** The scalar loss at step k (update i of `repeat`), built inside a tidy scope: intermediates are freed. */
  loss(step: number, i: number): Tensor;
}

/** How a run goes: its length, its folder and what it writes there. */
export interface LoopSettings {
  /** Optimizer steps in total (a resumed run continues to this count). */
  steps: number;
  /** The run's folder (null: no checkpoints or files). */
  out: string | null;
  /** Write a checkpoint every this many steps (0: only at the end and when stopped). */
  checkpointEvery: number;
  /** Write previews (and the loss plot) every this many steps (0: only at the end). */
  previewEvery: number;
  /** The progress bar's label. */
  label: string;
  /** Where the progress bar and log lines go (null: silent). */
  log: NodeJS.WritableStream | null;
  /** On SIGINT (Ctrl-C), run() finishes the step, writes a checkpoint and returns 'interrupted'. */
  handleSigint: boolean;
  /** Write loss.png into `out` with the previews. */
  lossPlot: boolean;
  /** Called after every step (and its checkpoint and previews) with the step count and its loss; requestStop() in it stops there (with `parallel`: after the next step, which all ranks agree on). */
  onStep?: ((step: number, loss: number) => void) | null;
  /** Data-parallel training over a process group (null: one process). The task's losses must be on this rank's shard. */
  parallel?: DataParallel | null;
}

/** What a task's checkpoint is called and holds beyond the loop's own state. */
export interface CheckpointFormat {
  /** The JSON file's name ('checkpoint.json'): the commit. */
  json: string;
  /** Its "format" and "formatVersion" fields. */
  format: string;
  version: number;
  /** Tensor files are `${prefix}${key}-<step>.safetensors`. */
  prefix: string;
  /** The task's own fields of the JSON (config, network, ...). */
  fields(): Record<string, unknown>;
  /** The task's own entries of "state" (e.g. the EMA counters). */
  state?(): Record<string, unknown>;
  /** Tensor files the task writes beside the parts' (read back by other code, not by resume; e.g. the EMA weights a post-hoc EMA run samples with). The loop does not dispose them. */
  files?(): Record<string, { tensors: Record<string, Tensor>; metadata?: Record<string, string> }>;
}

/** The loop's part of a checkpoint JSON, as written and read back. */
export interface LoopCheckpoint {
  format: string;
  formatVersion: number;
  diffuse: string;
  createdAt: string;
  step: number;
  files: Record<string, FileRecord>;
  state: {
    /** The first phase's losses, float32 little-endian, base64. */
    losses: string;
    /** The other phases' losses (absent with one phase). */
    phaseLosses?: Record<string, string>;
    /** Every phase's name, in order: the first names `losses` (absent with one phase, and in checkpoints older than it). */
    phases?: string[];
    /** Generator states, base64 (Generator.state()). */
    generators: Record<string, string>;
    /** The data's position: the batch of step k is a pure function of (seed, k). */
    loader: { step: number };
    trainSeconds: number;
  };
}

export interface LoopResult {
  /** 'done' (reached steps) or 'interrupted' (Ctrl-C or requestStop()). */
  status: 'done' | 'interrupted';
  step: number;
  /** Every step's loss from step 1 (including those before a resume). */
  losses: number[];
}

const pad = (step: number) => String(step).padStart(8, '0');

/**
 * The losses of the progress line: `loss` alone for a one-phase run, else one entry per phase that
 * has a value, keyed by its name (spaces as '-'), in the phases' order.
 *
 * @example
 *   phaseLossInfo(['model'], { model: 0.1 });                                // { loss: 0.1 }
 *   phaseLossInfo(['generator', 'fake score'], { generator: 0.12, 'fake score': 0.45 }); // { generator: 0.12, 'fake-score': 0.45 }
 */
export function phaseLossInfo(phases: readonly string[], values: Readonly<Record<string, number>>): Record<string, number> {
  if (phases.length === 1) return phases[0] in values ? { loss: values[phases[0]] } : {};
  return Object.fromEntries(phases.filter((p) => p in values).map((p) => [p.replace(/\s+/g, '-'), values[p]]));
}

/** The tensor files of older checkpoints of these keys (deleted once a newer checkpoint is committed). */
function staleFiles(prefix: string, keys: string[]): RegExp {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${esc(prefix)}(${keys.map(esc).join('|')})-\\d+\\.safetensors$`);
}

/** The default file keys of a part. */
function fileKeys(part: TrainPart): { weights: string; optimizer: string; ema?: string } {
  return part.files ?? { weights: part.name, optimizer: `${part.name}-optimizer`, ema: part.ema ? `${part.name}-ema` : undefined };
}

/** Every file key of a part: weights, optimizer, EMA and trackers. */
function allKeys(part: TrainPart): string[] {
  return [...Object.values(fileKeys(part)).filter((k): k is string => !!k), ...(part.trackers ?? []).map((t) => t.key)];
}

/** The loop; `M` is the type of the task's checkpoint JSON. */
export abstract class TrainingLoop<M = LoopCheckpoint> {
  /** Optimizer steps taken. */
  step = 0;
  /** The step of the last checkpoint written into `out` or resumed from there (null: none). */
  lastCheckpoint: number | null = null;
  /** Every phase's loss history (index k is step k + 1 for phases run every step). */
  readonly history: Record<string, number[]> = {};
  protected settings: LoopSettings;
  #parts: TrainPart[] = [];
  #phases: Phase[] = [];
  #generators: Record<string, Generator> = {};
  #stop = false;
  /** With `parallel`: a stop every rank agreed on (requestStop() on any rank, seen in the loss all-reduce). */
  #agreedStop = false;
  #trainSeconds = 0;
  /** #trainSeconds when run() began (the time of this session's steps, for the all-reduce share). */
  #sessionStart = 0;

  protected constructor(settings: LoopSettings) {
    this.settings = settings;
  }

  /** Called by the task's constructor once its modules exist. */
  protected setup({ parts, phases, generators }: { parts: TrainPart[]; phases: Phase[]; generators: Record<string, Generator> }): void {
    if (!phases.length) throw new TypeError('TrainingLoop: a task needs at least one phase');
    for (const ph of phases) {
      if (!parts.includes(ph.part)) throw new TypeError(`TrainingLoop: phase ${ph.name} trains a part that is not among the task's parts`);
      for (const [k, v] of [
        ['every', ph.every],
        ['repeat', ph.repeat],
      ] as const)
        if (v !== undefined && !(Number.isSafeInteger(v) && v >= 1)) throw new RangeError(`TrainingLoop: phase ${ph.name}: ${k} must be an integer >= 1, got ${v}`);
      this.history[ph.name] = [];
    }
    const keys = parts.flatMap(allKeys);
    if (new Set(keys).size !== keys.length) throw new TypeError(`TrainingLoop: two parts share a checkpoint file key (${keys.join(', ')})`);
    this.#parts = parts;
    this.#phases = phases;
    this.#generators = generators;
  }

  /** The run's folder (null: none). */
  get out(): string | null {
    return this.settings.out;
  }

  /** The process group's data parallelism (null: one process). */
  get parallel(): DataParallel | null {
    return this.settings.parallel ?? null;
  }

  /** Whether this process writes the run's files and log: always, but for ranks other than 0 of a data-parallel run. */
  get writes(): boolean {
    return this.parallel?.isMain ?? true;
  }

  /** The run's folder when this process writes it (null: none, or a rank other than 0). */
  get #writeOut(): string | null {
    return this.writes ? this.out : null;
  }

  get #log(): NodeJS.WritableStream | null {
    return this.writes ? this.settings.log : null;
  }

  /** The first phase's loss at every step taken (index k is step k + 1). */
  get losses(): number[] {
    return this.history[this.#phases[0].name];
  }

  /** Seconds spent in trainStep() so far (including those before a resume). */
  get seconds(): number {
    return this.#trainSeconds;
  }

  /** The task's parts. */
  get parts(): readonly TrainPart[] {
    return this.#parts;
  }

  /** One line about the run (logged when run() starts). */
  abstract describe(): string;

  /** The task's checkpoint: file names and its own fields. */
  protected abstract checkpointFormat(): CheckpointFormat;

  /** Writes the task's previews for the current step into `out` (sample grids); returns the files written. */
  protected writePreviews(): string[] {
    return [];
  }

  /** One optimizer step of every due phase; returns the first phase's loss. A NaN/Inf loss or gradient norm throws NonFiniteLossError before its part is updated. */
  trainStep(): number {
    const k = this.step;
    const t0 = performance.now();
    let first = NaN;
    for (const ph of this.#phases) {
      if (k % (ph.every ?? 1) !== 0) continue;
      for (let i = 0; i < (ph.repeat ?? 1); i++) {
        const v = this.#update(ph, k, i);
        if (i === 0) this.history[ph.name].push(v);
        if (ph === this.#phases[0] && i === 0) first = v;
      }
    }
    this.step = k + 1;
    this.#trainSeconds += (performance.now() - t0) / 1000;
    return first;
  }

  /** One update of a phase's part (the order is the module comment's). */
  #update(ph: Phase, k: number, i: number): number {
    const { part } = ph;
    const dp = this.parallel;
    const value = tidy(() => {
      const loss = ph.loss(k, i);
      let v = loss.item();
      if (dp) {
        // The global batch's loss, and every rank's stop request: all ranks stop together.
        const agreed = dp.agree(v, this.#stop);
        v = agreed.mean;
        this.#agreedStop ||= agreed.stop;
      }
      if (!Number.isFinite(v)) throw new NonFiniteLossError(k + 1, v, this.lastCheckpoint, this.out, this.#phases.length > 1 ? `the ${ph.name} loss` : 'the loss');
      loss.backward();
      return v;
    });
    dp?.averageGradients(part.optimizer.params);
    if (part.gradClip !== null && part.gradClip !== undefined) {
      const norm = clipGradNorm(part.optimizer.params, part.gradClip);
      if (!Number.isFinite(norm)) {
        this.#zeroGrads();
        throw new NonFiniteLossError(k + 1, norm, this.lastCheckpoint, this.out, this.#phases.length > 1 ? `the ${ph.name} gradient norm` : 'the gradient norm');
      }
    }
    part.optimizer.lr = part.lr(k);
    part.optimizer.step();
    this.#zeroGrads();
    part.ema?.update();
    for (const t of part.trackers ?? []) t.update();
    return value;
  }

  #zeroGrads(): void {
    for (const p of this.#parts) p.optimizer.zeroGrad();
  }

  /** Asks run() / runSync() to stop after the current step (they write a checkpoint and return 'interrupted'). */
  requestStop(): void {
    this.#stop = true;
  }

  /** Whether the loop stops before the next step. */
  get #stopping(): boolean {
    return this.parallel ? this.#agreedStop : this.#stop;
  }

  /** Trains to `steps`, yielding to the event loop between steps (so Ctrl-C and timers reach it), with checkpoints and previews on the way. */
  async run(): Promise<LoopResult> {
    const { handleSigint } = this.settings;
    const log = this.#log;
    const off = handleSigint ? onCtrlC(() => this.requestStop(), { log, message: () => `\nCtrl-C: stopping after step ${this.step}, writing a checkpoint (Ctrl-C again to quit at once)\n` }) : null;
    const bar = this.#begin();
    try {
      while (this.step < this.settings.steps && !this.#stopping) {
        this.#advance(bar);
        await yieldToEventLoop(); // lets a SIGINT handler run
      }
    } finally {
      bar?.done();
      off?.();
    }
    return this.#finish();
  }

  /** run() in one synchronous call: the same steps, checkpoints and previews, but no Ctrl-C (requestStop() from onStep still stops it). */
  runSync(): LoopResult {
    const bar = this.#begin();
    try {
      while (this.step < this.settings.steps && !this.#stopping) this.#advance(bar);
    } finally {
      bar?.done();
    }
    return this.#finish();
  }

  /** Every phase's smoothed loss for the progress line (an EMA of its values, 0.98). */
  readonly #smooth: Record<string, number> = {};

  #begin(): Progress | null {
    const { steps, label } = this.settings;
    const log = this.#log;
    const out = this.#writeOut;
    if (out !== null) fs.mkdirSync(out, { recursive: true });
    this.parallel?.syncStart(this.#syncedTensors(), this.step);
    this.#sessionStart = this.#trainSeconds;
    if (!log) return null;
    log.write(this.describe() + '\n');
    if (this.step >= steps) return null;
    return new Progress(steps - this.step, this.step > 0 ? `${label} (from step ${this.step})` : label, log as NodeJS.WriteStream);
  }

  /** One step, its progress tick, its checkpoint and previews when due, the caller's onStep. */
  #advance(bar: Progress | null): void {
    const before = this.#phases.map((p) => this.history[p.name].length);
    const loss = this.trainStep();
    this.#phases.forEach(({ name }, j) => {
      const h = this.history[name];
      if (h.length === before[j]) return; // not due this step
      const v = h[h.length - 1];
      this.#smooth[name] = name in this.#smooth ? 0.98 * this.#smooth[name] + 0.02 * v : v;
    });
    bar?.tick({
      ...phaseLossInfo(
        this.#phases.map((p) => p.name),
        this.#smooth,
      ),
      lr: this.#parts[0].optimizer.lr,
    });
    const s = this.step;
    const { steps, checkpointEvery, previewEvery } = this.settings;
    const out = this.#writeOut;
    if (out !== null) this.#afterStep(s, out, false);
    if (this.out !== null && s < steps && checkpointEvery > 0 && s % checkpointEvery === 0) this.#checkpointOnce();
    if (out !== null && s < steps) {
      const ckpt = checkpointEvery > 0 && s % checkpointEvery === 0;
      const previews = previewEvery > 0 && s % previewEvery === 0;
      if (previews) this.writePreviews();
      if ((ckpt || previews) && this.settings.lossPlot) this.writeLossPlot();
    }
    this.settings.onStep?.(s, loss);
  }

  #finish(): LoopResult {
    const interrupted = this.step < this.settings.steps;
    const { lossPlot } = this.settings;
    const log = this.#log;
    const out = this.#writeOut;
    if (out !== null) this.#afterStep(this.step, out, true);
    if (this.out !== null && this.lastCheckpoint !== this.step) this.#checkpointOnce(); // (a run resumed at its last step has nothing new to save)
    this.parallel?.barrier(); // every rank returns once rank 0's checkpoint is committed
    if (out !== null) {
      const files = [this.checkpointFormat().json];
      if (lossPlot) files.push(path.basename(this.writeLossPlot()));
      if (!interrupted) files.push(...this.writePreviews().map((f) => path.basename(f)));
      log?.write(`${interrupted ? 'interrupted' : 'done'} at step ${this.step}: ${files.join(', ')} in ${out}\n`);
    }
    const comm = this.parallel?.comm;
    if (log && comm && comm.calls > 0) {
      const share = (100 * comm.seconds) / (this.#trainSeconds - this.#sessionStart);
      log.write(
        `data parallel over ${this.parallel.worldSize} ranks: the gradient all-reduce took ${((1000 * comm.seconds) / comm.calls).toFixed(1)} ms per update (${comm.buckets} bucket${comm.buckets === 1 ? '' : 's'}, waiting for the slowest rank included), ${share.toFixed(1)}% of the training time\n`,
      );
    }
    return { status: interrupted ? 'interrupted' : 'done', step: this.step, losses: this.losses.slice() };
  }

  /** The checkpoint of this step: written by rank 0 alone in a data-parallel run (the others only note it). */
  #checkpointOnce(): void {
    if (this.writes) this.checkpoint();
    else this.lastCheckpoint = this.step;
  }

  /** What syncStart checks and broadcasts: every part's weights and buffers, and its EMA averages. */
  #syncedTensors(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const p of this.#parts) {
      for (const [n, t] of Object.entries(p.module.stateDict())) out[`${p.name}.${n}`] = t;
      p.ema?.averages.forEach((t, i) => (out[`${p.name}.ema.${p.ema!.names[i]}`] = t));
    }
    return out;
  }

  #afterStep(step: number, out: string, final: boolean): void {
    for (const p of this.#parts) for (const t of p.trackers ?? []) t.afterStep?.(step, out, final);
  }

  /** Writes loss.png (the first phase's loss curve so far) into `out`. */
  writeLossPlot(): string {
    const file = path.join(this.#requireOut('writeLossPlot'), 'loss.png');
    writeFileAtomic(file, lossCurvePNG(this.losses, { title: `${this.#phases[0].name} loss, step ${this.step}` }));
    return file;
  }

  #requireOut(what: string): string {
    if (this.out === null) throw new TypeError(`${what}: this run has no out folder`);
    return this.out;
  }

  /** Writes the checkpoint of the current step into `out` (the commit protocol of src/training/checkpoint.ts); returns its JSON. */
  checkpoint(): M {
    const out = this.#requireOut('checkpoint');
    const fmt = this.checkpointFormat();
    const owned: Record<string, Tensor>[] = [];
    try {
      const files: Record<string, TensorFile> = {};
      const add = (key: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>) => (files[key] = { file: `${fmt.prefix}${key}-${pad(this.step)}.safetensors`, tensors, metadata });
      for (const part of this.#parts) {
        const keys = fileKeys(part);
        add(keys.weights, part.module.stateDict(), part.metadata);
        if (part.ema && keys.ema) {
          const s = part.ema.stateDict();
          owned.push(s.tensors);
          add(keys.ema, emaStateDict(part), { ...part.metadata, ...s.metadata });
        }
        const opt = part.optimizer.stateDict();
        owned.push(opt.tensors);
        add(keys.optimizer, opt.tensors, opt.metadata);
        for (const t of part.trackers ?? []) {
          const st = t.stateDict();
          owned.push(st.tensors);
          add(t.key, st.tensors, st.metadata);
        }
      }
      for (const [key, f] of Object.entries(fmt.files?.() ?? {})) add(key, f.tensors, f.metadata);
      const [main, ...rest] = this.#phases;
      const meta = commitCheckpoint(
        out,
        fmt.json,
        files,
        (records) => ({
          format: fmt.format,
          formatVersion: fmt.version,
          diffuse: diffuseVersion(),
          createdAt: new Date().toISOString(),
          step: this.step,
          ...fmt.fields(),
          files: records as Record<string, FileRecord>,
          state: {
            losses: encodeFloats(this.history[main.name]),
            ...(rest.length ? { phaseLosses: Object.fromEntries(rest.map((p) => [p.name, encodeFloats(this.history[p.name])])), phases: this.#phases.map((p) => p.name) } : {}),
            generators: Object.fromEntries(Object.entries(this.#generators).map(([n, g]) => [n, Buffer.from(g.state()).toString('base64')])),
            loader: { step: this.step },
            ...fmt.state?.(),
            trainSeconds: this.#trainSeconds,
          },
        }),
        staleFiles(fmt.prefix, Object.keys(files)),
      );
      this.lastCheckpoint = this.step;
      return meta as M;
    } finally {
      for (const t of owned) dispose(t);
    }
  }

  /**
   * Restores every part, EMA, generator and the loss history from a checkpoint JSON that
   * the task has read and checked (`meta`, from the file `jsonFile`); checks all of it
   * before changing anything. `lastCheckpoint` is set when the run writes into that folder.
   */
  protected restore(jsonFile: string, meta: LoopCheckpoint): void {
    const bad = (what: string) => new CheckpointError(jsonFile, what);
    const st = meta.state;
    const [main, ...rest] = this.#phases;
    const histories: Record<string, number[]> = {};
    try {
      histories[main.name] = decodeFloats(st.losses);
      for (const p of rest) histories[p.name] = decodeFloats(st.phaseLosses?.[p.name] ?? '');
    } catch (e) {
      throw bad(`"state.losses" is corrupt: ${(e as Error).message}`);
    }
    if (histories[main.name].length !== meta.step) throw bad(`has ${histories[main.name].length} losses for ${meta.step} steps`);
    for (const name of Object.keys(this.#generators)) if (typeof st.generators?.[name] !== 'string') throw bad(`has no state for the ${name} generator`);
    const loaded: Record<string, Required<Pick<TensorFile, 'tensors' | 'metadata'>>> = {};
    try {
      for (const part of this.#parts)
        for (const key of allKeys(part)) {
          const rec = meta.files[key];
          if (!rec) throw bad(`has no ${key} file`);
          loaded[key] = readTensorFile(jsonFile, rec, key);
        }
      // Everything read: now restore.
      for (const part of this.#parts) {
        const keys = fileKeys(part);
        try {
          part.module.loadStateDict(loaded[keys.weights].tensors);
          part.optimizer.loadStateDict(loaded[keys.optimizer]);
          if (part.ema && keys.ema) {
            const { tensors, metadata } = loaded[keys.ema];
            const names = part.ema.names;
            part.ema.loadStateDict({ tensors: Object.fromEntries(names.map((n) => [`ema.${n}`, tensors[n]])), metadata });
          }
          for (const t of part.trackers ?? []) t.loadStateDict(loaded[t.key]);
        } catch (e) {
          throw bad(`its ${part.name} weights or optimizer state do not fit the ${part.name} this run builds: ${(e as Error).message}`);
        }
      }
    } finally {
      for (const f of Object.values(loaded)) dispose(f.tensors);
    }
    for (const [name, g] of Object.entries(this.#generators)) g.setState(new Uint8Array(Buffer.from(st.generators[name], 'base64')));
    for (const [name, h] of Object.entries(histories)) this.history[name].splice(0, Infinity, ...h);
    this.step = meta.step;
    this.#trainSeconds = st.trainSeconds;
    if (this.out !== null && path.resolve(this.out) === path.resolve(path.dirname(jsonFile))) this.lastCheckpoint = meta.step;
    for (const p of this.#parts) for (const t of p.trackers ?? []) t.resumed?.(path.dirname(jsonFile), this.#writeOut, meta.step);
  }

  /** Frees every part's module, optimizer and EMA. */
  protected disposeParts({ keep = [] }: { keep?: readonly Module[] } = {}): void {
    for (const p of this.#parts) {
      if (!keep.includes(p.module)) p.module.dispose();
      p.optimizer.dispose();
      p.ema?.dispose();
      for (const t of p.trackers ?? []) t.dispose();
    }
  }
}

/**
 * A part's EMA as a state dict of its module: the module's buffers, the parameters the EMA
 * does not average as they are (a LoRA run's frozen base), and the averages under the
 * parameters' names (new handles, no copies).
 */
export function emaStateDict(part: TrainPart): Record<string, Tensor> {
  const ema = part.ema!;
  const avg = ema.averages;
  const averaged = new Set(ema.names);
  const fixed = part.module.namedParameters().filter(([n]) => !averaged.has(n));
  return Object.fromEntries([...part.module.namedBuffers(), ...fixed, ...ema.names.map((n, i) => [n, avg[i]] as [string, Tensor])]);
}
