/**
 * Classifier guidance (Dhariwal & Nichol 2021, Sec. 4): a noise-conditional classifier
 * log p(y | x, sigma) steers any denoiser toward class y. By Bayes, p_sigma(x | y) is
 * proportional to p_sigma(x) p(y | x, sigma), so the scores add:
 *
 *   grad_x log p_sigma(x | y) = grad_x log p_sigma(x) + grad_x log p(y | x, sigma).
 *
 * Tweedie's formula (EDM Eq. 3) ties a denoiser to its score, D = x + sigma^2 grad_x log p_sigma(x),
 * so the denoiser of p(x | y) is
 *
 *   D(x, sigma | y) = x + sigma^2 (grad log p_sigma(x) + grad log p(y | x, sigma))
 *                   = D(x, sigma) + sigma^2 grad_x log p(y | x, sigma),
 *
 * and with the guidance scale s (their Algorithm 1-2 scale the gradient by s):
 *
 *   D_s(x, sigma, y) = D(x, sigma) + s sigma^2 grad_x log p(y | x, sigma).
 *
 * s = 1 with the exact classifier is the exact conditional denoiser. The gradient runs
 * through the engine's autograd (grad()) under enableGrad, so it works inside a sampler's noGrad.
 *
 * @example
 *   const G = classifierGuidance(Duncond, classifierLogProb, { scale: 2 });
 *   const x0 = sampleEuler(G, xT, karrasSigmas(32), { cond: { classLabels } });
 */
import { grad } from '../engine/autograd';
import { enableGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser, expandSigma } from '../core/denoiser';
import { checkFinite, requireLabels } from './common';

/** A noise-conditional classifier: x [N, ...], sigma [N], labels [N] int64 -> log p(y | x, sigma) [N], differentiable in x. */
export type ClassLogProb = (x: Tensor, sigma: Tensor, labels: Tensor) => Tensor;

/** Options of classifierGuidance. */
export interface ClassifierGuidanceOptions {
  /** Guidance scale s: 0 = the denoiser alone, 1 = Bayes' conditional (for an exact classifier), > 1 sharper. Default 1. */
  scale?: number;
  /** Also pass cond (the labels) to the denoiser, to guide a class-conditional model (Dhariwal & Nichol, Table 4). Default false: D(x, sigma) unconditional. */
  conditional?: boolean;
}

/** grad_x log p(y | x, sigma) [N, ...] by autograd (recorded even inside noGrad), detached. */
export function classifierGradient(logProb: ClassLogProb, x: Tensor, sigma: Tensor, labels: Tensor): Tensor {
  return enableGrad(() =>
    tidy(() => {
      const xg = x.detach().requiresGrad_();
      const lp = logProb(xg, sigma, labels); // [N]
      if (lp.ndim !== 1 || lp.dim(0) !== x.dim(0)) throw new TypeError(`classifierGuidance: the classifier must return log p(y | x, sigma) of shape [${x.dim(0)}], got [${lp.shape.join(', ')}]`);
      const [g] = grad(lp.sum(), xg, { allowUnused: true }); // samples are independent: d(sum)/dx_i = d log p_i / dx_i
      if (g === null) throw new TypeError('classifierGuidance: the classifier output does not depend on x (no gradient)');
      return g;
    }),
  );
}

/** Classifier guidance D(x, sigma) + s sigma^2 grad_x log p(y | x, sigma) (Dhariwal & Nichol 2021 with Tweedie), as a Denoiser. */
export function classifierGuidance(D: Denoiser, logProb: ClassLogProb, { scale = 1, conditional = false }: ClassifierGuidanceOptions = {}): Denoiser {
  const s = checkFinite('classifierGuidance', 'scale', scale);
  if (typeof logProb !== 'function') throw new TypeError(`classifierGuidance: logProb must be a function (x, sigma, labels) => [N] log p(y | x, sigma), got ${typeof logProb}`);
  return (x, sigma, cond) => {
    const labels = requireLabels('classifierGuidance', cond);
    const unlabeled = { ...cond, classLabels: undefined }; // without the label, but with a super-resolution stage's lowRes
    if (s === 0) return conditional ? D(x, sigma, cond) : D(x, sigma, unlabeled);
    return tidy(() => {
      const d = conditional ? D(x, sigma, cond) : D(x, sigma, unlabeled);
      const g = classifierGradient(logProb, x, sigma, labels); // [N, ...]
      return d.add(g.mul(expandSigma(sigma, x).square().mul(s).to({ dtype: d.dtype }))); // D + s sigma^2 grad log p(y | x)
    });
  };
}
