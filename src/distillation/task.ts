/**
 * The distillation machinery: one stage of a distillation run as a task on the shared training
 * loop (training/loop.ts), which owns the steps, checkpoints, resume, Ctrl-C and progress. A stage
 * has a frozen teacher (any discrete-time checkpoint `diffuse sample` loads, optionally behind
 * classifier-free guidance) and a student: the same network initialized from the teacher's
 * weights, read with an x0 or v parameterization. The student is saved as an ordinary checkpoint
 * (model + optimizer, no EMA, as Salimans & Ho 2022) whose `distillation` record (record.ts) says
 * how to sample it, so `diffuse sample` and `diffuse eval` use it like any model.
 *
 * Switching the teacher's eps parameterization to the student's v: the network output F was
 * trained as eps, and the student reads it as v, D = alpha^2 x - sigma alpha F instead of
 * x - sigma F. At low noise (alpha -> 1) the two agree; at high noise the initial student is far
 * off (D -> -F instead of the mean of the data); the first updates of round 1 retrain the output.
 * No reweighting of the weights can make them equal, since eps -> v is affine in x with
 * sigma-dependent coefficients (docs/distillation.md).
 *
 * @example
 *   const task = DistillTask.create({ kind: 'round', teacherDir: 'models/fashion-mnist', out: 'runs/d/steps-32', teacherSteps: 64, round: 1, rounds: 4, options });
 *   await task.run();      // runs/d/steps-32/checkpoint.json: a 32-step student
 *   task.dispose();
 */
import * as path from 'node:path';
import { Generator } from '../engine/random';
import { setNumThreads } from '../engine/runtime';
import { zeros } from '../engine/create';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { classifierFreeGuidance } from '../guidance/cfg';
import { Adam } from '../optim/adam';
import { LrSchedule } from '../optim/schedule';
import { clipDenoiser } from '../sampling/run';
import { imageGrid, writePNG } from '../util/image';
import { buildDenoiser, buildNetwork, buildSchedule, deriveSeed, DenoiserNet, generateSamples, loadTrainData, NetworkSpec, prediction, samplingSigmas, TrainData } from '../training/build';
import { CHECKPOINT_FILE, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointMeta, checkpointJsonPath, loadModel, readCheckpointMeta } from '../training/checkpoint';
import { ConfigError, resolveTrainConfig, TRAIN_DEFAULTS, TrainConfig } from '../training/config';
import { CheckpointFormat, LoopCheckpoint, TrainingLoop, TrainPart } from '../training/loop';
import { discreteSigma } from '../training/sigma-sampling';
import { CDSolver, consistencyLoss, defaultDistance, ConsistencyTarget, ctDiscretization, ctTargetDecay, ictDiscretization, karrasPoints, TargetNetwork } from './consistency';
import { guidedLoss, sampleGuidance, withGuidance } from './guided';
import { progressiveLoss } from './progressive';
import { ADAPTER_RECORD_KEY, ConsistencyMethod, DistillationRecord, DistillMethod, GUIDANCE_CONVENTION, StudentParameterization } from './record';
import { ADD_LAMBDA, addDiscriminatorLoss, addGeneratorLoss, AddHeads, teacherFeatures } from './add';
import { UNet } from '../models/unet';
import { Tracker } from '../training/loop';
import { guidedTeacher, LCM_DEFAULT_SKIP, LCM_LR, lcmBoundary, lcmLoss, skippingGrid } from './lcm';
import { ParamGroups } from '../optim/groups';
import { applyLora, loraNamedParameters, saveLora } from '../nn/lora';
import { Module } from '../nn/module';
import { LatentCodec } from '../resolution/latent';

/** An LCM student's optimizer: Adam at `lr`, its new w embedding (map_guidance*) at LCM_LR.embeddingMult times that. */
export function lcmOptimizer(net: Module, lr: number): ParamGroups {
  const named = net.namedParameters();
  const isW = ([name]: readonly [string, Tensor]) => name.startsWith('map_guidance');
  return new ParamGroups(
    [
      { params: named.filter((p) => !isW(p)), lrMult: 1 },
      { params: named.filter(isW), lrMult: LCM_LR.embeddingMult },
    ],
    (p, rate) => new Adam(p, { lr: rate }),
    lr,
  );
}

/** The options of a distillation run (`diffuse distill`), every one with a default in DISTILL_DEFAULTS. */
export interface DistillOptions {
  method: DistillMethod;
  /** The teacher's checkpoint folder (a discrete-time eps / x0 / v model). */
  teacher: string;
  /** The run's folder: one student checkpoint per stage. */
  out: string;
  /** What the student predicts: 'v' (default) or 'x0'. */
  parameterization: StudentParameterization;
  /** The teacher's DDIM steps that the first round distils. */
  teacherSteps: number;
  /** The last round's student steps (teacherSteps / studentSteps a power of 2). */
  studentSteps: number;
  /** Optimizer steps per progressive round. */
  roundSteps: number;
  /** Optimizer steps of guided distillation's stage 1. */
  guidanceSteps: number;
  batchSize: number;
  /** The learning rate at the start of each stage, annealed linearly to 0 within it. */
  lr: number;
  /** progressive: the teacher's classifier-free guidance scale to distil in (null: none). */
  guidance: number | null;
  /** guided: the range of w the student learns (our convention; Meng et al.'s [0, 4] is [1, 5]). */
  guidanceRange: [number, number];
  seed: number;
  /** Write a checkpoint every this many steps (0: only at the end of a stage and on Ctrl-C). */
  checkpointEvery: number;
  /** CPU threads (null: every core). */
  threads: number | null;
  /** cd, ct, ict, lcm: optimizer steps of the consistency stage (K of the N(k) curricula). */
  consistencySteps: number;
  /** cd, ct, ict: the boundary sigma_min (null: the teacher's smallest sigma, its timestep 0). */
  sigmaMin: number | null;
  /** cd: the Karras grid's N (Song et al. 2023: 18 on CIFAR-10, 40 on ImageNet 64). */
  discretization: number;
  /** cd: the teacher's ODE solver between adjacent points. */
  solver: CDSolver;
  /** cd: the target network's EMA rate mu. */
  mu: number;
  /** cd, ct, ict, lcm: the distance, 'l2' or 'pseudo-huber' (null: l2 for cd, ct and lcm, pseudo-huber for ict). */
  distance: 'l2' | 'pseudo-huber' | null;
  /** lcm: the skipping interval k, teacher timesteps per ODE step (Luo et al. 2023: 20 of 1000). */
  skip: number;
  /** lcm: train only LoRA adapters of this rank on the frozen teacher (LCM-LoRA; null: every weight). */
  loraRank: number | null;
  /** lcm: the adapters' alpha (null: the rank). */
  loraAlpha: number | null;
  /** lcm: the adapted layers (LoraOptions.targets, comma-separated). */
  loraTargets: string;
  /** dmd, dmd2: generator updates (loop steps). */
  dmdSteps: number;
  /** dmd, dmd2: fake-score updates per generator update (null: dmd 1, dmd2 5). */
  fakeUpdates: number | null;
  /** dmd: the folder of regression pairs (diffuse distill dmd-pairs). */
  pairs: string | null;
  /** dmd: lambda_reg, the regression loss's weight (Yin et al. 2023: 0.25). */
  regWeight: number;
  /** dmd2: lambda_G, the generator's weight of the GAN head's loss (0: no GAN head; DMD2's ImageNet-64 script: 3e-3; dmd-gan.ts). */
  ganWeight: number;
  /** dmd2 with ganWeight > 0: lambda_D, the fake score's weight of the head's discriminator loss (null: DMD2_GAN_DISC_WEIGHT = 1e-2). */
  ganDiscWeight: number | null;
  /** add: optimizer steps (each a student update, then a discriminator update). */
  adversarialSteps: number;
  /** add: lambda of L = L_adv + lambda L_distill (Sauer et al. 2023: 2.5). */
  distillWeight: number;
  /** add: the R1 penalty's gamma on the discriminator's inputs (0: none). */
  r1Gamma: number;
}

/** The defaults (docs/distillation.md says why). */
export const DISTILL_DEFAULTS: Readonly<Omit<DistillOptions, 'teacher' | 'out' | 'method'>> = Object.freeze<Omit<DistillOptions, 'teacher' | 'out' | 'method'>>({
  parameterization: 'v',
  teacherSteps: 64,
  studentSteps: 4,
  roundSteps: 500,
  guidanceSteps: 1000,
  batchSize: 64,
  lr: 3e-4,
  guidance: null,
  guidanceRange: [1, 5],
  seed: 0,
  checkpointEvery: 250,
  threads: null,
  consistencySteps: 1000,
  sigmaMin: null,
  discretization: 18,
  solver: 'heun',
  mu: 0.95,
  distance: null,
  skip: LCM_DEFAULT_SKIP,
  loraRank: null,
  loraAlpha: null,
  loraTargets: 'all',
  dmdSteps: 1000,
  fakeUpdates: null,
  pairs: null,
  regWeight: 0.25,
  ganWeight: 0,
  ganDiscWeight: null,
  adversarialSteps: 1000,
  distillWeight: ADD_LAMBDA,
  r1Gamma: 1.5e-3, // ADD's 1e-5 on 3x224x224 inputs, scaled by the input size ratio 150528 / 1024 (docs/distillation.md)
});

/** dmd, dmd2: the learning rate when none is given (both networks; DISTILL_DEFAULTS.lr is progressive's). */
export const DMD_LR = 2e-5;

/** One stage of a run: guided distillation's stage 1 ('guidance') or a progressive round. */
export interface StagePlan {
  /** Its folder under the run's out. */
  name: string;
  kind: 'guidance' | 'round' | 'consistency' | 'adversarial' | 'dmd';
  /** 1-based round (0 for 'guidance'). */
  round: number;
  /** The teacher's DDIM steps (null for 'guidance'), and the student's. */
  teacherSteps: number | null;
  studentSteps: number;
  /** Optimizer steps. */
  steps: number;
}

/** What one stage needs: its plan, the run's options, the teacher's folder and the stage's out. */
export interface StageSetup {
  plan: StagePlan;
  rounds: number;
  options: DistillOptions;
  teacherDir: string;
  out: string;
}

/** The range the teacher's x0 estimates are clipped to, as diffuse sample does: [-1, 1] for pixels, null for 2-D points and for latents (unbounded). */
export function teacherClip(meta: Pick<CheckpointMeta, 'sampleShape' | 'latent'>): [number, number] | null {
  return meta.sampleShape.length === 3 && !meta.latent ? [-1, 1] : null;
}

/** lr (1 - k / steps): the rate annealed linearly to 0 within a round (Salimans & Ho 2022, App. E). */
export function linearAnneal(lr: number, steps: number): LrSchedule {
  return (k) => lr * Math.max(0, 1 - k / steps);
}

/** The Karras grid's ends of a consistency stage: sigma_min (the option, else the teacher's smallest sigma) to the teacher's largest. */
export function consistencyRange(o: Pick<DistillOptions, 'sigmaMin'>, schedule: { sigmas: Float64Array; T: number }): { sigmaMin: number; sigmaMax: number } {
  const [lo, hi] = [schedule.sigmas[0], schedule.sigmas[schedule.T - 1]];
  const sigmaMin = o.sigmaMin ?? lo;
  if (!(sigmaMin >= lo && sigmaMin < hi)) throw new ConfigError('sigmaMin', `must be within the teacher's sigmas [${lo}, ${hi}) (its network has seen no smaller noise level), got ${sigmaMin}`);
  return { sigmaMin, sigmaMax: hi };
}

/** A stage's student config: the teacher's, read with the student's parameterization, with the stage's batch, steps, rate and seed (label dropout off for a guided pair). */
export function studentConfig(
  s: StageSetup,
  tm: CheckpointMeta,
  { steps, sampleSteps, guided, objective }: { steps: number; sampleSteps: number; guided: boolean; objective?: TrainConfig['objective'] },
): TrainConfig {
  const o = s.options;
  return resolveTrainConfig(
    {
      ...tm.config,
      objective: objective ?? o.parameterization,
      weighting: 'auto',
      minSnrGamma: TRAIN_DEFAULTS.minSnrGamma,
      labelDropout: guided ? 0 : tm.config.labelDropout,
      batchSize: o.batchSize,
      steps,
      lr: o.lr,
      warmupSteps: 0,
      lrSchedule: 'constant',
      seed: o.seed,
      sampleEvery: 0,
      sampleSteps,
      checkpointEvery: o.checkpointEvery,
      out: s.out,
      threads: o.threads,
      ...(o.loraRank !== null ? { loraRank: o.loraRank, loraAlpha: o.loraAlpha, loraTargets: o.loraTargets } : {}), // loadModel merges the adapters
    },
    `${s.teacherDir}: config`,
  );
}

/** A distillation stage on the shared loop (see the module comment). */
export class DistillTask extends TrainingLoop<CheckpointMeta> {
  readonly setupInfo: StageSetup;
  readonly config: TrainConfig;
  readonly spec: NetworkSpec;
  readonly net: DenoiserNet;
  readonly record: DistillationRecord;
  readonly #teacher: ReturnType<typeof loadModel>;
  readonly #data: TrainData;
  readonly #student: Denoiser;
  /** cd and ct: the target network theta- (an EMA of the student). */
  readonly #target: DenoiserNet | null = null;

  private constructor(s: StageSetup, teacher: ReturnType<typeof loadModel>, run: { log?: NodeJS.WritableStream | null; handleSigint?: boolean }) {
    const { plan, options: o } = s;
    super({
      steps: plan.steps,
      out: s.out,
      checkpointEvery: o.checkpointEvery,
      previewEvery: 0,
      label: `distill ${plan.name}`,
      log: run.log === undefined ? process.stderr : run.log,
      handleSigint: run.handleSigint ?? false,
      lossPlot: true,
    });
    this.setupInfo = s;
    this.#teacher = teacher;
    const tm = teacher.meta;
    const teacherRec = tm.distillation;
    const bad = (why: string) => new ConfigError('teacher', `${s.teacherDir}: ${why}`);
    if (prediction(tm.config.objective) === null) throw bad(`distillation here needs a discrete-time (eps, x0 or v) teacher, whose trailing grid halves exactly; this one is ${tm.config.objective}`);
    const lcm = o.method === 'lcm'; // w embedded over guidanceRange, or one w (o.guidance) baked in
    if (lcm && teacherRec) throw bad('is a distilled student; LCM distils an undistilled teacher under classifier-free guidance');
    const embedded = plan.kind === 'guidance' ? o.guidanceRange : lcm ? (o.guidance === null ? o.guidanceRange : null) : (teacherRec?.guidance.embedded ?? null);
    const cfgScale = (plan.round === 1 && plan.kind === 'round') || lcm ? o.guidance : null; // only the first round's teacher is guided: later teachers have it built in
    if (cfgScale !== null && embedded) throw new ConfigError('guidance', `${cfgScale}: the teacher ${s.teacherDir} embeds w already (a guided student); distil it without --guidance`);
    if (cfgScale !== null && (teacherRec?.guidance.teacherScale ?? null) !== null)
      throw new ConfigError('guidance', `${cfgScale}: the teacher ${s.teacherDir} has cfg w = ${teacherRec!.guidance.teacherScale} built in`);
    const guided = embedded !== null || cfgScale !== null || (teacherRec?.guidance.teacherScale ?? null) !== null;
    if ((plan.kind === 'guidance' || cfgScale !== null || lcm) && !tm.classNames) throw bad('classifier-free guidance needs a class-conditional teacher');
    const embedW = plan.kind === 'guidance' || (lcm && embedded !== null);
    if (embedW && tm.network.type !== 'unet') throw bad(`guided distillation embeds w in the U-Net; this teacher is a ${tm.network.type}`);
    if (teacherRec?.consistency) throw bad('is a consistency model (no ODE to distil or start from); take its teacher');
    if (plan.kind === 'consistency' && !lcm && embedded) throw bad('embeds the guidance weight w (a guided student); consistency distillation of a guided teacher is LCM, not done here');
    const objective = lcm ? tm.config.objective : o.parameterization; // an LCM student keeps its teacher's prediction
    const consistency = plan.kind === 'consistency' ? consistencyRange(o, buildSchedule({ ...tm.config, objective })!) : null;
    const adversarial = plan.kind === 'adversarial';
    if (adversarial && (tm.network.type !== 'unet' || tm.sampleShape.length !== 3))
      throw bad(`ADD's discriminator reads the teacher U-Net's encoder features of images; this teacher is a ${tm.network.type}`);
    if (adversarial && guided) throw bad('has classifier-free guidance built in or embedded (a guided student); ADD here distils an unguided teacher');

    this.spec = embedW && tm.network.type === 'unet' ? { type: 'unet', config: { ...tm.network.config, guidanceEmbedding: true } } : tm.network;
    this.config = studentConfig(s, tm, { steps: plan.steps, sampleSteps: plan.studentSteps, guided, objective });
    if (o.threads !== null) setNumThreads(o.threads);
    this.record = {
      method: o.method,
      stage: plan.kind,
      round: plan.round,
      rounds: s.rounds,
      parameterization: lcm ? prediction(objective)! : o.parameterization,
      teacher: { checkpoint: s.teacherDir, step: tm.step, objective: tm.config.objective, steps: plan.teacherSteps },
      // ADD samples as multistep consistency sampling does: x0 at each point, re-noised with fresh noise to the next (sigma_min 0).
      sampling: consistency ? { sampler: 'consistency', grid: 'consistency', steps: plan.studentSteps } : { sampler: adversarial ? 'consistency' : 'ddim', grid: 'trailing', steps: plan.studentSteps },
      guidance: { convention: GUIDANCE_CONVENTION, teacherScale: cfgScale ?? teacherRec?.guidance.teacherScale ?? null, embedded },
      ...(consistency ? { consistency: lcm ? lcmBoundary(consistency.sigmaMin) : { sigmaMin: consistency.sigmaMin } } : {}),
    };

    const gen = new Generator(deriveSeed(o.seed, 100 + plan.round));
    const dropoutGen = new Generator(deriveSeed(o.seed, 200 + plan.round));
    this.#data = loadTrainData(this.config, { latent: teacher.latent }); // a latent teacher: its training images' normalized latents (docs/latent.md)
    this.net = buildNetwork(this.spec, { generator: new Generator(0), dropoutGenerator: dropoutGen });
    this.net.loadStateDict(teacher.net.stateDict(), { strict: !embedW }); // the student starts from the teacher's weights (a new w embedding starts at zero)
    const lora = this.#lora(this.net, deriveSeed(o.seed, 300));
    this.net.train();
    this.#student = buildDenoiser(this.config, this.net, { consistency: this.record.consistency });
    const range = teacherClip(tm);
    const clip = (D: Denoiser) => (range ? clipDenoiser(D, range) : D); // the teacher as diffuse sample runs it
    const nullClass = tm.classNames?.length ?? 0;
    const teacherD = clip(lcm ? guidedTeacher(teacher.denoiser, nullClass, cfgScale) : cfgScale !== null ? classifierFreeGuidance(teacher.denoiser, { scale: cfgScale, nullClass }) : teacher.denoiser);
    const schedule = buildSchedule(this.config)!;

    const condOf = (x: Tensor, labels: Tensor | undefined): Conditioning => {
      const cond: Conditioning = {};
      if (labels) cond.classLabels = guided ? labels : labels.maskedFill(gen.rand([x.dim(0)]).lt(this.config.labelDropout), nullClass); // dropout keeps the null class for CFG later
      if (embedded) cond.guidance = sampleGuidance(x.dim(0), embedded, gen);
      return cond;
    };
    let loss: (k: number) => Tensor;
    const trackers: Tracker[] = [];
    let discriminator: { part: TrainPart; loss: (k: number) => Tensor } | null = null;
    if (adversarial) {
      const studentGrid = samplingSigmas(this.config, plan.studentSteps, 'trailing');
      const studentSigmas = Array.from(studentGrid.toFloat64Array()).slice(0, -1); // without the final 0
      studentGrid.dispose();
      const teacherSigmas = Array.from(schedule.sigmas);
      const features = teacherFeatures(teacher.net as UNet, schedule);
      const channels = noGrad(() => tidy(() => features(zeros([1, ...tm.sampleShape])).map((f) => f.dim(1))));
      const heads = new AddHeads(channels, { numClasses: tm.classNames?.length ?? null, generator: new Generator(deriveSeed(o.seed, 300)) });
      const disc = { features, heads };
      loss = (k) => {
        const { x, labels } = this.#data.batchAt(k);
        return addGeneratorLoss(this.#student, teacherD, disc, x, { studentSigmas, teacherSigmas, generator: gen, cond: condOf(x, labels), lambda: o.distillWeight }).loss;
      };
      const part: TrainPart = {
        name: 'discriminator',
        module: heads,
        optimizer: new Adam(heads.namedParameters(), { lr: o.lr, betas: [0, 0.99] }), // StyleGAN-T's betas for the heads
        lr: () => o.lr,
        files: { weights: 'discriminator', optimizer: 'discriminator-optimizer' },
      };
      discriminator = {
        part,
        loss: (k) => {
          const { x, labels } = this.#data.batchAt(k);
          return addDiscriminatorLoss(this.#student, disc, x, { studentSigmas, generator: gen, cond: condOf(x, labels), r1Gamma: o.r1Gamma }).loss;
        },
      };
    } else if (consistency) {
      const method = o.method as ConsistencyMethod;
      const K = plan.steps;
      let how: ConsistencyTarget = { method: 'ict' };
      if (method !== 'ict') {
        const target = (this.#target = buildNetwork(this.spec, { generator: new Generator(0), dropoutGenerator: dropoutGen })); // the same dropout generator: the same masks (consistencyLoss)
        this.#lora(target, deriveSeed(o.seed, 300));
        target.loadStateDict(this.net.stateDict());
        target.train();
        const targetD = buildDenoiser(this.config, target, { consistency: this.record.consistency });
        how = method === 'ct' ? { method, target: targetD } : { method: 'cd', target: targetD, teacher: teacherD, solver: o.solver }; // lcm: teacherD is the guided teacher (lcm.ts)
        trackers.push(new TargetNetwork(target, this.net, method === 'ct' ? (k) => ctTargetDecay(k, K) : () => o.mu));
      }
      const N = (k: number) => (method === 'cd' ? o.discretization : method === 'ct' ? ctDiscretization(k, K) : ictDiscretization(k, K));
      const grid = lcm ? skippingGrid(schedule, o.skip) : null;
      loss = (k) => {
        const { x, labels } = this.#data.batchAt(k);
        const opts = { generator: gen, cond: condOf(x, labels), distance: o.distance ?? undefined, dropout: dropoutGen };
        if (grid && how.method === 'cd') return lcmLoss(this.#student, how, x, { grid, ...opts }).loss; // one DDIM step over k teacher timesteps
        return consistencyLoss(this.#student, how, x, { sigmas: karrasPoints(N(k), consistency), ...opts }).loss;
      };
    } else if (plan.kind === 'guidance') {
      const sampleSigma = discreteSigma(schedule);
      loss = (k) => {
        const { x, labels } = this.#data.batchAt(k);
        const w = sampleGuidance(x.dim(0), embedded!, gen);
        return guidedLoss(this.#student, teacher.denoiser, x, { sampleSigma, generator: gen, classLabels: labels!, w, nullClass, clip: range }).loss;
      };
    } else {
      const grid = samplingSigmas(this.config, plan.teacherSteps!, 'trailing');
      const sigmas = Array.from(grid.toFloat64Array());
      grid.dispose();
      const studentGrid = samplingSigmas(this.config, plan.studentSteps, 'trailing');
      const nested = Array.from(studentGrid.toFloat64Array()).every((v, j) => v === sigmas[2 * j]);
      studentGrid.dispose();
      if (!nested) throw new RangeError(`distillation: the ${plan.studentSteps}-step trailing grid is not every other point of the ${plan.teacherSteps}-step one`);
      loss = (k) => {
        const { x, labels } = this.#data.batchAt(k);
        return progressiveLoss(this.#student, teacherD, x, { sigmas, generator: gen, cond: condOf(x, labels) }).loss;
      };
    }
    const part: TrainPart = {
      name: 'model',
      module: this.net,
      optimizer: lora ? new Adam(loraNamedParameters(this.net), { lr: o.lr }) : lcm && embedW ? lcmOptimizer(this.net, o.lr) : new Adam(this.net.namedParameters(), { lr: o.lr }), // LCM-LoRA: only the adapters train
      lr: consistency || adversarial ? () => o.lr : linearAnneal(o.lr, plan.steps), // consistency models: a constant rate (Song et al. 2023, App. C); ADD too
      gradClip: tm.config.gradClip,
      files: { weights: 'model', optimizer: 'optimizer' },
      metadata: { network: JSON.stringify(this.spec) },
      trackers,
    };
    const phase = consistency ? `consistency ${o.method}` : adversarial ? 'adversarial distillation' : plan.kind === 'guidance' ? 'guided distillation' : 'progressive distillation';
    const parts = [part, ...(discriminator ? [discriminator.part] : [])];
    const phases = [{ name: phase, part, loss }, ...(discriminator ? [{ name: 'discriminator', part: discriminator.part, loss: discriminator.loss }] : [])]; // ADD: the student's update, then the heads'
    this.setup({ parts, phases, generators: { train: gen, dropout: dropoutGen } });
  }

  /** The number of trained parameters (the adapters' alone in LCM-LoRA). */
  optimizerParameterCount(): number {
    return (this.setupInfo.options.loraRank !== null ? loraNamedParameters(this.net) : this.net.namedParameters()).reduce((n, [, t]) => n + t.size, 0);
  }

  /** LCM-LoRA: adapters of the run's rank on `module` (the base frozen); null when the run trains every weight. */
  #lora(module: Module, seed: number): string[] | null {
    const o = this.setupInfo.options;
    if (o.loraRank === null) return null;
    try {
      return applyLora(module, { rank: o.loraRank, alpha: o.loraAlpha ?? o.loraRank, targets: o.loraTargets.split(',').map((t) => t.trim()), generator: new Generator(seed) });
    } catch (e) {
      throw new ConfigError('loraTargets', (e as Error).message);
    }
  }

  /** Writes the checkpoint; an LCM-LoRA stage also writes its adapters alone to OUT/lora, with the student's record (sampling needs it on any base). */
  override checkpoint(): CheckpointMeta {
    const meta = super.checkpoint();
    if (this.setupInfo.options.loraRank !== null) saveLora(this.net, path.join(this.out, 'lora'), { metadata: { [ADAPTER_RECORD_KEY]: JSON.stringify(this.record) } });
    return meta;
  }

  /** Loads the teacher (a latent one with its autoencoder) and builds the stage; with `resume`, restores the stage's checkpoint in setup.out. */
  static create(s: StageSetup, run: { resume?: boolean; log?: NodeJS.WritableStream | null; handleSigint?: boolean } = {}): DistillTask {
    const teacher = loadModel(s.teacherDir, { latent: true }); // the student works in the teacher's latent space; previews decode
    let t: DistillTask;
    try {
      t = new DistillTask(s, teacher, run);
    } catch (e) {
      teacher.net.dispose();
      teacher.latent?.dispose();
      throw e;
    }
    if (run.resume) {
      try {
        t.#restore();
      } catch (e) {
        t.dispose();
        throw e;
      }
    }
    return t;
  }

  /** The frozen teacher's network (ADD: also its feature network). */
  get teacherNet(): DenoiserNet {
    return this.#teacher.net;
  }

  override get out(): string {
    return this.setupInfo.out;
  }

  describe(): string {
    const { plan, options: o } = this.setupInfo;
    const r = this.record;
    const g = r.guidance;
    const lora = o.loraRank !== null ? `, LoRA r ${o.loraRank} alpha ${o.loraAlpha ?? o.loraRank} on ${o.loraTargets} (${this.optimizerParameterCount().toLocaleString('en-US')} trained)` : '';
    const curriculum =
      o.method === 'cd'
        ? `N = ${o.discretization}, teacher ${o.solver} steps, target EMA mu = ${o.mu}`
        : o.method === 'lcm'
          ? `skipping-step k = ${o.skip}, teacher DDIM steps under cfg ${g.embedded ? `w in [${g.embedded.join(', ')}] (embedded, the embedding at ${LCM_LR.embeddingMult}x the rate)` : `w = ${g.teacherScale}`}, target EMA mu = ${o.mu}${lora}`
          : o.method === 'ct'
            ? 'N(k) from 2 to 150, target EMA mu(k)'
            : 'N(k) doubling from 10, no EMA target, log-normal n';
    const what =
      plan.kind === 'adversarial'
        ? `adversarial distillation (ADD): hinge GAN on the teacher's encoder features, R1 gamma ${o.r1Gamma}, lambda ${o.distillWeight}, sampled in ${plan.studentSteps} step(s)`
        : plan.kind === 'consistency'
          ? `consistency ${o.method}: ${curriculum}, sigma_min ${r.consistency!.sigmaMin.toPrecision(4)}, ${o.distance ?? defaultDistance(o.method as ConsistencyMethod)} distance, sampled in ${plan.studentSteps} step(s)`
          : plan.kind === 'guidance'
            ? `guided distillation stage 1: a w-conditioned student (w in [${o.guidanceRange.join(', ')}]) learns the teacher's cfg output`
            : `progressive round ${plan.round}/${this.setupInfo.rounds}: ${plan.teacherSteps} teacher DDIM steps -> ${plan.studentSteps} student steps${r.guidance.teacherScale !== null ? ` (teacher cfg w = ${r.guidance.teacherScale})` : ''}${r.guidance.embedded ? ` (w in [${r.guidance.embedded.join(', ')}])` : ''}`;
    return `${what}; teacher ${this.setupInfo.teacherDir} (step ${this.#teacher.meta.step}); ${r.parameterization} student, ${this.net.numParameters().toLocaleString('en-US')} parameters; batch ${o.batchSize}, ${plan.steps} steps, lr ${o.lr}${plan.kind === 'consistency' || plan.kind === 'adversarial' ? ' (constant)' : ' annealed to 0'}; out ${this.out}`;
  }

  protected checkpointFormat(): CheckpointFormat {
    return studentCheckpointFormat({ config: this.config, spec: this.spec, net: this.net, teacher: this.#teacher.meta, record: this.record, setup: this.setupInfo });
  }

  /** The student as a denoiser in eval mode at the stage's sampling (a w student at the middle of its range). */
  protected override writePreviews(): string[] {
    return writeStudentPreviews({ net: this.net, denoiser: this.#student, config: this.config, record: this.record, teacher: this.#teacher.meta, latent: this.#teacher.latent }, this.out);
  }

  /** Frees the student, its optimizer, the target network, the teacher (and its autoencoder) and the data. */
  dispose(): void {
    this.disposeParts();
    this.#target?.dispose();
    this.#teacher.net.dispose();
    this.#teacher.latent?.dispose();
    this.#data.dispose();
  }

  #restore(): void {
    const meta = readStageCheckpoint(this.out, this.record, this.spec);
    this.restore(checkpointJsonPath(this.out), meta as unknown as LoopCheckpoint);
  }
}

/** What a student checkpoint is made of: the student's network, config and record, and the teacher's data description. */
export interface StudentParts {
  net: DenoiserNet;
  config: TrainConfig;
  record: DistillationRecord;
  teacher: CheckpointMeta;
  /** A latent teacher's autoencoder (previews decode with it); null or absent for pixels. */
  latent?: LatentCodec | null;
}

/** A student's checkpoint: an ordinary checkpoint.json (`diffuse sample` loads it) with its distillation record and the run's options. */
export function studentCheckpointFormat(s: StudentParts & { spec: NetworkSpec; setup: StageSetup }): CheckpointFormat {
  return {
    json: CHECKPOINT_FILE,
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    prefix: '',
    fields: () => ({
      config: s.config,
      network: s.spec,
      numParameters: s.net.numParameters(),
      classNames: s.teacher.classNames,
      sampleShape: s.teacher.sampleShape,
      ...(s.teacher.latent ? { latent: s.teacher.latent } : {}), // a latent student decodes with its teacher's autoencoder
      distillation: s.record,
      distillRun: { options: s.setup.options, stage: s.setup.plan },
    }),
    state: () => ({ ema: { nimg: 0, updates: 0 } }),
  };
}

/** samples.png in `out`: the student (in eval mode) sampled as its record says, two per class (a w student at the middle of its range); returns the files written. */
export function writeStudentPreviews(s: StudentParts & { denoiser: Denoiser }, out: string): string[] {
  const file = path.join(out, 'samples.png');
  const k = s.teacher.classNames?.length ?? null;
  const n = k !== null ? 2 * k : 16;
  const e = s.record.guidance.embedded;
  s.net.eval();
  try {
    const D = e ? withGuidance(s.denoiser, (e[0] + e[1]) / 2) : s.denoiser;
    const x = noGrad(() =>
      generateSamples(D, s.config, {
        shape: s.teacher.sampleShape,
        n,
        seed: 0,
        steps: s.record.sampling.steps,
        sampler: s.record.sampling.sampler,
        grid: s.record.sampling.grid,
        sigmaMin: s.record.consistency?.sigmaMin,
        labels: k !== null ? Array.from({ length: n }, (_, i) => i % k) : null,
        decode: s.latent ? (z) => s.latent!.decode(z) : null,
      }),
    );
    try {
      if (x.ndim === 4) writePNG(file, imageGrid(x, { ncol: k ?? undefined, scale: 2 }));
    } finally {
      x.dispose();
    }
  } finally {
    s.net.train();
  }
  return s.teacher.sampleShape.length === 3 ? [file] : [];
}

/** The checkpoint in `dir` checked to be this stage's (same stage, round, teacher and network) before a resume; errors name the folder. */
export function readStageCheckpoint(dir: string, record: DistillationRecord, spec: NetworkSpec): CheckpointMeta {
  const meta = readCheckpointMeta(dir);
  const fail = (why: string) => new ConfigError('resume', `${dir}: ${why}`);
  if (!meta.state || meta.exportedFrom) throw fail('is an export for sampling (no optimizer or generator state)');
  const rec = meta.distillation;
  if (!rec || rec.method !== record.method || rec.stage !== record.stage || rec.round !== record.round || rec.teacher.checkpoint !== record.teacher.checkpoint)
    throw fail(
      `holds another stage (${rec ? `${rec.method} ${rec.stage} ${rec.round}, teacher ${rec.teacher.checkpoint}` : 'no distillation record'}) than this run's ${record.method} ${record.stage} ${record.round}`,
    );
  if (JSON.stringify(meta.network) !== JSON.stringify(spec)) throw fail("the checkpoint's network is not the student this stage builds");
  return meta;
}
