/**
 * The training loop: a TrainConfig in, a run folder out (checkpoint, sample grids,
 * loss curve). Each step is one tidy() scope: a batch (a pure function of the step),
 * label dropout, the objective's loss, backward, gradient clipping, an optimizer step
 * with the scheduled learning rate, and an EMA update.
 *
 * Every random number comes from Generators whose states the checkpoint stores, and
 * the batch of step k depends only on (seed, k), so a run resumed from a checkpoint
 * takes exactly the steps an uninterrupted run would have taken: the same losses, bit
 * for bit (test/trainer.test.ts).
 *
 * A loss that is NaN or infinite stops training before the update, with an error that
 * names the step; nothing is written after it, so the last checkpoint stays the last
 * good one. With `handleSigint`, Ctrl-C finishes the current step, writes a checkpoint
 * and returns status 'interrupted' (a second Ctrl-C quits at once).
 *
 * @example
 *   const trainer = Trainer.create(resolveTrainConfig({ steps: 1000, out: 'runs/x' }));
 *   const result = await trainer.run();    // writes runs/x/checkpoint.json, samples-*.png, loss.png
 *   trainer.dispose();
 *   const resumed = Trainer.create({ ...config, steps: 2000 }, { resume: 'runs/x' });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Generator } from '../engine/random';
import { setNumThreads } from '../engine/runtime';
import { dispose, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { Adam, AdamW } from '../optim/adam';
import { clipGradNorm } from '../optim/clip';
import { EMA } from '../optim/ema';
import { cosineSchedule, linearWarmupSchedule, LrSchedule } from '../optim/schedule';
import { imageGrid, writeFileAtomic, writePNG } from '../util/image';
import { lossCurvePNG, scatterImage } from '../util/plot';
import { encodePNG } from '../data/image-codec';
import { Progress } from '../util/progress';
import { buildDenoiser, buildLoss, buildNetwork, deriveSeed, DenoiserNet, generateSamples, loadTrainData, materializeConfig, networkSpec, NetworkSpec, SEED_STREAMS, TrainData } from './build';
import { CheckpointMeta, decodeFloats, encodeFloats, loadCheckpoint, readCheckpointMeta, saveCheckpoint } from './checkpoint';
import { ConfigError, configDiff, RESUMABLE_KEYS, TrainConfig } from './config';
import { yieldToEventLoop, onCtrlC } from './interrupt';
import { LossResult } from './losses';
import { PhemaTracker } from './phema';

/** A loss that is NaN or infinite: training stopped before the update of `step`. */
export class NonFiniteLossError extends Error {
  override name = 'NonFiniteLossError';
  constructor(
    readonly step: number,
    readonly value: number,
    /** The step of the last checkpoint written (null: none yet), and its folder. */
    readonly lastCheckpoint: number | null,
    readonly out: string,
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

export interface TrainerOptions {
  /** Resume from this checkpoint folder: the config must match the checkpoint's except for the resumable keys (steps, out, sampling and checkpoint intervals, threads). */
  resume?: string | null;
  /** Where the progress bar and log lines go (default process.stderr; null: silent). */
  log?: NodeJS.WriteStream | null;
  /** On SIGINT (Ctrl-C), finish the step, write a checkpoint and stop (default false; the CLI turns it on). */
  handleSigint?: boolean;
}

export interface TrainResult {
  /** 'done' (reached config.steps) or 'interrupted' (Ctrl-C or requestStop()). */
  status: 'done' | 'interrupted';
  step: number;
  /** Every step's loss from step 1 (including those before a resume). */
  losses: number[];
  out: string;
}

const pad = (step: number) => String(step).padStart(6, '0');

export class Trainer {
  readonly config: TrainConfig;
  readonly data: TrainData;
  readonly spec: NetworkSpec;
  readonly net: DenoiserNet;
  readonly optimizer: Adam;
  readonly ema: EMA;
  /** With ema 'phema': the power-function EMAs, whose first average replaces `ema` (which is then not updated). */
  readonly phema: PhemaTracker | null;
  /** The loss of every step taken (index k is step k + 1). */
  readonly losses: number[] = [];
  /** Optimizer steps taken. */
  step = 0;
  /** The step of the last checkpoint written or loaded (null: none). */
  lastCheckpoint: number | null = null;
  readonly #gen: Generator;
  readonly #dropoutGen: Generator;
  readonly #denoiser: Denoiser;
  readonly #loss: (x0: Tensor, g: Generator, cond?: Conditioning) => LossResult;
  readonly #lr: LrSchedule;
  readonly #nullClass: number | null;
  readonly #log: NodeJS.WriteStream | null;
  readonly #handleSigint: boolean;
  #evalNet: DenoiserNet | null = null;
  #stop = false;
  #trainSeconds = 0;

  private constructor(config: TrainConfig, data: TrainData, opts: TrainerOptions) {
    this.data = data;
    this.config = materializeConfig(config, data);
    this.spec = networkSpec(this.config, data);
    const c = this.config;
    if (c.threads !== null) setNumThreads(c.threads);
    this.#gen = new Generator(deriveSeed(c.seed, SEED_STREAMS.train));
    this.#dropoutGen = new Generator(deriveSeed(c.seed, SEED_STREAMS.dropout));
    this.net = buildNetwork(this.spec, { generator: new Generator(deriveSeed(c.seed, SEED_STREAMS.init)), dropoutGenerator: this.#dropoutGen }).train();
    this.#nullClass = this.net.nullClass;
    this.#denoiser = buildDenoiser(c, this.net);
    this.#loss = buildLoss(c, this.#denoiser);
    const params = this.net.namedParameters();
    this.optimizer = c.optimizer === 'adamw' ? new AdamW(params, { lr: c.lr, weightDecay: c.weightDecay }) : new Adam(params, { lr: c.lr, weightDecay: c.weightDecay });
    this.ema = new EMA(params, c.emaDecay !== null ? { decay: c.emaDecay } : { halfLifeImages: c.emaHalfLifeImages!, batchSize: c.batchSize, rampupRatio: c.emaRampupRatio });
    this.phema = c.ema === 'phema' ? new PhemaTracker(params, { stds: c.phemaStds, snapshotEvery: c.phemaSnapshotEvery }) : null;
    this.#lr = c.lrSchedule === 'cosine' && c.warmupSteps < c.steps ? cosineSchedule({ lr: c.lr, totalSteps: c.steps, warmupSteps: c.warmupSteps }) : linearWarmupSchedule({ lr: c.lr, warmupSteps: c.warmupSteps });
    this.#log = opts.log === undefined ? process.stderr : opts.log;
    this.#handleSigint = opts.handleSigint ?? false;
  }

  /** Loads the data and builds the run (restoring every state from `resume` when given). */
  static create(config: TrainConfig, opts: TrainerOptions = {}): Trainer {
    const data = loadTrainData(config);
    let t: Trainer;
    try {
      t = new Trainer(config, data, opts);
    } catch (e) {
      data.dispose();
      throw e;
    }
    if (opts.resume) {
      try {
        t.#restore(opts.resume);
      } catch (e) {
        t.dispose();
        throw e;
      }
    }
    return t;
  }

  get out(): string {
    return this.config.out;
  }

  /** One optimizer step; returns its loss. Throws NonFiniteLossError (before updating anything) on a NaN/Inf loss. */
  trainStep(): number {
    const k = this.step;
    const { labelDropout, gradClip } = this.config;
    const t0 = performance.now();
    const value = tidy(() => {
      const { x, labels } = this.data.batchAt(k);
      let cond: Conditioning | undefined;
      if (this.#nullClass !== null) {
        // Classifier-free guidance training: each label becomes the null class with probability labelDropout.
        const drop = this.#gen.rand([x.dim(0)]).lt(labelDropout); // [B]
        cond = { classLabels: labels!.maskedFill(drop, this.#nullClass) };
      }
      const { loss } = this.#loss(x, this.#gen, cond);
      const v = loss.item();
      if (!Number.isFinite(v)) throw new NonFiniteLossError(k + 1, v, this.lastCheckpoint, this.out);
      loss.backward();
      return v;
    });
    if (gradClip !== null) {
      const norm = clipGradNorm(this.optimizer.params, gradClip);
      if (!Number.isFinite(norm)) {
        this.optimizer.zeroGrad();
        throw new NonFiniteLossError(k + 1, norm, this.lastCheckpoint, this.out, 'the gradient norm');
      }
    }
    this.optimizer.lr = this.#lr(k);
    this.optimizer.step();
    this.optimizer.zeroGrad();
    (this.phema ?? this.ema).update();
    this.losses.push(value);
    this.step = k + 1;
    this.#trainSeconds += (performance.now() - t0) / 1000;
    return value;
  }

  /** Asks run() to stop after the current step (it writes a checkpoint and returns 'interrupted'). */
  requestStop(): void {
    this.#stop = true;
  }

  /** Trains to config.steps, writing checkpoints, sample grids and the loss curve on the way. */
  async run(): Promise<TrainResult> {
    const c = this.config;
    fs.mkdirSync(this.out, { recursive: true });
    const start = this.step;
    const log = this.#log;
    const offCtrlC = this.#handleSigint
      ? onCtrlC(() => this.requestStop(), { log, message: () => `\nCtrl-C: stopping after step ${this.step}, writing a checkpoint (Ctrl-C again to quit at once)\n` })
      : null;
    const bar = log && start < c.steps ? new Progress(c.steps - start, start > 0 ? `train (from step ${start})` : 'train', log) : null;
    if (log) log.write(this.describe() + '\n');
    let smooth = NaN;
    let interrupted = false;
    try {
      while (this.step < c.steps) {
        if (this.#stop) {
          interrupted = true;
          break;
        }
        const loss = this.trainStep();
        smooth = Number.isNaN(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
        bar?.tick({ loss: smooth, lr: this.optimizer.lr });
        const s = this.step;
        this.phema?.maybeSnapshot(s, this.out);
        if (s < c.steps) {
          const ckpt = c.checkpointEvery > 0 && s % c.checkpointEvery === 0;
          const samples = c.sampleEvery > 0 && s % c.sampleEvery === 0;
          if (ckpt) this.checkpoint();
          if (samples) this.writeSamples();
          if (ckpt || samples) this.writeLossPlot();
        }
        await yieldToEventLoop(); // lets a SIGINT handler run
      }
      if (this.#stop) interrupted = true;
    } finally {
      bar?.done();
      offCtrlC?.();
    }
    this.phema?.maybeSnapshot(this.step, this.out, { final: true });
    if (this.lastCheckpoint !== this.step) this.checkpoint(); // (a run resumed at its last step has nothing new to save)
    this.writeLossPlot();
    const files = ['checkpoint.json', 'loss.png'];
    if (!interrupted) files.push(path.basename(this.writeSamples()));
    log?.write(`${interrupted ? 'interrupted' : 'done'} at step ${this.step}: ${files.join(', ')} in ${this.out}\n`);
    return { status: interrupted ? 'interrupted' : 'done', step: this.step, losses: this.losses.slice(), out: this.out };
  }

  /** One line about the run. */
  describe(): string {
    const c = this.config;
    const cond = this.#nullClass !== null ? `class-conditional (${this.#nullClass} classes, label dropout ${c.labelDropout})` : 'unconditional';
    const size = this.data.size === null ? 'endless' : `${this.data.size} samples`;
    return `${c.objective} on ${c.data} (${size}, ${cond}); ${this.spec.type} with ${this.net.numParameters().toLocaleString('en-US')} parameters; batch ${c.batchSize}, ${c.steps} steps, lr ${c.lr}; out ${this.out}`;
  }

  /** The EMA weights as a state dict of the network (new handles on the averages: no copies). */
  emaStateDict(): Record<string, Tensor> {
    const avg = (this.phema ?? this.ema).averages;
    return Object.fromEntries([...this.net.namedBuffers(), ...this.ema.names.map((n, i) => [n, avg[i]] as [string, Tensor])]);
  }

  /** Writes the checkpoint for the current step into the run folder. */
  checkpoint(): CheckpointMeta {
    const opt = this.optimizer.stateDict();
    const phema = this.phema?.stateDict();
    try {
      const ema = this.ema.stateDict();
      const emaMeta = ema.metadata;
      dispose(ema.tensors);
      const generators: Record<string, string> = { train: Buffer.from(this.#gen.state()).toString('base64'), dropout: Buffer.from(this.#dropoutGen.state()).toString('base64') };
      const meta = saveCheckpoint(
        this.out,
        {
          step: this.step,
          config: this.config,
          network: this.spec,
          numParameters: this.net.numParameters(),
          classNames: this.#nullClass !== null ? this.data.classNames : null,
          sampleShape: this.data.shape,
          state: { losses: encodeFloats(this.losses), generators, loader: { step: this.step }, ema: { nimg: this.ema.nimg, updates: this.ema.updates }, trainSeconds: this.#trainSeconds },
        },
        {
          model: { tensors: this.net.stateDict(), metadata: { network: JSON.stringify(this.spec) } },
          ema: { tensors: this.emaStateDict(), metadata: { network: JSON.stringify(this.spec), ...emaMeta } },
          optimizer: opt,
          phema,
        },
      );
      this.lastCheckpoint = this.step;
      return meta;
    } finally {
      dispose([opt.tensors, phema?.tensors ?? {}]);
    }
  }

  /** The network with the EMA weights, in eval mode (owned by the trainer). */
  emaNetwork(): DenoiserNet {
    if (!this.#evalNet) this.#evalNet = buildNetwork(this.spec).eval();
    const ev = this.#evalNet;
    noGrad(() => {
      for (const [n, b] of ev.namedBuffers()) b.copy_(this.net.namedBuffers().find(([m]) => m === n)![1]);
    });
    (this.phema ?? this.ema).copyTo(ev.parameters());
    return ev;
  }

  /** Samples with the EMA weights (DDPM sampler, config.sampleSteps) into samples-<step>.png; returns the path. */
  writeSamples(): string {
    const c = this.config;
    const file = path.join(this.out, `samples-${pad(this.step)}.png`);
    const D = buildDenoiser(c, this.emaNetwork());
    const k = this.#nullClass;
    const n = this.data.kind === 'points' ? Math.max(c.sampleCount, 2000) : c.sampleCount;
    const labels = k !== null ? Array.from({ length: n }, (_, i) => i % k) : null;
    const x = generateSamples(D, c, { shape: this.data.shape, n, seed: deriveSeed(c.seed, SEED_STREAMS.samples) % 2 ** 31, steps: c.sampleSteps, labels });
    try {
      if (this.data.kind === 'points') writeFileAtomic(file, encodePNG(scatterImage(x.toFloat64Array(), { title: `step ${this.step}` })));
      else writePNG(file, imageGrid(x, { ncol: k ?? undefined, scale: 2 }));
    } finally {
      x.dispose();
    }
    return file;
  }

  /** Writes loss.png (the loss curve so far). */
  writeLossPlot(): string {
    const file = path.join(this.out, 'loss.png');
    writeFileAtomic(file, lossCurvePNG(this.losses, { title: `${this.config.objective} loss, step ${this.step}` }));
    return file;
  }

  /** Frees the network, optimizer, EMA and data. */
  dispose(): void {
    this.net.dispose();
    this.#evalNet?.dispose();
    this.optimizer.dispose();
    this.ema.dispose();
    this.phema?.dispose();
    this.data.dispose();
  }

  #restore(dir: string): void {
    const head = readCheckpointMeta(dir);
    if (!head.state || head.exportedFrom) throw new ConfigError('resume', `${dir} is an export for sampling (no optimizer or generator state); resume from the training run's folder`);
    const ck = loadCheckpoint(dir);
    const { meta } = ck;
    try {
      const changed = configDiff(meta.config, this.config).filter((line) => !RESUMABLE_KEYS.includes(line.split(':')[0]));
      if (changed.length)
        throw new ConfigError('resume', `the config differs from the checkpoint's in ${changed.join('; ')} (only ${RESUMABLE_KEYS.join(', ')} may change when resuming)`);
      if (JSON.stringify(meta.network) !== JSON.stringify(this.spec)) throw new ConfigError('resume', `the checkpoint's network (${JSON.stringify(meta.network)}) is not the one this config builds`);
      for (const part of ['model', 'ema', 'optimizer', ...(this.phema ? (['phema'] as const) : [])] as const) if (!ck[part]) throw new ConfigError('resume', `${dir} has no ${part} file`);
      const state = meta.state!;
      const gens: [string, Generator][] = [['train', this.#gen], ['dropout', this.#dropoutGen]];
      for (const [name] of gens) if (state.generators[name] === undefined) throw new ConfigError('resume', `the checkpoint has no state for the ${name} generator`);
      const losses = decodeFloats(state.losses);
      if (losses.length !== meta.step) throw new ConfigError('resume', `the checkpoint has ${losses.length} losses for ${meta.step} steps`);
      // Everything checked: now restore.
      this.net.loadStateDict(ck.model!.tensors);
      const emaTensors = Object.fromEntries(this.ema.names.map((n) => [`ema.${n}`, ck.ema!.tensors[n]]));
      if (this.phema) this.phema.loadStateDict(ck.phema!);
      else this.ema.loadStateDict({ tensors: emaTensors, metadata: { 'ema.nimg': String(state.ema.nimg), 'ema.updates': String(state.ema.updates) } });
      this.optimizer.loadStateDict(ck.optimizer!);
      for (const [name, g] of gens) g.setState(new Uint8Array(Buffer.from(state.generators[name], 'base64')));
      this.losses.length = 0;
      for (const l of losses) this.losses.push(l);
      this.step = meta.step;
      this.lastCheckpoint = meta.step;
      this.#trainSeconds = state.trainSeconds;
      this.phema?.resumeSnapshots(dir, this.out, meta.step);
    } finally {
      for (const part of ['model', 'ema', 'optimizer', 'phema'] as const) if (ck[part]) dispose(ck[part]!.tensors);
    }
  }
}

/** Creates a trainer, runs it, disposes it. */
export async function train(config: TrainConfig, opts: TrainerOptions = {}): Promise<TrainResult> {
  const t = Trainer.create(config, opts);
  try {
    return await t.run();
  } finally {
    t.dispose();
  }
}
