/**
 * Guidance from a description: what `diffuse sample` and `diffuse eval` build from their
 * guidance flags, as a library call. It loads what the method needs once (an autoguidance
 * guide checkpoint, a noise-conditional classifier) and gives the guided denoiser for any
 * scale, so a sweep over scales reuses the loaded networks.
 *
 * @example
 *   const { meta, net, denoiser } = loadModel('models/fashion-mnist');
 *   const g = prepareGuidance(denoiser, meta, { type: 'cfg', rescale: 0.7 });
 *   const { denoiser: D3, describe } = g.at(3);       // "cfg w = 3": D_u + 3 (D_c - D_u)
 *   const x = generateSamples(D3, meta.config, { shape: meta.sampleShape, n: 10, seed: 0, labels: [...Array(10).keys()] });
 *   g.dispose(); net.dispose();
 */
import { Denoiser } from '../core/denoiser';
import { classifierLogProb } from '../models/classifier';
import { CheckpointMeta, loadModel } from '../training/checkpoint';
import { loadClassifier, shippedClassifierDir } from '../training/classifier';
import { autoguidance } from './autoguidance';
import { classifierFreeGuidance } from './cfg';
import { classifierGuidance } from './classifier';
import { withGuidance } from '../distillation/guided';
import { studentGuidanceProblem } from '../distillation/record';

export const GUIDANCE_TYPES = ['cfg', 'classifier', 'auto'] as const;
export type GuidanceType = (typeof GUIDANCE_TYPES)[number];

/** A guidance method and its settings (recorded in eval reports). */
export interface GuidanceSpec {
  type: GuidanceType;
  /** The guidance scale w (cfg, auto: 1 = the model alone) or s (classifier: 0 = the model alone). */
  scale: number;
  /** Autoguidance: the guide checkpoint (required); classifier guidance: the classifier folder (default: the shipped one). */
  guide?: string;
  /** Guide only for sigma in (lo, hi] (cfg, auto). */
  interval?: [number, number];
  /** Guidance rescale phi (cfg). */
  rescale?: number;
}

/** The guided denoiser at one scale. */
export interface Guided {
  denoiser: Denoiser;
  /** One line for logs and reports, e.g. "cfg w = 3". */
  describe: string;
}

/** What prepareGuidance loaded, and the guided denoiser at any scale. */
export interface PreparedGuidance {
  /**
   * The guided denoiser at `scale`; `base` replaces the model's own denoiser underneath (the same
   * model, e.g. wrapped by countEvaluations, so that NFE counts network evaluations: 2 per step
   * for batched CFG).
   */
  at(scale: number, base?: Denoiser): Guided;
  /** Frees the guide network or classifier (nothing for cfg). */
  dispose(): void;
}

/** The guide checkpoint is not a model of the main model's task (its classes or sample shape differ). */
export class GuideMismatchError extends Error {
  override name = 'GuideMismatchError';
}

/**
 * Loads what the guidance `spec` needs once; `at(scale)` gives the guided denoiser for a scale.
 * cfg: classifierFreeGuidance on the model's null class (Ho & Salimans 2022); auto: autoguidance
 * with a weaker checkpoint of the same task (Karras et al. 2024); classifier: classifier guidance
 * with a noise-conditional classifier (Dhariwal & Nichol 2021), conditional model.
 */
export function prepareGuidance(
  D: Denoiser,
  meta: Pick<CheckpointMeta, 'classNames' | 'sampleShape' | 'distillation'> & Partial<Pick<CheckpointMeta, 'latent'>>,
  spec: Omit<GuidanceSpec, 'scale'>,
): PreparedGuidance {
  if (!meta.classNames) throw new TypeError('prepareGuidance: the model is not class-conditional; guidance needs class labels');
  if (meta.latent && spec.type === 'classifier') throw new TypeError("prepareGuidance: classifier guidance's classifier reads noisy pixels, but this latent model denoises latents (use cfg or auto)");
  const nullClass = meta.classNames.length;
  const student = meta.distillation;
  if (student && student.guidance.teacherScale !== null) throw new TypeError(`prepareGuidance: ${studentGuidanceProblem(student, spec.type, 0)}`);
  if (student?.guidance.embedded) {
    // A guidance-distilled student: w is an input of the network, one evaluation per step.
    if (spec.type !== 'cfg' || spec.interval || spec.rescale)
      throw new TypeError('prepareGuidance: a guidance-distilled student takes classifier-free guidance (type cfg) without interval or rescale');
    return {
      at: (scale, base = D) => {
        const p = studentGuidanceProblem(student, spec.type, scale);
        if (p) throw new RangeError(`prepareGuidance: guidance scale ${p}`);
        return { denoiser: withGuidance(base, scale), describe: `guidance-distilled w = ${scale} (one evaluation)` };
      },
      dispose: () => {},
    };
  }
  if (spec.type === 'cfg') {
    return {
      at: (scale, base = D) => ({ denoiser: classifierFreeGuidance(base, { scale, nullClass, rescale: spec.rescale, interval: spec.interval }), describe: `cfg w = ${scale}` }),
      dispose: () => {},
    };
  }
  if (spec.type === 'auto') {
    if (!spec.guide) throw new TypeError('prepareGuidance: autoguidance needs spec.guide, the folder of a weaker checkpoint of the same task');
    const guide = loadModel(spec.guide, { latent: true });
    guide.latent?.dispose(); // the guide denoises in the main model's space; only the main model decodes
    if (JSON.stringify(guide.meta.classNames) !== JSON.stringify(meta.classNames) || JSON.stringify(guide.meta.sampleShape) !== JSON.stringify(meta.sampleShape)) {
      guide.net.dispose();
      throw new GuideMismatchError(`guide ${spec.guide}: not a model of the same task (classes or sample shape differ)`);
    }
    const space = (r: CheckpointMeta['latent']) => JSON.stringify(r ? [r.sha256, r.norm, r.shift, r.scale] : null); // a latent model's space: its autoencoder and normalization
    if (space(guide.meta.latent) !== space(meta.latent)) {
      guide.net.dispose();
      throw new GuideMismatchError(`guide ${spec.guide}: not in the same space as the model (pixels or latents, the autoencoder or its normalization differ)`);
    }
    return {
      at: (scale, base = D) => ({
        denoiser: autoguidance(base, guide.denoiser, { scale, interval: spec.interval }),
        describe: `autoguidance w = ${scale} (guide ${spec.guide}, step ${guide.meta.step})`,
      }),
      dispose: () => guide.net.dispose(),
    };
  }
  if (spec.type !== 'classifier') throw new RangeError(`prepareGuidance: type must be one of ${GUIDANCE_TYPES.join(', ')}, got ${JSON.stringify(spec.type)}`);
  const dir = spec.guide ?? shippedClassifierDir();
  const { net } = loadClassifier(dir);
  const logp = classifierLogProb(net);
  return {
    at: (scale, base = D) => ({ denoiser: classifierGuidance(base, logp, { scale, conditional: true }), describe: `classifier guidance s = ${scale} (${dir})` }),
    dispose: () => net.dispose(),
  };
}
