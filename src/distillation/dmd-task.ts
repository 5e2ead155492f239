/**
 * DMD and DMD2 as a task on the shared training loop (training/loop.ts): two parts, the one-step
 * generator G (the student, saved as the run's model) and the fake score network (saved beside it
 * as 'fake'), each with its own Adam optimizer, and two phases per step:
 *
 *   generator   z ~ N(0, I), x0 = G(sigma_max z) (one DDIM step on the trailing grid [sigma_max, 0]);
 *               the distribution matching loss (dmd.ts, Eq. 7-8) against the frozen teacher (the
 *               real score, optionally behind CFG) and the fake score; dmd adds lambda_reg times
 *               the L2 regression loss on the stored pairs (dmd-pairs.ts, Eq. 9).
 *   fake score  `fakeUpdates` updates (dmd 1; dmd2 5: the two time-scale rule, Yin et al. 2024,
 *               Sec. 4.2): the teacher's own denoising objective on fresh samples of G, detached (Eq. 6).
 *
 * dmd2 with ganWeight > 0 adds the GAN head (dmd-gan.ts; Yin et al. 2024, Sec. 4.3): a classifier on
 * the fake score's bottleneck features (its weights attached to the fake score as `gan_head`, so its
 * optimizer and checkpoint file hold them) tells noised real data (the teacher's training data, read
 * by the trainer's loader) from noised samples of G. The fake score's loss adds ganDiscWeight x its
 * logistic loss, the generator's ganWeight x the non-saturating generator loss. With ganWeight 0 the
 * stage is exactly the one without a head: no data is read and no random number is drawn for it.
 *
 * Both networks start from the teacher's weights. G is read with the student parameterization
 * (v or x0) at sigma_max; the fake score keeps the teacher's (eps). The student checkpoint records
 * `sampling: ddim, trailing, 1 step`, so `diffuse sample STUDENT` and the yardstick run it in one
 * evaluation. Class labels are uniform over the classes, with the teacher's label dropout to the
 * null class unless the real score is guided (then the scale is built into the student).
 *
 * @example
 *   const task = DmdTask.create({ plan, rounds: 1, options, teacherDir: 'models/fashion-mnist', out: 'runs/dmd2/dmd2' });
 *   await task.run();  // runs/dmd2/dmd2/checkpoint.json: diffuse sample runs/dmd2/dmd2
 *   task.dispose();
 */
import { Generator } from '../engine/random';
import { setNumThreads } from '../engine/runtime';
import { noGrad } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { Adam } from '../optim/adam';
import { buildDenoiser, buildLoss, buildNetwork, buildSchedule, deriveSeed, DenoiserNet, loadTrainData, NetworkSpec, prediction, TrainData, TrainLoss } from '../training/build';
import { CheckpointMeta, checkpointJsonPath, loadModel, readCheckpointMeta } from '../training/checkpoint';
import { ConfigError, TrainConfig } from '../training/config';
import { CheckpointFormat, LoopCheckpoint, Phase, TrainingLoop, TrainPart } from '../training/loop';
import { UNet } from '../models/unet';
import { discreteSigma } from '../training/sigma-sampling';
import { AddHeads } from './add';
import { distributionMatchingLoss, dmdSigma, generateOneStep, regressionLoss } from './dmd';
import { bottleneckChannels, bottleneckClassifier, classifyNoised, DMD2_GAN_DISC_WEIGHT, ganDiscriminatorLoss, ganGeneratorLoss } from './dmd-gan';
import { Pairs, readPairs, teacherDenoiser } from './dmd-pairs';
import { DistillationRecord, GUIDANCE_CONVENTION } from './record';
import { readStageCheckpoint, StageSetup, studentCheckpointFormat, studentConfig, writeStudentPreviews } from './task';

/** The fake score's updates per generator update when the option is null: dmd 1 (Yin et al. 2023), dmd2 5 (Yin et al. 2024, Sec. 4.2). */
export function fakeUpdatesOf(o: { method: string; fakeUpdates: number | null }): number {
  return o.fakeUpdates ?? (o.method === 'dmd2' ? 5 : 1);
}

/** A dmd or dmd2 stage on the shared loop (see the module comment). */
export class DmdTask extends TrainingLoop<CheckpointMeta> {
  readonly setupInfo: StageSetup;
  readonly config: TrainConfig;
  readonly spec: NetworkSpec;
  /** The generator G (the student). */
  readonly net: DenoiserNet;
  /** The fake score network (with ganWeight > 0, the GAN head is its child `gan_head`). */
  readonly fake: DenoiserNet;
  /** dmd2's GAN head (null: off). */
  readonly ganHead: AddHeads | null = null;
  readonly record: DistillationRecord;
  readonly #teacher: ReturnType<typeof loadModel>;
  readonly #pairs: Pairs | null;
  readonly #student: Denoiser;
  /** The teacher's training data (only with the GAN head: its real samples). */
  readonly #data: TrainData | null = null;

  private constructor(s: StageSetup, teacher: ReturnType<typeof loadModel>, pairs: Pairs | null, run: { log?: NodeJS.WritableStream | null; handleSigint?: boolean }) {
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
    this.#pairs = pairs;
    const tm = teacher.meta;
    const bad = (why: string) => new ConfigError('teacher', `${s.teacherDir}: ${why}`);
    const schedule = buildSchedule(tm.config);
    if (!schedule || prediction(tm.config.objective) === null) throw bad(`dmd here needs a discrete-time (eps, x0 or v) teacher, got ${tm.config.objective}`);
    if (tm.distillation) throw bad(`is a distilled student (${tm.distillation.method}); distil its teacher`);
    if (tm.sampleShape.length !== 3) throw bad('dmd here distils image models');
    const guided = o.guidance !== null;
    if (pairs) checkPairs(pairs, s, tm, schedule.sigmas[schedule.T - 1]);

    this.spec = tm.network;
    this.config = studentConfig(s, tm, { steps: plan.steps, sampleSteps: 1, guided });
    if (o.threads !== null) setNumThreads(o.threads);
    this.record = {
      method: o.method,
      stage: 'dmd',
      round: 1,
      rounds: 1,
      parameterization: o.parameterization,
      teacher: { checkpoint: s.teacherDir, step: tm.step, objective: tm.config.objective, steps: pairs ? pairs.manifest.steps : null },
      sampling: { sampler: 'ddim', grid: 'trailing', steps: 1 },
      guidance: { convention: GUIDANCE_CONVENTION, teacherScale: o.guidance, embedded: null },
    };

    const gen = new Generator(deriveSeed(o.seed, 300));
    const dropoutGen = new Generator(deriveSeed(o.seed, 301));
    const fresh = () => {
      const net = buildNetwork(this.spec, { generator: new Generator(0), dropoutGenerator: dropoutGen });
      net.loadStateDict(teacher.net.stateDict()); // both start from the teacher's weights
      net.train();
      return net;
    };
    this.net = fresh();
    this.fake = fresh();
    this.#student = buildDenoiser(this.config, this.net);
    const fakeD = buildDenoiser(tm.config, this.fake); // the teacher's parameterization and objective
    const fakeLoss: TrainLoss = buildLoss(tm.config, fakeD, this.fake);
    const realD = teacherDenoiser(teacher, o.guidance, s.teacherDir);
    const sampleSigma = dmdSigma(schedule);
    const sigmaMax = schedule.sigmas[schedule.T - 1];
    const K = tm.classNames?.length ?? null;
    const shape = tm.sampleShape;
    const gan = o.ganWeight > 0 ? this.#ganHead(s, tm, schedule, gen) : null;
    this.ganHead = gan?.head ?? null;
    this.#data = gan?.data ?? null;

    /** A batch of G's inputs: z ~ N(0, I) and labels uniform over the classes (dropped to the null class at the teacher's rate unless guided). */
    const inputs = (): { z: Tensor; cond: Conditioning } => {
      const B = o.batchSize;
      const z = gen.randn([B, ...shape]);
      if (K === null) return { z, cond: {} };
      const labels = gen.randint(0, K, [B]);
      return { z, cond: { classLabels: guided ? labels : labels.maskedFill(gen.rand([B]).lt(this.config.labelDropout), K) } };
    };
    const generatorLoss = () => {
      const { z, cond } = inputs();
      const x0 = generateOneStep(this.#student, z, sigmaMax, cond);
      const { loss } = distributionMatchingLoss(x0, realD, fakeD, { sampleSigma, generator: gen, cond });
      if (gan) return loss.add(gan.generatorLoss(x0, cond).mul(o.ganWeight)); // Yin et al. 2024, Sec. 4.3: L_DMD + lambda_G L_G
      if (!pairs) return loss;
      const idx = gen.randint(0, pairs.manifest.n, [o.batchSize]);
      const pc: Conditioning = pairs.labels ? { classLabels: pairs.labels.indexSelect(0, idx) } : {};
      const reg = regressionLoss(generateOneStep(this.#student, pairs.noise.indexSelect(0, idx), sigmaMax, pc), pairs.images.indexSelect(0, idx));
      return loss.add(reg.mul(o.regWeight)); // Yin et al. 2023, Eq. 9: L_KL + lambda_reg L_reg
    };
    const fakeScoreLoss = (k: number, i: number) => {
      const { z, cond } = inputs();
      const x0 = noGrad(() => generateOneStep(this.#student, z, sigmaMax, cond)); // G's samples, detached
      const loss = fakeLoss(x0, gen, cond).loss; // Yin et al. 2023, Eq. 6
      return gan ? loss.add(gan.discriminatorLoss(x0, cond, k * fakeUpdatesOf(o) + i).mul(o.ganDiscWeight ?? DMD2_GAN_DISC_WEIGHT)) : loss; // + lambda_D L_D
    };

    const part = (name: string, module: DenoiserNet, files: { weights: string; optimizer: string }): TrainPart => ({
      name,
      module,
      optimizer: new Adam(module.namedParameters(), { lr: o.lr }),
      lr: () => o.lr, // constant, as DMD and DMD2
      gradClip: tm.config.gradClip,
      files,
      metadata: { network: JSON.stringify(this.spec) },
    });
    const generator = part('generator', this.net, { weights: 'model', optimizer: 'optimizer' });
    const fakeScore = part('fake score', this.fake, { weights: 'fake', optimizer: 'fake-optimizer' });
    const phases: Phase[] = [
      { name: 'generator', part: generator, loss: generatorLoss },
      { name: 'fake score', part: fakeScore, repeat: fakeUpdatesOf(o), loss: fakeScoreLoss },
    ];
    this.setup({ parts: [generator, fakeScore], phases, generators: { train: gen, dropout: dropoutGen } });
  }

  /**
   * dmd2's GAN head (module comment): attached to the fake score as `gan_head` (before the fake
   * score's optimizer is built, so it trains the head too), and its two losses. The real samples of
   * the fake-score update `j` (step k, update i: j = k fakeUpdates + i) are the data's batch j.
   */
  #ganHead(s: StageSetup, tm: CheckpointMeta, schedule: NonNullable<ReturnType<typeof buildSchedule>>, gen: Generator) {
    const o = s.options;
    if (!(this.fake instanceof UNet)) throw new ConfigError('ganWeight', `${o.ganWeight}: the GAN head reads a U-Net's bottleneck features; the teacher ${s.teacherDir} is a ${tm.network.type}`);
    const fake = this.fake;
    const head = fake.attach('gan_head', new AddHeads([bottleneckChannels(fake)], { numClasses: null, generator: new Generator(deriveSeed(o.seed, 302)) })); // class-conditional through the U-Net's embedding
    head.train();
    const data = loadTrainData(this.config); // the trainer's loader: batch j is a pure function of (seed, j)
    const D = bottleneckClassifier(fake, head, schedule);
    const sampleSigma = discreteSigma(schedule); // as the denoising loss draws it (DMD2's diffusion GAN over all timesteps)
    const K = tm.classNames?.length ?? null;
    const guided = o.guidance !== null;
    return {
      head,
      data,
      generatorLoss: (x0: Tensor, cond: Conditioning) => ganGeneratorLoss(classifyNoised(D, x0, { sampleSigma, generator: gen, labels: cond.classLabels })),
      discriminatorLoss: (x0: Tensor, cond: Conditioning, j: number) => {
        const { x, labels } = data.batchAt(j);
        const real = K === null || !labels ? undefined : guided ? labels : labels.maskedFill(gen.rand([x.dim(0)]).lt(this.config.labelDropout), K); // the generator's label distribution
        return ganDiscriminatorLoss(classifyNoised(D, x, { sampleSigma, generator: gen, labels: real }), classifyNoised(D, x0, { sampleSigma, generator: gen, labels: cond.classLabels }));
      },
    };
  }

  /** Loads the teacher (and dmd's pairs) and builds the stage; with `resume`, restores the stage's checkpoint in setup.out. */
  static create(s: StageSetup, run: { resume?: boolean; log?: NodeJS.WritableStream | null; handleSigint?: boolean } = {}): DmdTask {
    const o = s.options;
    if (o.method === 'dmd' && o.pairs === null) throw new ConfigError('pairs', 'dmd needs the regression pairs (diffuse distill dmd-pairs --out DIR, then --pairs DIR)');
    if (o.method === 'dmd2' && o.pairs !== null) throw new ConfigError('pairs', `${o.pairs}: dmd2 has no regression loss (Yin et al. 2024, Sec. 4.1)`);
    if (readCheckpointMeta(s.teacherDir).latent)
      throw new ConfigError('teacher', `${s.teacherDir}: a latent diffusion model; ${o.method} here distils pixel teachers (lcm, cd, ct, ict, progressive, guided and add take latent ones)`);
    const teacher = loadModel(s.teacherDir);
    let pairs: Pairs | null = null;
    let t: DmdTask;
    try {
      pairs = o.pairs === null ? null : readPairs(o.pairs);
      t = new DmdTask(s, teacher, pairs, run);
    } catch (e) {
      pairs?.dispose();
      teacher.net.dispose();
      throw e;
    }
    if (run.resume) {
      try {
        t.restore(checkpointJsonPath(t.out), readStageCheckpoint(t.out, t.record, t.spec) as unknown as LoopCheckpoint);
      } catch (e) {
        t.dispose();
        throw e;
      }
    }
    return t;
  }

  override get out(): string {
    return this.setupInfo.out;
  }

  describe(): string {
    const o = this.setupInfo.options;
    const r = this.record;
    const reg = this.#pairs ? ` + ${o.regWeight} x L2 regression on ${this.#pairs.manifest.n} pairs (${this.#pairs.manifest.sampler}, ${this.#pairs.manifest.steps} steps)` : '';
    const head = this.ganHead;
    const gan = head
      ? ` + ${o.ganWeight} x GAN loss of a head on the fake score's bottleneck (${head.numParameters().toLocaleString('en-US')} parameters; fake-score side weight ${o.ganDiscWeight ?? DMD2_GAN_DISC_WEIGHT})`
      : '';
    return (
      `${o.method}: one-step generator (${o.parameterization} at sigma_max) by distribution matching${reg}${gan}, ${fakeUpdatesOf(o)} fake-score update(s) per generator update; ` +
      `teacher ${this.setupInfo.teacherDir} (step ${this.#teacher.meta.step})${r.guidance.teacherScale !== null ? ` with cfg w = ${r.guidance.teacherScale}` : ''}; ` +
      `2 x ${this.net.numParameters().toLocaleString('en-US')} parameters${head ? ' (+ the head)' : ''}; batch ${o.batchSize}, ${this.setupInfo.plan.steps} steps, lr ${o.lr} (constant); out ${this.out}`
    );
  }

  protected checkpointFormat(): CheckpointFormat {
    return studentCheckpointFormat({ config: this.config, spec: this.spec, net: this.net, teacher: this.#teacher.meta, record: this.record, setup: this.setupInfo });
  }

  protected override writePreviews(): string[] {
    return writeStudentPreviews({ net: this.net, denoiser: this.#student, config: this.config, record: this.record, teacher: this.#teacher.meta }, this.out);
  }

  /** Frees the generator, the fake score (and its GAN head), their optimizers, the teacher, the pairs and the data. */
  dispose(): void {
    this.disposeParts();
    this.#data?.dispose();
    this.#teacher.net.dispose();
    this.#pairs?.dispose();
  }
}

/** The pairs must come from this teacher, at this guidance, from this sigma_max, in this shape. */
function checkPairs(p: Pairs, s: StageSetup, tm: CheckpointMeta, sigmaMax: number): void {
  const m = p.manifest;
  const fail = (why: string) => new ConfigError('pairs', `${s.options.pairs}: ${why}`);
  if (m.teacher.step !== tm.step || JSON.stringify(m.shape) !== JSON.stringify(tm.sampleShape))
    throw fail(`were made by ${m.teacher.checkpoint} at step ${m.teacher.step}, not by this teacher ${s.teacherDir} (step ${tm.step})`);
  if (m.guidance !== s.options.guidance) throw fail(`were made with guidance ${m.guidance}, this run's real score has ${s.options.guidance}`);
  if (Math.abs(m.sigmaMax - sigmaMax) > 1e-9 * sigmaMax)
    throw fail(`start at sigma_max ${m.sigmaMax}, the generator reads ${sigmaMax} (make them on a grid that starts at the teacher's largest sigma)`);
}
