/**
 * A distillation run: its stages in order, each a DistillTask on the shared loop with its own
 * folder under `out` (an ordinary student checkpoint), the previous stage's student as the next
 * stage's teacher. `distill.json` in `out` holds the options and the plan, so a run stopped in any
 * stage (Ctrl-C, a crash) resumes there: finished stages are kept, a stage with a checkpoint
 * continues from it bit for bit, the rest start when their teacher is done.
 *
 *   progressive: steps-<N/2>, steps-<N/4>, ..., steps-<studentSteps>     (Salimans & Ho 2022)
 *   guided:      w-conditioned (stage 1), then the same rounds of it      (Meng et al. 2023)
 *   cd, ct, ict: one stage, folder <method>                              (Song et al. 2023; Song & Dhariwal 2023)
 *   lcm:         one stage, folder lcm (+ lcm/lora with --lora-rank)       (Luo et al. 2023)
 *   dmd, dmd2:   one stage, folder <method>: a one-step generator        (Yin et al. 2023, 2024; dmd-task.ts)
 *   add:         one stage, folder add                                   (Sauer et al. 2023)
 *
 * @example
 *   const r = await distill(resolveDistillOptions({ method: 'progressive', teacher: 'models/fashion-mnist', out: 'runs/pd', teacherSteps: 16, studentSteps: 4 }));
 *   r.student;                                   // 'runs/pd/steps-4': diffuse sample runs/pd/steps-4
 *   await distill(options, { resume: true });    // continues a stopped run
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError } from '../training/config';
import { writeFileAtomic } from '../util/image';
import { halvingRounds } from './progressive';
import { CD_SOLVERS } from './consistency';
import { DISTILL_METHODS, isConsistencyMethod, isDmdMethod, STUDENT_PARAMETERIZATIONS } from './record';
import { DISTILL_DEFAULTS, DistillOptions, DistillTask, DMD_LR, StagePlan } from './task';
import { DmdTask } from './dmd-task';

export const DISTILL_RUN_FILE = 'distill.json';
const RUN_FORMAT = 'diffuse-distill-run';

/** The stages of a run, in order. */
export function planStages(
  o: Pick<DistillOptions, 'method' | 'teacherSteps' | 'studentSteps' | 'roundSteps' | 'guidanceSteps' | 'consistencySteps' | 'discretization' | 'dmdSteps' | 'adversarialSteps'>,
): StagePlan[] {
  if (isDmdMethod(o.method)) return [{ name: o.method, kind: 'dmd', round: 1, teacherSteps: null, studentSteps: 1, steps: o.dmdSteps }];
  if (o.method === 'add') return [{ name: 'add', kind: 'adversarial', round: 1, teacherSteps: null, studentSteps: o.studentSteps, steps: o.adversarialSteps }];
  if (isConsistencyMethod(o.method))
    return [{ name: o.method, kind: 'consistency', round: 1, teacherSteps: o.method === 'cd' ? o.discretization : null, studentSteps: o.studentSteps, steps: o.consistencySteps }]; // lcm: the grid is T / skip + 1 points
  const rounds: StagePlan[] = halvingRounds(o.teacherSteps, o.studentSteps).map((n, i) => ({
    name: `steps-${n / 2}`,
    kind: 'round',
    round: i + 1,
    teacherSteps: n,
    studentSteps: n / 2,
    steps: o.roundSteps,
  }));
  if (o.method === 'progressive') return rounds;
  return [{ name: 'w-conditioned', kind: 'guidance', round: 0, teacherSteps: null, studentSteps: o.teacherSteps, steps: o.guidanceSteps }, ...rounds];
}

/** Options from a partial object: defaults filled in, each value checked (errors name the option and the value). */
export function resolveDistillOptions(partial: Partial<DistillOptions> & Pick<DistillOptions, 'method' | 'teacher' | 'out'>): DistillOptions {
  const o: DistillOptions = { ...DISTILL_DEFAULTS, guidanceRange: [...DISTILL_DEFAULTS.guidanceRange], ...(isDmdMethod(partial.method) ? { lr: DMD_LR } : {}), ...partial };
  const fail = (key: string, why: string) => new ConfigError(key, `${why}, got ${JSON.stringify((o as unknown as Record<string, unknown>)[key])}`);
  if (!(DISTILL_METHODS as readonly string[]).includes(o.method)) throw fail('method', `expected ${DISTILL_METHODS.join(' or ')}`);
  if (!(STUDENT_PARAMETERIZATIONS as readonly string[]).includes(o.parameterization)) throw fail('parameterization', "expected 'v' or 'x0' (eps fails at few steps: Salimans & Ho 2022, Sec. 4)");
  for (const k of ['teacherSteps', 'studentSteps', 'roundSteps', 'guidanceSteps', 'batchSize', 'consistencySteps', 'adversarialSteps'] as const)
    if (!(Number.isSafeInteger(o[k]) && o[k] >= 1)) throw fail(k, 'expected a positive integer');
  if (!(Number.isSafeInteger(o.seed) && o.seed >= 0)) throw fail('seed', 'expected an integer >= 0');
  if (!(Number.isSafeInteger(o.checkpointEvery) && o.checkpointEvery >= 0)) throw fail('checkpointEvery', 'expected an integer >= 0');
  if (!(Number.isFinite(o.lr) && o.lr > 0)) throw fail('lr', 'expected a positive number');
  if (o.guidance !== null && !Number.isFinite(o.guidance)) throw fail('guidance', 'expected a number or null');
  if (o.guidance !== null && o.method === 'guided') throw fail('guidance', 'is for progressive distillation of a guided teacher; guided distillation learns every w of guidanceRange');
  const [lo, hi] = o.guidanceRange;
  if (!(o.guidanceRange.length === 2 && Number.isFinite(lo) && Number.isFinite(hi) && lo <= hi)) throw fail('guidanceRange', 'expected [wMin, wMax] with wMin <= wMax');
  if (o.method !== 'lcm') for (const k of ['loraRank', 'loraAlpha'] as const) if (o[k] !== null) throw fail(k, 'is for lcm (LCM-LoRA); expected null');
  if (o.method === 'lcm') return checkLcm(o, fail);
  if (isDmdMethod(o.method)) {
    if (!(Number.isSafeInteger(o.dmdSteps) && o.dmdSteps >= 1)) throw fail('dmdSteps', 'expected a positive integer');
    if (!(o.fakeUpdates === null || (Number.isSafeInteger(o.fakeUpdates) && o.fakeUpdates >= 1))) throw fail('fakeUpdates', 'expected a positive integer or null');
    if (!(Number.isFinite(o.regWeight) && o.regWeight >= 0)) throw fail('regWeight', 'expected a number >= 0');
    if (o.method === 'dmd' && typeof o.pairs !== 'string') throw fail('pairs', 'dmd needs the regression pairs folder (diffuse distill dmd-pairs)');
    if (o.method === 'dmd2' && o.pairs !== null) throw fail('pairs', 'dmd2 has no regression loss (Yin et al. 2024, Sec. 4.1): expected null');
    if (!(Number.isFinite(o.ganWeight) && o.ganWeight >= 0)) throw fail('ganWeight', 'expected a number >= 0 (0: no GAN head)');
    if (!(o.ganDiscWeight === null || (Number.isFinite(o.ganDiscWeight) && o.ganDiscWeight > 0))) throw fail('ganDiscWeight', 'expected a number > 0 or null');
    if (o.method === 'dmd' && o.ganWeight !== 0) throw fail('ganWeight', "the GAN head is DMD2's (Yin et al. 2024, Sec. 4.3), dmd has none: expected 0");
    if (o.method === 'dmd' && o.ganDiscWeight !== null) throw fail('ganDiscWeight', "the GAN head is DMD2's (Yin et al. 2024, Sec. 4.3), dmd has none: expected null");
    if (o.ganWeight === 0 && o.ganDiscWeight !== null) throw fail('ganDiscWeight', 'weighs the GAN head, which is on only with ganWeight > 0: expected null');
    return o;
  }
  if (o.method === 'add') {
    if (o.studentSteps > 4) throw fail('studentSteps', 'ADD trains a student for 1 to 4 steps (Sauer et al. 2023): expected at most 4');
    if (o.guidance !== null) throw fail('guidance', 'is not for ADD here (it distils an unguided teacher)');
    if (!(Number.isFinite(o.distillWeight) && o.distillWeight >= 0)) throw fail('distillWeight', 'expected a number >= 0');
    if (!(Number.isFinite(o.r1Gamma) && o.r1Gamma >= 0)) throw fail('r1Gamma', 'expected a number >= 0');
    return o;
  }
  if (isConsistencyMethod(o.method)) {
    if (o.parameterization !== 'v') throw fail('parameterization', 'a consistency student is read with the v coefficients with its boundary built in (vConsistencyCoefficients): expected v');
    if (o.guidance !== null) throw fail('guidance', 'is not for consistency models here (consistency distillation of a guided teacher is LCM)');
    if (!(Number.isSafeInteger(o.discretization) && o.discretization >= 2)) throw fail('discretization', 'expected an integer >= 2');
    if (!(CD_SOLVERS as readonly string[]).includes(o.solver)) throw fail('solver', `expected ${CD_SOLVERS.join(' or ')}`);
    if (!(Number.isFinite(o.mu) && o.mu >= 0 && o.mu < 1)) throw fail('mu', 'expected a number in [0, 1)');
    if (!(o.sigmaMin === null || (Number.isFinite(o.sigmaMin) && o.sigmaMin > 0))) throw fail('sigmaMin', 'expected a number > 0 or null');
    if (!(o.distance === null || o.distance === 'l2' || o.distance === 'pseudo-huber')) throw fail('distance', "expected 'l2', 'pseudo-huber' or null");
    return o;
  }
  try {
    halvingRounds(o.teacherSteps, o.studentSteps);
  } catch (e) {
    throw new ConfigError('studentSteps', `${o.studentSteps}: ${(e as Error).message.replace('halvingRounds: ', '')}`);
  }
  return o;
}

/** The checks of an lcm run's options (resolveDistillOptions). */
function checkLcm(o: DistillOptions, fail: (key: string, why: string) => ConfigError): DistillOptions {
  if (!(Number.isSafeInteger(o.skip) && o.skip >= 1)) throw fail('skip', 'expected a positive integer (teacher timesteps per ODE step)');
  if (o.sigmaMin !== null) throw fail('sigmaMin', "is the teacher's first noise level for lcm (its skipping grid starts at timestep 0); expected null");
  if (!(Number.isFinite(o.mu) && o.mu >= 0 && o.mu < 1)) throw fail('mu', 'expected a number in [0, 1)');
  if (!(o.distance === null || o.distance === 'l2' || o.distance === 'pseudo-huber')) throw fail('distance', "expected 'l2', 'pseudo-huber' or null");
  if (o.loraRank !== null && !(Number.isSafeInteger(o.loraRank) && o.loraRank >= 1)) throw fail('loraRank', 'expected a positive integer or null');
  if (o.loraAlpha !== null && !(Number.isFinite(o.loraAlpha) && o.loraAlpha > 0)) throw fail('loraAlpha', 'expected a number > 0 or null');
  if (o.loraRank !== null && o.guidance === null) throw fail('guidance', 'LCM-LoRA bakes one w into the adapter (the base network has no w embedding, docs/lora.md): expected a number');
  return o;
}

/** How the run went. */
export interface DistillResult {
  status: 'done' | 'interrupted';
  /** Every stage: its folder, the steps taken, and its training speed (images/s; null when no step was taken in this call or before). */
  stages: { name: string; dir: string; step: number; imagesPerSecond: number | null }[];
  /** The last stage's folder: the final student. */
  student: string;
}

/**
 * Runs (or with `resume`, continues) the stages of `o` (see the module comment). A new run refuses an
 * `out` that holds one already; a resumed one takes its options from distill.json.
 */
export async function distill(o: DistillOptions, run: { resume?: boolean; log?: NodeJS.WritableStream | null; handleSigint?: boolean } = {}): Promise<DistillResult> {
  const file = path.join(o.out, DISTILL_RUN_FILE);
  const plan = planStages(o);
  if (run.resume) {
    if (!fs.existsSync(file)) throw new ConfigError('resume', `${o.out} holds no distillation run (no ${DISTILL_RUN_FILE})`);
  } else {
    if (fs.existsSync(file)) throw new ConfigError('out', `${o.out} already holds a distillation run; continue it with --resume ${o.out}, or choose another --out`);
    fs.mkdirSync(o.out, { recursive: true });
    writeFileAtomic(file, JSON.stringify({ format: RUN_FORMAT, formatVersion: 1, options: o, stages: plan }, null, 1) + '\n');
  }
  const stages: DistillResult['stages'] = [];
  for (let i = 0; i < plan.length; i++) {
    const p = plan[i];
    const dir = path.join(o.out, p.name);
    const teacherDir = i === 0 ? o.teacher : path.join(o.out, plan[i - 1].name);
    const has = fs.existsSync(path.join(dir, 'checkpoint.json'));
    const setup = { plan: p, rounds: plan.filter((s) => s.kind !== 'guidance').length, options: o, teacherDir, out: dir };
    const how = { resume: has, log: run.log, handleSigint: run.handleSigint };
    const task = p.kind === 'dmd' ? DmdTask.create(setup, how) : DistillTask.create(setup, how);
    try {
      const r = await task.run();
      stages.push({ name: p.name, dir, step: r.step, imagesPerSecond: task.seconds > 0 ? (r.step * o.batchSize) / task.seconds : null });
      if (r.status === 'interrupted') return { status: 'interrupted', stages, student: dir };
    } finally {
      task.dispose();
    }
  }
  return { status: 'done', stages, student: stages[stages.length - 1].dir };
}

/** The options a run was started with (its distill.json in `dir`). */
export function readDistillRun(dir: string): DistillOptions {
  const file = path.join(dir, DISTILL_RUN_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError('resume', `${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found: this folder holds no distillation run' : `unreadable (${(e as Error).message})`}`);
  }
  const r = raw as { format?: unknown; options?: DistillOptions };
  if (r.format !== RUN_FORMAT || !r.options) throw new ConfigError('resume', `${file}: not a Diffuse distillation run (format ${JSON.stringify(r.format)})`);
  return resolveDistillOptions({ ...r.options, out: dir });
}
