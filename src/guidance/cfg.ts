/**
 * Classifier-free guidance (Ho & Salimans 2022): one network trained with and without the
 * label (condition dropout to the null class) gives a conditional D_c and an unconditional
 * D_u; the guided denoiser extrapolates from D_u past D_c:
 *
 *   D_w(x, sigma, c) = D_u + w (D_c - D_u)
 *
 * Convention: w is the "guidance scale" of Imagen, Stable Diffusion and EDM2 (`ref.lerp(D, w)`):
 * w = 1 is the conditional model (no guidance), w = 0 the unconditional one, w > 1 guides.
 * Ho & Salimans write eps~ = (1 + w') eps_c - w' eps_u (their Eq. 6): their w' is our w - 1.
 * Since x0 = x - sigma eps is affine in eps with the same x and sigma for both passes, the
 * combination is the same on x0, eps or the score.
 *
 * Options: guidance rescale phi (Lin et al. 2024, Sec. 3.4), the guidance interval
 * (Kynkaanniemi et al. 2024), and one batched network call for both passes (default) or two.
 *
 * @example
 *   const G = classifierFreeGuidance(D, { scale: 4, nullClass: net.nullClass! });
 *   const x0 = sampleHeun(G, xT, karrasSigmas(32), { cond: { classLabels } });
 *   const H = classifierFreeGuidance(D, { scale: 2, nullClass: 10, rescale: 0.7, interval: [0.28, 2.9] });
 */
import { cat, full } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { checkFinite, guidanceInterval, guide, requireLabels } from './common';

/** Options of classifierFreeGuidance. */
export interface CFGOptions {
  /** Guidance scale w: 1 = the conditional denoiser, 0 = the unconditional one, > 1 guided. */
  scale: number;
  /** The label of the unconditional pass: the network's null class (numClasses, `net.nullClass`). */
  nullClass: number;
  /** Guidance rescale phi in [0, 1] (Lin et al. 2024, Sec. 3.4); default 0 (plain CFG). */
  rescale?: number;
  /** Whose per-sample std the rescale matches to the conditional one: 'x0' (default, D itself) or 'eps' (diffusers' guidance_rescale). */
  rescaleSpace?: 'x0' | 'eps';
  /** Guide only for sigma in (sigmaLo, sigmaHi] (Kynkaanniemi et al. 2024); elsewhere D_c alone, one evaluation. Default: every sigma. */
  interval?: [number, number];
  /** Both passes in one network call on the doubled batch (default true); false makes two calls of batch B (less memory). */
  batched?: boolean;
}

/**
 * The conditional and unconditional estimates [B, ...]: one call on cat([x, x]) with labels
 * cat([c, null]) and every other per-sample field of cond (a super-resolution stage's lowRes and
 * augLevel, a micro-conditioned model's size and crop, a student's guidance) doubled, or two calls.
 */
export function conditionalPair(D: Denoiser, x: Tensor, sigma: Tensor, cond: Conditioning, nullClass: number, batched: boolean): { cond: Tensor; uncond: Tensor } {
  const labels = requireLabels('classifierFreeGuidance', cond);
  return tidy(() => {
    const nulls = full([labels.size], nullClass, { dtype: labels.dtype, device: labels.device }); // [B]
    if (!batched) return { cond: D(x, sigma, cond), uncond: D(x, sigma, { ...cond, classLabels: nulls }) };
    const B = x.dim(0);
    const out = D(cat([x, x]), cat([sigma.reshape([-1]), sigma.reshape([-1])]), { ...doubled(cond), classLabels: cat([labels.reshape([-1]), nulls]) }); // [2B, ...]
    return { cond: out.narrow(0, 0, B), uncond: out.narrow(0, B, B) };
  });
}

/** cond's tensors other than the labels, each stacked on itself along the batch: [2B, ...]. */
function doubled(cond: Conditioning): Omit<Conditioning, 'classLabels'> {
  const out: Omit<Conditioning, 'classLabels'> = {};
  for (const k of ['guidance', 'lowRes', 'augLevel', 'micro'] as const) {
    const t = cond[k];
    if (t !== undefined) out[k] = cat([t, t]);
  }
  return out;
}

/** Per-sample standard deviation over all but the batch dim, shaped [B, 1, ..., 1]. */
function sampleStd(t: Tensor): Tensor {
  const dims = Array.from({ length: t.ndim - 1 }, (_, i) => i + 1);
  return t.std(dims, { keepdim: true });
}

/**
 * Guidance rescale (Lin et al. 2024, Sec. 3.4): x_rescaled = x_cfg std(x_pos) / std(x_cfg),
 * x_final = phi x_rescaled + (1 - phi) x_cfg, i.e. x_cfg times f = phi std(x_pos)/std(x_cfg) + 1 - phi.
 *  - 'x0':  x = the x0 estimate: D_final = f D_cfg.
 *  - 'eps': x = eps = (x - D)/sigma (diffusers rescales its noise prediction): sigma cancels in
 *           the ratio and D_final = x - sigma f eps_cfg = x - f (x - D_cfg).
 */
export function rescaleGuided(guided: Tensor, conditional: Tensor, x: Tensor, phi: number, space: 'x0' | 'eps'): Tensor {
  return tidy(() => {
    const [g, c] = space === 'x0' ? [guided, conditional] : [x.sub(guided), x.sub(conditional)];
    const f = sampleStd(c)
      .div(sampleStd(g))
      .mul(phi)
      .add(1 - phi); // [B, 1, ..., 1]
    return space === 'x0' ? g.mul(f) : x.sub(g.mul(f));
  });
}

/** Checks CFGOptions and fills the defaults. */
function resolveCFG(opts: CFGOptions): Required<Omit<CFGOptions, 'interval'>> & Pick<CFGOptions, 'interval'> {
  const who = 'classifierFreeGuidance';
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${who}: options { scale, nullClass } are required, got ${String(opts)}`);
  const { scale, nullClass, rescale = 0, rescaleSpace = 'x0', interval, batched = true } = opts;
  checkFinite(who, 'scale', scale);
  if (!Number.isSafeInteger(nullClass) || nullClass < 0) throw new TypeError(`${who}: nullClass must be a non-negative integer (the network's numClasses), got ${String(nullClass)}`);
  if (!(rescale >= 0 && rescale <= 1)) throw new RangeError(`${who}: rescale (phi) must be in [0, 1], got ${String(rescale)}`);
  if (rescaleSpace !== 'x0' && rescaleSpace !== 'eps') throw new TypeError(`${who}: rescaleSpace must be 'x0' or 'eps', got ${JSON.stringify(rescaleSpace)}`);
  return { scale, nullClass, rescale, rescaleSpace, interval, batched };
}

/** Classifier-free guidance D_u + w (D_c - D_u) (Ho & Salimans 2022, Eq. 6 with w = 1 + w'), as a Denoiser. */
export function classifierFreeGuidance(D: Denoiser, opts: CFGOptions): Denoiser {
  const { scale: w, nullClass, rescale: phi, rescaleSpace, interval, batched } = resolveCFG(opts);
  const conditional: Denoiser = (x, sigma, cond) => D(x, sigma, { ...cond, classLabels: requireLabels('classifierFreeGuidance', cond) });
  const guided: Denoiser = (x, sigma, cond?: Conditioning) => {
    const labels = requireLabels('classifierFreeGuidance', cond);
    if (w === 1) return D(x, sigma, cond); // the conditional model; the rescale is then the identity
    if (w === 0 && phi === 0) return tidy(() => D(x, sigma, { ...cond, classLabels: full([labels.size], nullClass, { dtype: labels.dtype, device: labels.device }) }));
    return tidy(() => {
      const pair = conditionalPair(D, x, sigma, cond!, nullClass, batched);
      const g = guide(pair.uncond, pair.cond, w); // D_u + w (D_c - D_u)
      return phi === 0 ? g : rescaleGuided(g, pair.cond, x, phi, rescaleSpace);
    });
  };
  return interval ? guidanceInterval(guided, conditional, interval) : guided;
}
