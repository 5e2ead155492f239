/**
 * What a student checkpoint records about its distillation (the `distillation` field of its
 * checkpoint.json), and the one check of it. It is plain data with no imports from the
 * training code, so the checkpoint reader (training/checkpoint.ts) can check it on every load.
 *
 * The classifier-free guidance convention is stored with every student, because papers differ:
 * Diffuse (like Imagen, Stable Diffusion and EDM2) writes D_u + w (D_c - D_u), so w = 1 is the
 * conditional model; Ho & Salimans 2022 and Meng et al. 2023 write (1 + w) D_c - w D_u, where
 * w = 0 is the conditional model (their w is ours minus 1). A checkpoint that records another
 * convention is refused on load rather than silently sampled at the wrong scale.
 *
 * @example
 *   const rec: DistillationRecord = {
 *     method: 'progressive', stage: 'round', round: 2, rounds: 4, parameterization: 'v',
 *     teacher: { checkpoint: 'models/fashion-mnist', step: 3000, objective: 'eps', steps: 32 },
 *     sampling: { sampler: 'ddim', grid: 'trailing', steps: 16 },
 *     guidance: { convention: GUIDANCE_CONVENTION, teacherScale: null, embedded: null },
 *   };
 *   distillationProblem(rec); // null: well formed
 */

/** Diffuse's classifier-free guidance convention, as recorded in students: D = D_u + w (D_c - D_u). */
export const GUIDANCE_CONVENTION = 'D_u + w (D_c - D_u), w = 1 conditional';

/** The safetensors metadata key under which an adapter (LCM-LoRA) carries its student's record: how to sample any base it is loaded on. */
export const ADAPTER_RECORD_KEY = 'diffuse_distillation';

/** The distillation methods. */
export const DISTILL_METHODS = ['progressive', 'guided', 'cd', 'ct', 'ict', 'lcm', 'add', 'dmd', 'dmd2'] as const;
export type DistillMethod = (typeof DISTILL_METHODS)[number];

/** The consistency-model methods (Song et al. 2023; Song & Dhariwal 2023; Luo et al. 2023, LCM): their students are consistency functions. */
export const CONSISTENCY_METHODS = ['cd', 'ct', 'ict', 'lcm'] as const;
export type ConsistencyMethod = (typeof CONSISTENCY_METHODS)[number];

/** The distribution matching methods (Yin et al. 2023, 2024): a one-step generator against a real and a fake score. */
export const DMD_METHODS = ['dmd', 'dmd2'] as const;
export type DmdMethod = (typeof DMD_METHODS)[number];

/** Whether a method trains a one-step generator by distribution matching. */
export function isDmdMethod(m: string): m is DmdMethod {
  return (DMD_METHODS as readonly string[]).includes(m);
}

/** Whether a method trains a consistency model. */
export function isConsistencyMethod(m: string): m is ConsistencyMethod {
  return (CONSISTENCY_METHODS as readonly string[]).includes(m);
}

/** What the student learns to parameterize: x0 or v (epsilon fails at few steps: Salimans & Ho 2022, Sec. 4). */
export const STUDENT_PARAMETERIZATIONS = ['v', 'x0'] as const;
export type StudentParameterization = (typeof STUDENT_PARAMETERIZATIONS)[number];

/** The distillation record of a student checkpoint. */
export interface DistillationRecord {
  method: DistillMethod;
  /** 'guidance': guided distillation's stage 1 (matching the teacher's CFG output, w embedded); 'round': a progressive round; 'consistency': cd, ct, ict or lcm; 'adversarial': add; 'dmd': a one-step generator (dmd, dmd2). */
  stage: 'guidance' | 'round' | 'consistency' | 'adversarial' | 'dmd';
  /** The round (1-based; 0 for stage 'guidance') and the rounds of the run. */
  round: number;
  rounds: number;
  /** What the network predicts: v or x0; an LCM student keeps its teacher's (eps, x0 or v). */
  parameterization: StudentParameterization | 'eps';
  /** The frozen teacher of this stage: its folder, step, objective, and the DDIM steps it was run at (null for stage 'guidance'). */
  teacher: { checkpoint: string; step: number; objective: string; steps: number | null };
  /** How the student is meant to be sampled: what `diffuse sample` and `diffuse eval` default to. */
  sampling: { sampler: string; grid: string; steps: number };
  guidance: {
    /** Always GUIDANCE_CONVENTION for students written by Diffuse. */
    convention: string;
    /** The teacher's CFG scale built into this student (null: none; the student is then sampled without --guidance). */
    teacherScale: number | null;
    /** The w range of a student that embeds w (null: it does not); sampled with --guidance W, one evaluation per step. */
    embedded: [number, number] | null;
  };
  /**
   * A consistency student (cd, ct, ict, lcm): the network read as a consistency function whose boundary
   * f(x, sigmaMin) = x is built into c_skip and c_out: form 'v' (the default; core/precond.ts,
   * vConsistencyCoefficients) or 'denoiser' (LCM: the teacher's own prediction, f = c_skip x +
   * (1 - c_skip) D, boundaryCoefficients with sigma_data sigmaData).
   */
  consistency?: ConsistencyForm;
}

/** How a consistency student's network is read (DistillationRecord.consistency). */
export type ConsistencyForm = { sigmaMin: number; form?: 'v' } | { sigmaMin: number; form: 'denoiser'; sigmaData: number };

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const posInt = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 1;

/** Why `raw` is not a DistillationRecord Diffuse can sample from (a message naming the field), or null when it is. */
export function distillationProblem(raw: unknown): string | null {
  if (!isObj(raw)) return `"distillation" must be an object, got ${JSON.stringify(raw)}`;
  const g = raw.guidance;
  if (!isObj(g)) return '"distillation.guidance" is missing';
  if (g.convention !== GUIDANCE_CONVENTION)
    return `"distillation.guidance.convention" is ${JSON.stringify(g.convention)}, but Diffuse samples with ${JSON.stringify(GUIDANCE_CONVENTION)}: a student trained with (1 + w) D_c - w D_u needs its scales moved by 1 (w_diffuse = w_paper + 1) before it is used`;
  if (!(DISTILL_METHODS as readonly unknown[]).includes(raw.method)) return `"distillation.method" must be one of ${DISTILL_METHODS.join(', ')}, got ${JSON.stringify(raw.method)}`;
  if (!['guidance', 'round', 'consistency', 'adversarial', 'dmd'].includes(raw.stage as string))
    return `"distillation.stage" must be "guidance", "round", "consistency", "adversarial" or "dmd", got ${JSON.stringify(raw.stage)}`;
  const c = raw.consistency;
  if ((raw.stage === 'consistency') !== (c !== undefined))
    return `"distillation.consistency" must be given exactly for stage "consistency", got ${JSON.stringify(c)} for stage ${JSON.stringify(raw.stage)}`;
  const positive = (v: unknown) => typeof v === 'number' && v > 0 && Number.isFinite(v);
  const denoiserForm = isObj(c) && c.form === 'denoiser';
  if (c !== undefined && !(isObj(c) && positive(c.sigmaMin) && (c.form === undefined || c.form === 'v' || (denoiserForm && positive(c.sigmaData)))))
    return `"distillation.consistency" must be {"sigmaMin": a number > 0} or {"sigmaMin", "form": "denoiser", "sigmaData": a number > 0}, got ${JSON.stringify(c)}`;
  if (c !== undefined && !denoiserForm && raw.parameterization !== 'v') return `"distillation.parameterization" of a consistency student must be v, got ${JSON.stringify(raw.parameterization)}`;
  const parameterizations: readonly unknown[] = denoiserForm ? ['eps', ...STUDENT_PARAMETERIZATIONS] : STUDENT_PARAMETERIZATIONS;
  if (!parameterizations.includes(raw.parameterization)) return `"distillation.parameterization" must be ${parameterizations.join(' or ')}, got ${JSON.stringify(raw.parameterization)}`;
  if (!(Number.isSafeInteger(raw.round) && (raw.round as number) >= 0 && posInt(raw.rounds)))
    return `"distillation.round" and "rounds" must be integers, got ${JSON.stringify([raw.round, raw.rounds])}`;
  const t = raw.teacher;
  if (!isObj(t) || typeof t.checkpoint !== 'string' || !Number.isSafeInteger(t.step) || typeof t.objective !== 'string' || !(t.steps === null || posInt(t.steps)))
    return `"distillation.teacher" must be {"checkpoint", "step", "objective", "steps"}, got ${JSON.stringify(t)}`;
  const s = raw.sampling;
  if (!isObj(s) || typeof s.sampler !== 'string' || typeof s.grid !== 'string' || !posInt(s.steps)) return `"distillation.sampling" must be {"sampler", "grid", "steps"}, got ${JSON.stringify(s)}`;
  if (!(g.teacherScale === null || (typeof g.teacherScale === 'number' && Number.isFinite(g.teacherScale))))
    return `"distillation.guidance.teacherScale" must be a number or null, got ${JSON.stringify(g.teacherScale)}`;
  const e = g.embedded;
  if (!(e === null || (Array.isArray(e) && e.length === 2 && e.every((v) => typeof v === 'number' && Number.isFinite(v)) && e[0] <= e[1])))
    return `"distillation.guidance.embedded" must be [wMin, wMax] or null, got ${JSON.stringify(e)}`;
  if (e !== null && g.teacherScale !== null) return '"distillation.guidance" has both a built-in teacher scale and an embedded w range';
  return null;
}

/**
 * Why guidance `type` at `scale` (null: no --guidance) does not fit a student with this record,
 * or null when it does. A student with an embedded w needs a cfg scale within its range; a
 * student with the teacher's scale built in takes none; other students take any guidance.
 */
export function studentGuidanceProblem(rec: DistillationRecord | undefined, type: string | null, scale: number | null): string | null {
  if (!rec) return null;
  const { embedded, teacherScale } = rec.guidance;
  if (embedded) {
    const range = `w in [${embedded[0]}, ${embedded[1]}]`;
    if (scale === null) return `this student embeds the guidance weight (guided distillation, ${range}, one evaluation per step): give the scale with --guidance W`;
    if (type !== 'cfg') return `this student embeds classifier-free guidance; --guidance-type ${type} does not apply to it`;
    if (!(scale >= embedded[0] && scale <= embedded[1])) return `${scale} is outside the range this student was distilled for (${range}, ${GUIDANCE_CONVENTION})`;
    return null;
  }
  if (teacherScale !== null && scale !== null) return `this student has the teacher's classifier-free guidance w = ${teacherScale} built in (${GUIDANCE_CONVENTION}); sample it without --guidance`;
  return null;
}

/**
 * The student record an adapter carries in its safetensors metadata (ADAPTER_RECORD_KEY; LCM-LoRA), or
 * null when it carries none (a plain fine-tuning adapter). A malformed record throws, naming `file`.
 *
 * @example
 *   const rec = adapterRecord(loraMetadata('runs/lcm-lora/lcm/lora'), 'runs/lcm-lora/lcm/lora');   // rec.sampling.sampler === 'consistency'
 */
export function adapterRecord(metadata: Record<string, string>, file: string): DistillationRecord | null {
  const raw = metadata[ADAPTER_RECORD_KEY];
  if (raw === undefined) return null;
  let rec: unknown;
  try {
    rec = JSON.parse(raw);
  } catch (e) {
    throw new Error(`${file}: its ${ADAPTER_RECORD_KEY} metadata is not JSON (${(e as Error).message})`);
  }
  const problem = distillationProblem(rec);
  if (problem) throw new Error(`${file}: ${problem.replace('"distillation', `"${ADAPTER_RECORD_KEY}`)}`);
  return rec as DistillationRecord;
}
