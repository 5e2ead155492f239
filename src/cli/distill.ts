/**
 * `diffuse distill progressive|guided|cd|ct|ict|lcm|add|dmd|dmd2`: distils a teacher checkpoint into a few-step student
 * (src/distillation/), one student checkpoint per stage, with checkpoints, resume, Ctrl-C and
 * progress from the shared training loop; `diffuse distill yardstick` measures students against
 * their teacher (src/distillation/yardstick.ts).
 *
 * @example
 *   diffuse distill progressive --teacher models/fashion-mnist --out runs/pd --teacher-steps 64 --student-steps 4
 *   diffuse distill cd --out runs/cd --consistency-steps 500
 *   diffuse distill --resume runs/pd
 */
import * as fs from 'node:fs';
import { INTERRUPTED_EXIT_CODE } from '../training/interrupt';
import { DISTILL_DEFAULTS, DistillOptions, DMD_LR } from '../distillation/task';
import { distill, planStages, readDistillRun, resolveDistillOptions } from '../distillation/run';
import { DISTILL_METHODS, DistillMethod, GUIDANCE_CONVENTION, isConsistencyMethod, isDmdMethod, STUDENT_PARAMETERIZATIONS } from '../distillation/record';
import { dmdPairsCommand } from './dmd-pairs';
import { CD_SOLVERS } from '../distillation/consistency';
import { LCM_LR } from '../distillation/lcm';
import { DMD2_GAN_DISC_WEIGHT, DMD2_GAN_WEIGHT } from '../distillation/dmd-gan';
import { choiceFlag, intFlag, numberFlag, parseArgs, parseNumber, ParsedArgs, table, UsageError } from './args';
import { shippedModelDir } from './sample';
import { yardstickCommand, yardstickHelpRows, YARDSTICK_FLAGS } from './yardstick';

const D = DISTILL_DEFAULTS;

export function distillHelp(): string {
  return `Usage: diffuse distill progressive|guided|cd|ct|ict|lcm|add|dmd|dmd2 [--teacher DIR] [--out DIR] [options]
       diffuse distill --resume DIR
       diffuse distill dmd-pairs [--teacher DIR] --n N --out DIR [options]
       diffuse distill yardstick STUDENT... [--teacher DIR] [options]

Distils a teacher into a student that samples in a few steps (docs/distillation.md). The
teacher is any discrete-time (eps, x0 or v) checkpoint diffuse sample loads (default: the
shipped models/fashion-mnist), frozen; the student is the same network started from the
teacher's weights and read with an x0 or v parameterization. Each stage writes an ordinary
checkpoint under --out that diffuse sample and diffuse eval use with the steps, sampler
(ddim) and grid (trailing) it was distilled for.

  progressive  Salimans & Ho 2022, Algorithm 2: each round a student learns to take two
               teacher DDIM steps in one (target x~ in closed form, weight max(SNR, 1), lr
               annealed to 0 within the round, no EMA); rounds halve the steps, folders
               steps-<N/2> ... steps-<student steps>, each round's student the next teacher.
  guided       Meng et al. 2023: stage 1 (folder w-conditioned) a student that embeds the
               guidance weight w learns the teacher's classifier-free guided output for w in
               --guidance-range; stage 2 distils it progressively. One student serves every w:
               diffuse sample STUDENT --guidance W (one evaluation per step).
  cd           Song et al. 2023, consistency distillation: a consistency model f (f(x, sigma_min)
               = x built in) learns f(x_{n+1}, sigma_{n+1}) = f-(x^_n, sigma_n), x^_n one teacher
               ODE step (--solver) between adjacent points of an N-point Karras grid over the
               teacher's sigmas, f- an EMA (--mu) of the student. Folder cd; sampled with
               --sampler consistency (Algorithm 1) at --student-steps points.
  ct           consistency training: no teacher network (it only gives the starting weights),
               x^_n = x0 + sigma_n z with the same z; N(k) from 2 to 150, target EMA mu(k).
  ict          improved CT (Song & Dhariwal 2023): no EMA target, N(k) doubling from 10 to
               1280, log-normal index, weights 1 / (sigma_{n+1} - sigma_n), pseudo-Huber loss
               on the whole sample (c = 0.00054 sqrt(d)).
  lcm          Luo et al. 2023, latent consistency model (pixel or latent teachers): cd of the
               teacher under classifier-free guidance, one DDIM step over --skip teacher
               timesteps (grid 0, k-1, 2k-1, ..., T-1), the student keeping the teacher's
               prediction with f(x, sigma_min) = x on top. w in --guidance-range is embedded
               (diffuse sample STUDENT --guidance W --steps N), or --guidance W bakes one in.
               --lora-rank R: LCM-LoRA, only adapters on the frozen teacher train (needs
               --guidance W); folder lcm/lora holds the adapter, which makes any model
               fine-tuned from the teacher a few-step sampler: diffuse sample MODEL --lora DIR.
  dmd          Yin et al. 2023: a one-step generator G (the teacher's network read at sigma_max)
               trained by distribution matching, grad = (D_fake - D_real) / mean|x0 - D_real| at
               a random t, D_real the frozen teacher (--guidance W: behind CFG), D_fake a fake
               score network trained online on G's samples; plus --reg-weight times an L2
               regression loss (LPIPS in the paper) on the pairs of --pairs DIR (make them with
               diffuse distill dmd-pairs). Folder dmd; sampled in 1 step.
  dmd2         Yin et al. 2024: no regression loss, --fake-updates fake-score updates per
               generator update (two time-scale). Folder dmd2. --gan-weight L adds the GAN head:
               a classifier on the fake score's bottleneck features tells noised training data
               from noised samples of G (logistic loss, weight --gan-disc-weight, on the fake
               score's side); the generator adds L times the non-saturating GAN loss.
  add          Sauer et al. 2023, adversarial diffusion distillation: a 1-4 step student
               (folder add; its first point, sigma_max, pure noise) trained with a hinge GAN
               loss against heads on the teacher U-Net's frozen encoder features (R1 penalty
               --r1-gamma) plus --distill-weight times the teacher's x0 estimate of the
               re-noised student output, weighted alpha-bar_t. Sampled by denoising and
               re-noising (--sampler consistency) on the --student-steps trailing grid.

Guidance scales are Diffuse's: ${GUIDANCE_CONVENTION} (Meng et al.'s w is ours
minus 1); every student records it, and a checkpoint with another convention is refused.
Ctrl-C writes a checkpoint and exits (130); --resume continues the run where it stopped.

${table([
  ['--teacher DIR', 'the teacher checkpoint (default: the shipped models/fashion-mnist)'],
  ['--out DIR', 'the run folder (default runs/distill-METHOD)'],
  ['--parameterization P', `what the student predicts: ${STUDENT_PARAMETERIZATIONS.join(' or ')} (default ${D.parameterization})`],
  ['--teacher-steps N', `the teacher's DDIM steps the first round distils (default ${D.teacherSteps}; guided: stage 1 students sample at N)`],
  ['--student-steps N', `the final student's steps; N / it a power of 2 (default ${D.studentSteps}; cd, ct, ict: consistency sampling points, default 1; lcm: 4)`],
  ['--round-steps K', `optimizer steps per progressive round (default ${D.roundSteps})`],
  ['--guidance-steps K', `guided: optimizer steps of stage 1 (default ${D.guidanceSteps})`],
  ['--guidance W', 'progressive, lcm, dmd, dmd2: distil the teacher under classifier-free guidance w = W (built into the student)'],
  ['--guidance-range LO,HI', `guided, lcm: the w the student learns (default ${D.guidanceRange.join(',')}, Meng et al.'s [0, 4])`],
  ['--consistency-steps K', `cd, ct, ict, lcm: optimizer steps (default ${D.consistencySteps}; K of the N(k) curricula)`],
  ['--sigma-min S', "cd, ct, ict: the boundary f(x, S) = x and the grid's low end (default: the teacher's smallest sigma)"],
  ['--discretization N', `cd: points of the Karras grid (rho = 7) over [sigma-min, the teacher's largest sigma] (default ${D.discretization})`],
  ['--solver S', `cd: the teacher's ODE step, ${CD_SOLVERS.join(' or ')} (default ${D.solver})`],
  ['--mu M', `cd: the target network's EMA rate (default ${D.mu})`],
  ['--distance D', 'cd, ct, ict, lcm: l2 or pseudo-huber (default l2 for cd, ct and lcm, pseudo-huber for ict)'],
  ['--skip K', `lcm: teacher timesteps per ODE step, dividing T (default ${D.skip}, Luo et al.'s k)`],
  ['--lora-rank R', 'lcm: LCM-LoRA, train only rank-R adapters on the frozen teacher (needs --guidance W)'],
  ['--lora-alpha A', "lcm: the adapters' alpha (default R)"],
  ['--lora-targets LIST', `lcm: the adapted layers (default ${D.loraTargets}; docs/lora.md)`],
  ['--dmd-steps K', `dmd, dmd2: generator updates (default ${D.dmdSteps})`],
  ['--fake-updates N', 'dmd, dmd2: fake-score updates per generator update (default: dmd 1, dmd2 5)'],
  ['--pairs DIR', 'dmd: the regression pairs (diffuse distill dmd-pairs --out DIR)'],
  ['--reg-weight L', `dmd: lambda_reg, the regression loss's weight (default ${D.regWeight})`],
  ['--gan-weight L', `dmd2: the generator's weight of the GAN head's loss (default 0: no head; DMD2's ImageNet-64 script used ${DMD2_GAN_WEIGHT})`],
  ['--gan-disc-weight L', `dmd2 with --gan-weight: the fake score's weight of the head's discriminator loss (default ${DMD2_GAN_DISC_WEIGHT}, as DMD2's script)`],
  ['--adversarial-steps K', `add: optimizer steps, each a student and a discriminator update (default ${D.adversarialSteps})`],
  ['--distill-weight L', `add: lambda of L_adv + lambda L_distill (default ${D.distillWeight}, the paper's)`],
  ['--r1-gamma G', `add: the R1 penalty on the discriminator's inputs (default ${D.r1Gamma}; 0: none)`],
  ['--batch-size B', `images per step (default ${D.batchSize})`],
  [
    '--lr LR',
    `learning rate at the start of each stage, annealed linearly to 0 (default ${D.lr}; lcm: ${LCM_LR.full}, with --lora-rank ${LCM_LR.lora}, constant; dmd, dmd2: ${DMD_LR}, constant, both networks)`,
  ],
  ['--seed S', `seed of the batches, noise and w (default ${D.seed})`],
  ['--checkpoint-every K', `steps between checkpoints (default ${D.checkpointEvery}; 0: end of stage and Ctrl-C only)`],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['--resume DIR', 'continue the run in DIR (its options come from DIR/distill.json)'],
  ['-h, --help', 'this help'],
])}

Yardstick (diffuse distill yardstick STUDENT... --teacher DIR):
${table(yardstickHelpRows())}

Examples:
  diffuse distill progressive --teacher-steps 64 --student-steps 4 --out runs/pd
  diffuse sample runs/pd/steps-4 --class Bag                   # 4 steps, 4 evaluations
  diffuse distill guided --teacher-steps 16 --student-steps 4 --out runs/gd
  diffuse sample runs/gd/steps-4 --guidance 3                  # w = 3 in one pass per step
  diffuse distill cd --consistency-steps 500 --out runs/cd
  diffuse sample runs/cd/cd --steps 2                         # Algorithm 1 at 2 points, 2 evaluations
  diffuse distill lcm --consistency-steps 500 --out runs/lcm
  diffuse sample runs/lcm/lcm --guidance 3 --steps 2          # w = 3, 2 evaluations
  diffuse distill lcm --lora-rank 8 --guidance 3 --out runs/lcm-lora
  diffuse sample runs/finetuned --lora runs/lcm-lora/lcm/lora --steps 4
  diffuse distill dmd2 --dmd-steps 500 --out runs/dmd2
  diffuse distill dmd2 --gan-weight 3e-3 --out runs/dmd2-gan    # with the GAN head
  diffuse sample runs/dmd2/dmd2 --class Bag                   # 1 step, 1 evaluation
  diffuse distill dmd-pairs --n 10000 --out runs/pairs && diffuse distill dmd --pairs runs/pairs
  diffuse distill add --student-steps 4 --adversarial-steps 500 --out runs/add
  diffuse sample runs/add/add --steps 1                        # one evaluation
  diffuse distill yardstick runs/pd/steps-8 runs/pd/steps-4 --n 1000
`;
}

const RUN_FLAGS = {
  teacher: 'value',
  out: 'value',
  parameterization: 'value',
  'teacher-steps': 'value',
  'student-steps': 'value',
  'round-steps': 'value',
  'guidance-steps': 'value',
  guidance: 'value',
  'guidance-range': 'value',
  'batch-size': 'value',
  lr: 'value',
  seed: 'value',
  'checkpoint-every': 'value',
  'consistency-steps': 'value',
  'sigma-min': 'value',
  discretization: 'value',
  solver: 'value',
  mu: 'value',
  distance: 'value',
  skip: 'value',
  'lora-rank': 'value',
  'lora-alpha': 'value',
  'lora-targets': 'value',
  'dmd-steps': 'value',
  'fake-updates': 'value',
  pairs: 'value',
  'reg-weight': 'value',
  'gan-weight': 'value',
  'gan-disc-weight': 'value',
  'adversarial-steps': 'value',
  'distill-weight': 'value',
  'r1-gamma': 'value',
  threads: 'value',
  resume: 'value',
  help: 'switch',
} as const;

export async function distillCommand(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'yardstick') return yardstickCommand(argv.slice(1));
  if (argv[0] === 'dmd-pairs') return dmdPairsCommand(argv.slice(1));
  const args = parseArgs(argv, { ...RUN_FLAGS, ...(argv.includes('--help') || argv.includes('-h') ? YARDSTICK_FLAGS : {}) });
  if (args.flags.has('help')) {
    process.stdout.write(distillHelp());
    return 0;
  }
  const resume = args.flags.get('resume');
  let options: DistillOptions;
  if (resume !== undefined) {
    const extra = [...args.flags.keys()].filter((f) => f !== 'resume' && f !== 'threads');
    if (args.positionals.length || extra.length)
      throw new UsageError(`--resume takes the run's options from ${resume}/distill.json; drop ${[...args.positionals, ...extra.map((f) => `--${f}`)].join(' ')}`);
    if (!fs.existsSync(resume)) throw new UsageError(`--resume ${resume}: no such folder`);
    options = readDistillRun(resume);
    if (args.flags.has('threads')) options.threads = intFlag(args, 'threads', 1, { min: 1 });
  } else {
    if (args.positionals.length !== 1)
      throw new UsageError(`expected the method, ${DISTILL_METHODS.join(' or ')} (or yardstick), got ${args.positionals.length ? args.positionals.join(' ') : 'none'}`);
    const method = args.positionals[0];
    if (!(DISTILL_METHODS as readonly string[]).includes(method)) throw new UsageError(`unknown method ${JSON.stringify(method)}: expected ${DISTILL_METHODS.join(', ')} or yardstick`);
    options = parseRunFlags(args, method as DistillMethod);
  }
  const result = await distill(options, { resume: resume !== undefined, handleSigint: true });
  const lines = result.stages.map((s) => [s.name, `step ${s.step}`, s.imagesPerSecond === null ? '' : `${s.imagesPerSecond.toFixed(1)} images/s`] as [string, string, string]);
  process.stdout.write(`${result.status === 'done' ? 'done' : 'interrupted'}: ${options.out}\n${lines.map((l) => `  ${l.join('  ')}`.trimEnd()).join('\n')}\n`);
  if (result.status === 'done') process.stdout.write(`student: ${result.student} (diffuse sample ${result.student})\n`);
  return result.status === 'interrupted' ? INTERRUPTED_EXIT_CODE : 0;
}

/** The run's options from the flags; errors name the flag and the value. */
function parseRunFlags(args: ParsedArgs, method: DistillMethod): DistillOptions {
  const teacher = args.flags.get('teacher') ?? shippedModelDir();
  if (!fs.existsSync(teacher)) throw new UsageError(`--teacher ${teacher}: no such folder`);
  const int = (flag: string, dflt: number, min = 1) => intFlag(args, flag, dflt, { min });
  const o = {
    method,
    teacher,
    out: args.flags.get('out') ?? `runs/distill-${method}`,
    parameterization: choiceFlag(args, 'parameterization', STUDENT_PARAMETERIZATIONS, D.parameterization),
    teacherSteps: int('teacher-steps', D.teacherSteps),
    studentSteps: int('student-steps', method === 'lcm' ? 4 : isConsistencyMethod(method) ? 1 : D.studentSteps),
    roundSteps: int('round-steps', D.roundSteps),
    guidanceSteps: int('guidance-steps', D.guidanceSteps),
    batchSize: int('batch-size', D.batchSize),
    lr: numberFlag(args, 'lr', { greaterThan: 0 }) ?? (isDmdMethod(method) ? DMD_LR : method !== 'lcm' ? D.lr : args.flags.has('lora-rank') ? LCM_LR.lora : LCM_LR.full),
    seed: int('seed', D.seed, 0),
    checkpointEvery: int('checkpoint-every', D.checkpointEvery, 0),
    threads: args.flags.has('threads') ? int('threads', 1) : null,
    guidance: numberFlag(args, 'guidance') ?? null,
    guidanceRange: rangeFlag(args),
    consistencySteps: int('consistency-steps', D.consistencySteps),
    sigmaMin: numberFlag(args, 'sigma-min', { greaterThan: 0 }) ?? null,
    discretization: int('discretization', D.discretization, 2),
    solver: choiceFlag(args, 'solver', CD_SOLVERS, D.solver),
    mu: numberFlag(args, 'mu', { min: 0 }) ?? D.mu,
    distance: args.flags.has('distance') ? choiceFlag(args, 'distance', ['l2', 'pseudo-huber'] as const, 'l2') : null,
    skip: int('skip', D.skip),
    loraRank: args.flags.has('lora-rank') ? int('lora-rank', 1) : null,
    loraAlpha: numberFlag(args, 'lora-alpha', { greaterThan: 0 }) ?? null,
    loraTargets: args.flags.get('lora-targets') ?? D.loraTargets,
    dmdSteps: int('dmd-steps', D.dmdSteps),
    fakeUpdates: args.flags.has('fake-updates') ? int('fake-updates', 1) : null,
    pairs: args.flags.get('pairs') ?? null,
    regWeight: numberFlag(args, 'reg-weight', { min: 0 }) ?? D.regWeight,
    ganWeight: numberFlag(args, 'gan-weight') ?? D.ganWeight, // checked by resolveDistillOptions (a ConfigError naming the option and value)
    ganDiscWeight: numberFlag(args, 'gan-disc-weight') ?? D.ganDiscWeight,
    adversarialSteps: int('adversarial-steps', D.adversarialSteps),
    distillWeight: numberFlag(args, 'distill-weight', { min: 0 }) ?? D.distillWeight,
    r1Gamma: numberFlag(args, 'r1-gamma', { min: 0 }) ?? D.r1Gamma,
  };
  const only = (flags: string[], methods: DistillMethod[]) => {
    for (const f of flags) if (args.flags.has(f) && !methods.includes(method)) throw new UsageError(`--${f} is for ${methods.join(', ')} (not ${method})`);
  };
  only(['consistency-steps', 'distance'], ['cd', 'ct', 'ict', 'lcm']);
  only(['sigma-min'], ['cd', 'ct', 'ict']);
  only(['mu'], ['cd', 'lcm']);
  only(['discretization', 'solver'], ['cd']);
  only(['skip', 'lora-rank', 'lora-alpha', 'lora-targets'], ['lcm']);
  if (method === 'lcm' && args.flags.has('parameterization')) throw new UsageError("--parameterization: an lcm student keeps its teacher's prediction (the boundary goes on top of it)");
  if ((args.flags.has('lora-alpha') || args.flags.has('lora-targets')) && !args.flags.has('lora-rank')) throw new UsageError('--lora-alpha and --lora-targets need --lora-rank');
  if (method === 'lcm' && o.loraRank !== null && o.guidance === null) throw new UsageError('--lora-rank: LCM-LoRA bakes one w into the adapter (the base has no w embedding); give --guidance W');
  if (method === 'lcm' && o.guidance !== null && args.flags.has('guidance-range')) throw new UsageError('--guidance W bakes one w in; --guidance-range is for a student that embeds w');
  only(['round-steps', 'teacher-steps'], ['progressive', 'guided']);
  only(['dmd-steps', 'fake-updates'], ['dmd', 'dmd2']);
  only(['pairs', 'reg-weight'], ['dmd']);
  if (method !== 'dmd') only(['gan-weight', 'gan-disc-weight'], ['dmd2']); // dmd: resolveDistillOptions says why (a ConfigError naming the value)
  for (const f of ['guidance-range', 'guidance-steps']) if (isDmdMethod(method) && args.flags.has(f)) throw new UsageError(`--${f} is for guided distillation (not ${method})`);
  if (isDmdMethod(method) && args.flags.has('student-steps')) throw new UsageError(`--student-steps: a ${method} student is a one-step generator`);
  if (method === 'dmd' && o.pairs === null) throw new UsageError('dmd needs --pairs DIR, the regression pairs (make them with diffuse distill dmd-pairs --out DIR)');
  if (o.pairs !== null && !fs.existsSync(o.pairs)) throw new UsageError(`--pairs ${o.pairs}: no such folder`);
  only(['adversarial-steps', 'distill-weight', 'r1-gamma'], ['add']);
  if (method === 'add' && args.flags.has('guidance')) throw new UsageError('--guidance is not for add here (it distils an unguided teacher)');
  if (o.mu >= 1) throw new UsageError(`--mu: expected a number in [0, 1), got ${o.mu}`);
  if (method === 'guided' && o.guidance !== null)
    throw new UsageError(`--guidance ${o.guidance}: guided distillation learns every w of --guidance-range; --guidance is for progressive distillation of a guided teacher`);
  if (method === 'progressive' && args.flags.has('guidance-range')) throw new UsageError('--guidance-range is for guided distillation (progressive takes one --guidance W)');
  if (method === 'progressive' && args.flags.has('guidance-steps')) throw new UsageError('--guidance-steps is for guided distillation (its stage 1)');
  const ratio = o.teacherSteps / o.studentSteps;
  if (!isConsistencyMethod(method) && !isDmdMethod(method) && method !== 'add' && !(ratio >= 2 && Number.isInteger(Math.log2(ratio))))
    throw new UsageError(`--teacher-steps ${o.teacherSteps} / --student-steps ${o.studentSteps}: the ratio must be a power of 2 of at least 2 (each round halves the steps)`);
  const resolved = resolveDistillOptions(o);
  planStages(resolved);
  return resolved;
}

/** --guidance-range LO,HI (default DISTILL_DEFAULTS'). */
function rangeFlag(args: ParsedArgs): [number, number] {
  const raw = args.flags.get('guidance-range');
  if (raw === undefined) return [...D.guidanceRange];
  const p = raw.split(',');
  if (p.length !== 2) throw new UsageError(`--guidance-range: expected LO,HI, got ${JSON.stringify(raw)}`);
  const [lo, hi] = p.map((s) => parseNumber('guidance-range', s, { min: 0 }));
  if (!(lo <= hi)) throw new UsageError(`--guidance-range: need LO <= HI, got ${JSON.stringify(raw)}`);
  return [lo, hi];
}
