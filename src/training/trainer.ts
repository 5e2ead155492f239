/**
 * Training a denoiser: a TrainConfig in, a run folder out (checkpoint, sample grids,
 * loss curve). The Trainer is the diffusion task on the shared loop (loop.ts): one part
 * (the network, Adam, its EMA) and one phase, whose loss is a batch (a pure function of
 * the step), label dropout, and the objective's loss; the loop does backward, gradient
 * clipping, the optimizer step with the scheduled learning rate and the EMA update.
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
import * as path from 'node:path';
import { Generator } from '../engine/random';
import { setNumThreads } from '../engine/runtime';
import { noGrad } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { tidy } from '../engine/scope';
import { downsample, samplingCondition, superResPanel, trainingCondition } from '../resolution/super-res';
import { seededNoise } from '../sampling/noise';
import { Adam, AdamW } from '../optim/adam';
import { EMA } from '../optim/ema';
import { imageGrid, writeFileAtomic, writePNG } from '../util/image';
import { scatterImage } from '../util/plot';
import { encodePNG } from '../data/image-codec';
import {
  buildDenoiser,
  buildLoss,
  buildLrSchedule,
  buildNetwork,
  deriveSeed,
  loraOptions,
  DenoiserNet,
  generateSamples,
  loadTrainData,
  materializeConfig,
  networkSpec,
  NetworkSpec,
  SEED_STREAMS,
  TrainData,
} from './build';
import { microAugment, microAugments, microValues } from './micro';
import { CHECKPOINT_FILE, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointMeta, checkpointJsonPath, decodeFloats, encodeFloats, loadModel, readCheckpointMeta } from './checkpoint';
import { applyLora, LoraOptions, loraNamedParameters, loraParameters, saveLora } from '../nn/lora';
import { ConfigError, configDiff, RESUMABLE_KEYS, TrainConfig } from './config';
import { CheckpointFormat, emaStateDict, LoopCheckpoint, LoopResult, NonFiniteLossError, Tracker, TrainingLoop, TrainPart } from './loop';
import { PhemaTracker } from './phema';
import { DataParallel } from '../distributed/data-parallel';
import { LatentCodec } from '../resolution/latent';
import { openLatentCodec } from './autoencoder';

export { NonFiniteLossError };

export interface TrainerOptions {
  /** Resume from this checkpoint folder: the config must match the checkpoint's except for the resumable keys (steps, out, sampling and checkpoint intervals, threads). */
  resume?: string | null;
  /** Where the progress bar and log lines go (default process.stderr; null: silent). */
  log?: NodeJS.WritableStream | null;
  /** On SIGINT (Ctrl-C), finish the step, write a checkpoint and stop (default false; the CLI turns it on). */
  handleSigint?: boolean;
  /** Data-parallel training (src/distributed/): config.batchSize is per rank, the global batch batchSize x worldSize (default null: one process). */
  parallel?: DataParallel | null;
}

export interface TrainResult extends LoopResult {
  out: string;
}

const pad = (step: number) => String(step).padStart(6, '0');

export class Trainer extends TrainingLoop<CheckpointMeta> {
  readonly config: TrainConfig;
  readonly data: TrainData;
  readonly spec: NetworkSpec;
  readonly net: DenoiserNet;
  readonly optimizer: Adam;
  /** The EMA of the weights (null with ema 'phema', whose first power-function average takes its place). */
  readonly ema: EMA | null;
  /** With ema 'phema': EDM2's power-function EMAs and their snapshots. */
  readonly phema: PhemaTracker | null;
  /** A LoRA run's adapter options (only the adapters train; their EMA is written to OUT/lora at each checkpoint), or null. */
  readonly lora: LoraOptions | null;
  /** A nested (Matryoshka) run's loss term per resolution at every step, smallest first (NaN before a level has grown); null for other runs. */
  readonly levelLosses: number[][] | null;
  /** A latent run's frozen autoencoder and normalization (config latent; docs/latent.md), or null. */
  readonly latent: LatentCodec | null;
  readonly #gen: Generator;
  readonly #dropoutGen: Generator;
  readonly #nullClass: number | null;
  #evalNet: DenoiserNet | null = null;

  private constructor(config: TrainConfig, data: TrainData, latent: LatentCodec | null, opts: TrainerOptions) {
    const c = materializeConfig(config, data);
    super({
      steps: c.steps,
      out: c.out,
      checkpointEvery: c.checkpointEvery,
      previewEvery: c.sampleEvery,
      label: 'train',
      log: opts.log === undefined ? process.stderr : opts.log,
      handleSigint: opts.handleSigint ?? false,
      lossPlot: true,
      parallel: opts.parallel ?? null,
    });
    this.data = data;
    this.latent = latent;
    this.config = c;
    this.spec = networkSpec(c, data);
    if (c.threads !== null) setNumThreads(c.threads);
    this.#gen = new Generator(deriveSeed(c.seed, SEED_STREAMS.train));
    this.#dropoutGen = new Generator(deriveSeed(c.seed, SEED_STREAMS.dropout));
    const initGen = new Generator(deriveSeed(c.seed, SEED_STREAMS.init));
    this.net = buildNetwork(this.spec, { generator: initGen, dropoutGenerator: this.#dropoutGen }).train();
    // A resumed run restores every weight from its own checkpoint; init is only read at the start.
    if (c.init !== null && !opts.resume) loadInitWeights(this.net, c.init, this.spec);
    this.lora = loraOptions(c);
    if (this.lora) {
      if (c.ema === 'phema') throw new ConfigError('ema', "'phema' does not go with LoRA (loraRank): use the standard EMA");
      try {
        applyLora(this.net, { ...this.lora, generator: initGen });
      } catch (e) {
        throw new ConfigError('loraTargets', (e as Error).message);
      }
    }
    this.#nullClass = this.net.nullClass;
    this.levelLosses = c.nested.length ? c.nested.map(() => []) : null;
    const lossOf = buildLoss(c, buildDenoiser(c, this.net), this.net);
    const params = this.lora ? loraNamedParameters(this.net) : this.net.namedParameters();
    this.optimizer = c.optimizer === 'adamw' ? new AdamW(params, { lr: c.lr, weightDecay: c.weightDecay }) : new Adam(params, { lr: c.lr, weightDecay: c.weightDecay });
    this.phema = c.ema === 'phema' ? new PhemaTracker(params, { stds: c.phemaStds, snapshotEvery: c.phemaSnapshotEvery }) : null;
    this.ema = this.phema ? null : new EMA(params, c.emaDecay !== null ? { decay: c.emaDecay } : { halfLifeImages: c.emaHalfLifeImages!, batchSize: this.#globalBatch, rampupRatio: c.emaRampupRatio });
    const network = JSON.stringify(this.spec);
    const part: TrainPart = {
      name: 'model',
      module: this.net,
      optimizer: this.optimizer,
      lr: buildLrSchedule(c),
      gradClip: c.gradClip,
      ema: this.ema,
      files: { weights: 'model', optimizer: 'optimizer', ema: 'ema' },
      metadata: { network },
      trackers: this.phema ? [phemaTracker(this.phema)] : [],
    };
    this.setup({ parts: [part], phases: [{ name: c.objective, part, loss: (k) => this.#loss(k, lossOf) }], generators: { train: this.#gen, dropout: this.#dropoutGen } });
  }

  /** Samples per step over every rank. */
  get #globalBatch(): number {
    return this.config.batchSize * (this.parallel?.worldSize ?? 1);
  }

  /** The objective on the batch of step k (this rank's shard of it), labels dropped to the null class with probability labelDropout. */
  #loss(k: number, lossOf: ReturnType<typeof buildLoss>): Tensor {
    const dp = this.parallel;
    const batch = this.data.batchAt(k);
    let x = dp ? dp.shard(batch.x) : batch.x; // [B, ...]
    const labels = dp && batch.labels ? dp.shard(batch.labels) : batch.labels;
    const gen = dp ? dp.shardedGenerator(this.#gen, x.dim(0)) : this.#gen;
    let cond: Conditioning | undefined;
    if (this.#nullClass !== null) {
      // Classifier-free guidance training: each label becomes the null class with probability labelDropout.
      const drop = gen.rand([x.dim(0)]).lt(this.config.labelDropout); // [B]
      cond = { classLabels: labels!.maskedFill(drop, this.#nullClass) };
    }
    const { lowRes, augMax, augBlur, microCond, latent, imageSize } = this.config;
    let micro = dp && batch.micro ? dp.shard(batch.micro) : batch.micro; // a latent run's crops are made on the pixels, before encoding
    if (microAugments(this.config) && latent === null) ({ x, micro } = microAugment(x, { ...this.config, generator: gen })); // SDXL Sec. 2.2: random crops and rescales
    if (microCond) cond = { ...cond, micro: micro ?? microValues(x.dim(0), imageSize) };
    if (lowRes !== null) cond = { ...cond, ...trainingCondition(x, lowRes, { augMax, blur: augBlur, generator: gen }) }; // CDM Sec. 4.2: a super-resolution stage
    const r = lossOf(x, gen, cond, k);
    this.levelLosses?.forEach((h, l) => h.push(r.levels?.[l] ?? NaN)); // MDM: each resolution's term, for the per-level curves
    return r.loss;
  }

  /** Loads the data and builds the run (restoring every state from `resume` when given). */
  static create(config: TrainConfig, opts: TrainerOptions = {}): Trainer {
    // Data parallel: every rank builds the global batch of a step and keeps its shard (src/distributed/data-parallel.ts).
    const world = opts.parallel?.worldSize ?? 1;
    if (config.latent !== null) config = { ...config, latent: path.resolve(config.latent) }; // the run decodes with it from anywhere
    const latent = config.latent !== null ? openLatent(config.latent, config.latentNorm) : null;
    let data: TrainData;
    try {
      data = loadTrainData(world === 1 ? config : { ...config, batchSize: config.batchSize * world }, {
        latent,
        log: (opts.parallel?.rank ?? 0) !== 0 ? null : opts.log === undefined ? process.stderr : opts.log,
      }); // only rank 0 logs
    } catch (e) {
      latent?.dispose();
      throw e;
    }
    let t: Trainer;
    try {
      t = new Trainer(config, data, latent, opts);
    } catch (e) {
      data.dispose();
      latent?.dispose();
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

  override get out(): string {
    return this.config.out;
  }

  /** Trains to config.steps, writing checkpoints, sample grids and the loss curve on the way. */
  override async run(): Promise<TrainResult> {
    return { ...(await super.run()), out: this.out };
  }

  /** One line about the run. */
  describe(): string {
    const c = this.config;
    const cond = this.#nullClass !== null ? `class-conditional (${this.#nullClass} classes, label dropout ${c.labelDropout})` : 'unconditional';
    const size = this.data.size === null ? 'endless' : `${this.data.size} samples`;
    const world = this.parallel?.worldSize ?? 1;
    const batch = world === 1 ? `batch ${c.batchSize}` : `batch ${c.batchSize} x ${world} ranks`;
    const lora = this.lora ? ` (LoRA r ${this.lora.rank}, alpha ${this.lora.alpha} on ${c.loraTargets}: ${this.optimizer.params.reduce((n, p) => n + p.size, 0).toLocaleString('en-US')} trained)` : '';
    const init = c.init !== null ? `, from ${c.init}` : '';
    const latent = this.latent ? `, latents [${this.data.shape}] of the KL-f${this.latent.record.factor} autoencoder ${c.latent} (${c.latentNorm} normalization)` : '';
    return `${c.objective} on ${c.data}${latent} (${size}, ${cond}); ${this.spec.type} with ${this.net.numParameters().toLocaleString('en-US')} parameters${lora}${init}; ${batch}, ${c.steps} steps, lr ${c.lr}; out ${this.out}`;
  }

  /** The EMA weights as a state dict of the network (new handles on the averages: no copies). */
  emaStateDict(): Record<string, Tensor> {
    if (!this.phema) return emaStateDict(this.parts[0]);
    const avg = this.phema.averages;
    return Object.fromEntries([...this.net.namedBuffers(), ...this.net.namedParameters().map(([n], i) => [n, avg[i]] as [string, Tensor])]);
  }

  protected checkpointFormat(): CheckpointFormat {
    return {
      json: CHECKPOINT_FILE,
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      prefix: '',
      fields: () => ({
        config: this.config,
        network: this.spec,
        numParameters: this.net.numParameters(),
        classNames: this.#nullClass !== null ? this.data.classNames : null,
        sampleShape: this.data.shape,
        ...(this.latent && { latent: this.latent.record }),
      }),
      state: () => ({
        ema: this.ema ? { nimg: this.ema.nimg, updates: this.ema.updates } : { nimg: 0, updates: this.phema!.step },
        worldSize: this.parallel?.worldSize ?? 1,
        ...(this.levelLosses ? { levelLosses: Object.fromEntries(this.config.nested.map((r, l) => [String(r), encodeFloats(this.levelLosses![l].slice(0, this.step))])) } : {}),
      }),
      // With ema 'phema', the EMA weights that sample and eval load are the first power-function average.
      files: () => {
        const files: Record<string, { tensors: Record<string, Tensor>; metadata: Record<string, string> }> = {};
        if (this.phema) files.ema = { tensors: this.emaStateDict(), metadata: { network: JSON.stringify(this.spec) } };
        return files;
      },
    };
  }

  /** The network with the EMA weights, in eval mode (owned by the trainer); a LoRA run's has the frozen base and the adapters' EMA. */
  emaNetwork(): DenoiserNet {
    if (!this.#evalNet) {
      this.#evalNet = buildNetwork(this.spec).eval();
      if (this.lora) applyLora(this.#evalNet, this.lora);
    }
    const ev = this.#evalNet;
    if (this.lora) ev.loadStateDict(this.net.stateDict());
    else
      noGrad(() => {
        for (const [n, b] of ev.namedBuffers()) b.copy_(this.net.namedBuffers().find(([m]) => m === n)![1]);
      });
    (this.phema ?? this.ema!).copyTo(this.lora ? loraParameters(ev) : ev.parameters());
    return ev;
  }

  /** Writes the checkpoint; a LoRA run also writes its adapters (the EMA ones) alone to OUT/lora in PEFT's layout. */
  override checkpoint(): CheckpointMeta {
    const meta = super.checkpoint();
    if (this.lora) saveLora(this.emaNetwork(), path.join(this.out, 'lora'));
    return meta;
  }

  protected override writePreviews(): string[] {
    return [this.writeSamples()];
  }

  /** Samples with the EMA weights (DDPM sampler, config.sampleSteps) into samples-<step>.png; returns the path. */
  writeSamples(): string {
    const c = this.config;
    const file = path.join(this.out, `samples-${pad(this.step)}.png`);
    const D = buildDenoiser(c, this.emaNetwork());
    if (c.lowRes !== null) return this.#writeSuperResSamples(D, file, c.lowRes);
    const k = this.#nullClass;
    const n = this.data.kind === 'points' ? Math.max(c.sampleCount, 2000) : c.sampleCount;
    const labels = k !== null ? Array.from({ length: n }, (_, i) => i % k) : null;
    const decode = this.latent ? (z: Tensor) => this.latent!.decode(z) : null; // a latent run previews decoded images
    const x = generateSamples(D, c, { shape: this.data.shape, n, seed: deriveSeed(c.seed, SEED_STREAMS.samples) % 2 ** 31, steps: c.sampleSteps, labels, decode });
    try {
      if (this.data.kind === 'points') writeFileAtomic(file, encodePNG(scatterImage(x.toFloat64Array(), { title: `step ${this.step}` })));
      else writePNG(file, imageGrid(x, { ncol: k ?? undefined, scale: 2 }));
    } finally {
      x.dispose();
    }
    return file;
  }

  /**
   * A super-resolution run's preview: the first images of the first batch, as three rows of a grid
   * (their low-res condition at s = 0, upsampled; the stage's samples from it; the originals).
   */
  #writeSuperResSamples(D: Denoiser, file: string, lowRes: number): string {
    const c = this.config;
    const batch = this.data.batchAt(0);
    try {
      const n = Math.min(c.sampleCount, batch.x.dim(0));
      const truth = batch.x.narrow(0, 0, n);
      const low = downsample(truth, lowRes);
      const labels = this.#nullClass !== null && batch.labels ? Array.from(batch.labels.narrow(0, 0, n).toFloat64Array()) : null;
      const seed = deriveSeed(c.seed, SEED_STREAMS.samples) % 2 ** 31;
      const condAt = (start: number, size: number) => samplingCondition(low.narrow(0, start, size), 0, seededNoise(seed, size));
      const x = generateSamples(D, c, { shape: this.data.shape, n, seed, steps: c.sampleSteps, labels, condAt });
      const panel = tidy(() => superResPanel(low, x, truth));
      x.dispose();
      [truth, low].forEach((t) => t.dispose());
      try {
        writePNG(file, imageGrid(panel, { ncol: n, scale: 2 }));
      } finally {
        panel.dispose();
      }
    } finally {
      batch.x.dispose();
      batch.labels?.dispose();
    }
    return file;
  }

  /** Frees the network, optimizer, EMA and data. */
  dispose(): void {
    this.disposeParts();
    this.#evalNet?.dispose();
    this.data.dispose();
    this.latent?.dispose();
  }

  #restore(dir: string): void {
    const meta = readCheckpointMeta(dir);
    if (!meta.state || meta.exportedFrom) throw new ConfigError('resume', `${dir} is an export for sampling (no optimizer or generator state); resume from the training run's folder`);
    const changed = configDiff(meta.config, this.config).filter((line) => !RESUMABLE_KEYS.includes(line.split(':')[0]));
    if (changed.length) throw new ConfigError('resume', `the config differs from the checkpoint's in ${changed.join('; ')} (only ${RESUMABLE_KEYS.join(', ')} may change when resuming)`);
    if (JSON.stringify(meta.network) !== JSON.stringify(this.spec)) throw new ConfigError('resume', `the checkpoint's network (${JSON.stringify(meta.network)}) is not the one this config builds`);
    const [was, now] = [meta.latent, this.latent?.record];
    if (was && now && (was.sha256 !== now.sha256 || JSON.stringify([was.shift, was.scale]) !== JSON.stringify([now.shift, now.scale])))
      throw new ConfigError('resume', `the autoencoder in ${now.autoencoder} (its weights or its stored latent statistics) is not the one the checkpoint in ${dir} was trained with`);
    for (const part of ['model', 'ema', 'optimizer', ...(this.phema ? (['phema'] as const) : [])] as const) if (!meta.files[part]) throw new ConfigError('resume', `${dir} has no ${part} file`);
    for (const name of ['train', 'dropout']) if (meta.state.generators[name] === undefined) throw new ConfigError('resume', `the checkpoint has no state for the ${name} generator`);
    const written = meta.state.worldSize ?? 1;
    const world = this.parallel?.worldSize ?? 1;
    if (written !== world)
      throw new ConfigError(
        'resume',
        `${dir} was trained by ${written} rank${written === 1 ? '' : 's'} (global batch ${this.config.batchSize * written}) and this run has ${world}: resume with the same world size (--nproc-per-node x --nnodes)`,
      );
    this.restore(checkpointJsonPath(dir), meta as unknown as LoopCheckpoint);
    this.levelLosses?.forEach((h, l) => h.splice(0, Infinity, ...levelHistory(meta, this.config.nested[l])));
  }
}

/** A nested run's loss term at resolution r for each of the checkpoint's steps (NaN where it was not recorded). */
export function levelHistory(meta: CheckpointMeta, r: number): number[] {
  const b64 = meta.state?.levelLosses?.[String(r)];
  const h = b64 === undefined ? [] : decodeFloats(b64).slice(0, meta.step);
  return [...h, ...Array<number>(meta.step - h.length).fill(NaN)];
}

/** Fine-tuning: copies the EMA weights of the run in `dir` into `net` (whose network must be the run's). */
function loadInitWeights(net: DenoiserNet, dir: string, spec: NetworkSpec): void {
  let src: ReturnType<typeof loadModel>;
  try {
    src = loadModel(dir, { latent: true });
  } catch (e) {
    throw new ConfigError('init', `cannot load ${dir}: ${(e as Error).message}`);
  }
  src.latent?.dispose(); // the weights are all it needs (the run's own config says what it trains on)
  try {
    if (JSON.stringify(src.meta.network) !== JSON.stringify(spec))
      throw new ConfigError('init', `${dir}'s network (${JSON.stringify(src.meta.network)}) is not the one this config builds (${JSON.stringify(spec)})`);
    net.loadStateDict(src.net.stateDict());
  } finally {
    src.net.dispose();
  }
}

/** The codec of a latent run's autoencoder, its errors as ConfigErrors of latent. */
function openLatent(dir: string, norm: TrainConfig['latentNorm']): LatentCodec {
  try {
    return openLatentCodec(dir, norm);
  } catch (e) {
    throw new ConfigError('latent', (e as Error).message);
  }
}

/** The post-hoc EMA as a tracker of the loop: updated with the network, snapshots written into the run folder, its state a checkpoint part. */
function phemaTracker(p: PhemaTracker): Tracker {
  return {
    key: 'phema',
    update: () => p.update(),
    stateDict: () => p.stateDict(),
    loadStateDict: (s) => p.loadStateDict(s),
    afterStep: (step, out, final) => void p.maybeSnapshot(step, out, { final }),
    resumed: (from, out, step) => {
      if (out !== null) p.resumeSnapshots(from, out, step);
    },
    dispose: () => p.dispose(),
  };
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
