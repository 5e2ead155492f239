/**
 * Matryoshka diffusion (Gu et al. 2023, "Matryoshka Diffusion Models"): one nested network
 * (models/nested-unet.ts) denoises the resolutions r_0 < r_1 < ... (e.g. 16, 32, 64) of an
 * image at once. Per resolution r (MDM Sec. 3.1, Eq. 4-5):
 *
 *   x0^r = the image average-pooled to r x r (the emoji data's own downsampling);
 *   x_t^r = x0^r + sigma_r(t) n^r, n^r ~ N(0, I) independent across resolutions;
 *   sigma_r(t) = sigma(t) (r / r_0): the log-SNR shifted by 2 ln(r_0 / r) (simple diffusion's
 *     shift, Hoogeboom et al. 2023, Sec. 3.1), one shared t;
 *   L = sum_r w_r L^r, L^r the objective's own term (eps, x0, v or EDM) at resolution r.
 *
 * Sampling keeps the Denoiser contract with one trick: since sigma_r = k_r sigma with a constant
 * k_r = r / r_0, the state y^r = x^r / k_r is y0^r + sigma n^r, one sigma for every resolution.
 * So the joint state, the levels' y^r flattened and concatenated ("packed"), is an ordinary
 * sample at noise level sigma (the base resolution's), and `jointDenoiser` is an ordinary
 * Denoiser of it: every sampler, grid and guidance method runs unchanged, and the samples of
 * resolution r are k_r y^r. Sampling at a lower resolution runs the same joint state and keeps
 * that level (as MDM: the outer inputs feed the inner levels too, so the levels are sampled together).
 *
 * @example
 *   const layout = nestedLayout(3, [16, 32, 64]);                 // scales [1, 2, 4]
 *   const D = jointDenoiser(net, precond, layout);                // y [B, 3 (16^2 + 32^2 + 64^2)] -> y0
 *   const y = sampleInBatches(clipNested(D, layout), sigmas, { shape: [packedSize(layout, 3)], n, seed, labels: null });
 *   const [x16, x32, x64] = unpack(y, layout);                    // [n, 3, r, r] each
 *   const { loss, terms } = nestedLoss(net, precond, layout, pyramid(x0, [16, 32, 64]), { generator, target: 'eps', sampleSigma });
 */
import { cat } from '../engine/create';
import { avgPool2d } from '../engine/functional';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser, expandSigma } from '../core/denoiser';
import { Coefficients, NoiseLevel } from '../core/precond';
import { resolutionShift } from '../core/schedules';
import { LossResult, meanFlat, targetError } from '../training/losses';
import { SigmaSampler } from '../training/sigma-sampling';
import { Target, Weighting } from '../training/weighting';

/** What jointDenoiser and nestedLoss need of a network: the nested U-Net's forward (NestedUNet). */
export interface NestedNetwork {
  forward(xs: Tensor[], cNoise: Tensor, classLabels?: Tensor, guidance?: Tensor): Tensor[];
}

/** How the network's outputs become x0 estimates: the coefficients at a resolution's own sigma_r, and the one c_noise all levels share (from the base sigma). */
export interface NestedPrecond {
  /** c_skip, c_out, c_in at sigma_r [B] (its c_noise is not used). */
  coefficients: (sigmaR: Tensor) => Coefficients;
  /** The shared noise level c_noise(sigma) of the base resolution's sigma [B] (the shared t). */
  noiseLevel: NoiseLevel;
}

/** The nested resolutions of a model, their channels, and each one's sigma scale k_r. */
export interface NestedLayout {
  channels: number;
  resolutions: number[];
  /** k_r = sigma_r / sigma_(r_0) = e^(-shift_r / 2), shift_r = 2 ln(r_0 / r): r / r_0. */
  scales: number[];
}

/**
 * The layout of a nested model: each resolution's sigma scale from simple diffusion's shift
 * relative to the smallest, e^(-resolutionShift(r_0, r) / 2) = r / r_0.
 *
 * @example
 *   nestedLayout(3, [16, 32, 64]).scales; // [1, 2, 4]
 */
export function nestedLayout(channels: number, resolutions: readonly number[]): NestedLayout {
  if (resolutions.length === 0) throw new TypeError('nestedLayout: resolutions must be a non-empty list');
  const scales = resolutions.map((r) => Math.exp(-resolutionShift({ base: resolutions[0], resolution: r }, 'nestedLayout') / 2));
  return { channels, resolutions: [...resolutions], scales };
}

/** The length of the packed joint state of the first L levels: C sum_(l < L) r_l^2. */
export function packedSize(layout: NestedLayout, levels = layout.resolutions.length): number {
  return layout.resolutions.slice(0, levels).reduce((s, r) => s + layout.channels * r * r, 0);
}

/** How many levels a packed state of `size` numbers holds; a TypeError when no prefix of the levels has that size. */
export function levelsOf(layout: NestedLayout, size: number): number {
  for (let L = 1; L <= layout.resolutions.length; L++) if (packedSize(layout, L) === size) return L;
  throw new TypeError(
    `nested model: a packed state has ${layout.resolutions.map((_, l) => packedSize(layout, l + 1)).join(', ')} numbers per sample (resolutions ${layout.resolutions.join(', ')}), got ${size}`,
  );
}

/** The image x0 [B, C, d, d] average-pooled to each resolution (d itself included, as a copy), smallest first. */
export function pyramid(x0: Tensor, resolutions: readonly number[]): Tensor[] {
  const d = x0.dim(-1);
  return resolutions.map((r) => {
    if (!Number.isInteger(d / r) || r > d) throw new TypeError(`pyramid: resolution ${r} does not divide the image size ${d}`);
    return r === d ? x0.clone() : avgPool2d(x0, d / r);
  });
}

/** Packs per-level images xs[l] [B, C, r_l, r_l] into the joint state y [B, N]: y^r = x^r / k_r, flattened and concatenated. */
export function pack(xs: Tensor[], layout: NestedLayout): Tensor {
  return tidy(() =>
    cat(
      xs.map((x, l) => x.reshape([x.dim(0), -1]).div(layout.scales[l])),
      1,
    ),
  );
}

/** The inverse of pack: y [B, N] -> the levels' images x^r = k_r y^r [B, C, r, r], as many levels as y holds. */
export function unpack(y: Tensor, layout: NestedLayout): Tensor[] {
  const L = levelsOf(layout, y.dim(1));
  return tidy(() => {
    let at = 0;
    return layout.resolutions.slice(0, L).map((r, l) => {
      const n = layout.channels * r * r;
      const x = y
        .narrow(1, at, n)
        .reshape([y.dim(0), layout.channels, r, r])
        .mul(layout.scales[l]);
      at += n;
      return x;
    });
  });
}

/**
 * The x0 estimates of every given level from one pass of the nested network (MDM Eq. 5 with EDM's
 * Eq. 7 per level): D^r = c_skip(sigma_r) x^r + c_out(sigma_r) F^r(c_in(sigma_r) x^r, ..., c_noise(sigma)).
 * xs: the noisy levels [B, C, r_l, r_l] (a prefix of the layout), sigma [B] the base resolution's.
 */
export function nestedDenoise(net: NestedNetwork, precond: NestedPrecond, layout: NestedLayout, xs: Tensor[], sigma: Tensor, cond?: Conditioning): Tensor[] {
  return tidy(() => {
    const cNoise = precond.noiseLevel(sigma).to({ dtype: xs[0].dtype }); // the shared t
    const cs = xs.map((_, l) => precond.coefficients(sigma.mul(layout.scales[l]))); // at sigma_r = k_r sigma
    const e = (t: Tensor, x: Tensor) => expandSigma(t.to({ dtype: x.dtype }), x); // [B, 1, 1, 1]
    const F = net.forward(
      xs.map((x, l) => x.mul(e(cs[l].cIn, x))),
      cNoise,
      cond?.classLabels,
      cond?.guidance,
    );
    return xs.map((x, l) => x.mul(e(cs[l].cSkip, x)).add(F[l].mul(e(cs[l].cOut, x))));
  });
}

/** The nested model as one Denoiser of the packed joint state (see the file comment): y [B, N] at the base sigma [B] -> y0 estimate [B, N]. */
export function jointDenoiser(net: NestedNetwork, precond: NestedPrecond, layout: NestedLayout): Denoiser {
  return (y, sigma, cond) => tidy(() => pack(nestedDenoise(net, precond, layout, unpack(y, layout), sigma, cond), layout));
}

/** D with every level's x0 estimate clamped to [-1, 1] in image space (ADM's clip_denoised; on y^r that is [-1/k_r, 1/k_r]). */
export function clipNested(D: Denoiser, layout: NestedLayout): Denoiser {
  return (y, sigma, cond) =>
    tidy(() =>
      pack(
        unpack(D(y, sigma, cond), layout).map((x) => x.clamp(-1, 1)),
        layout,
      ),
    );
}

export interface NestedLossOptions {
  generator: Generator;
  cond?: Conditioning;
  /** The space each level's error is measured in (the objective's). */
  target: Target;
  /** The base resolution's sigma distribution (the shared t). */
  sampleSigma: SigmaSampler;
  /** lambda(sigma_r) on each level's term (default none: uniform). */
  weighting?: Weighting;
  /** w_r per level (default all 1). */
  weights?: readonly number[];
}

/**
 * MDM's loss (Gu et al. 2023, Eq. 5): sigma ~ the base distribution, then per level n^r ~ N(0, I)
 * drawn in level order from the one generator (independent across levels), x^r = x0^r + k_r sigma n^r,
 * L^r = lambda(sigma_r) mean((target error)^2), and per sample sum_r w_r L^r. x0s: the clean
 * levels (pyramid), a prefix of the layout (progressive training passes fewer). `terms` are the
 * batch means of the L^r (unweighted by w_r), for logging.
 */
export function nestedLoss(net: NestedNetwork, precond: NestedPrecond, layout: NestedLayout, x0s: Tensor[], opts: NestedLossOptions): LossResult & { terms: Tensor[] } {
  const { generator, cond, target, weighting } = opts;
  const weights = opts.weights ?? x0s.map(() => 1);
  if (weights.length < x0s.length) throw new TypeError(`nestedLoss: ${weights.length} weights for ${x0s.length} levels`);
  return tidy(() => {
    const B = x0s[0].dim(0);
    const sigma = opts.sampleSigma(B, generator, { dtype: x0s[0].dtype, device: x0s[0].device }); // [B], the shared t
    const s = x0s.map((x0, l) => expandSigma(sigma.mul(layout.scales[l]), x0)); // sigma_r [B, 1, 1, 1]
    const n = x0s.map((x0) => generator.randnLike(x0)); // independent per level
    const xs = x0s.map((x0, l) => x0.add(n[l].mul(s[l])));
    const x0Hats = nestedDenoise(net, precond, layout, xs, sigma, cond);
    const perLevel = x0s.map((x0, l) => {
      const term = meanFlat(targetError(target, { x0, n: n[l], s: s[l], x: xs[l], x0Hat: x0Hats[l] }).square()); // [B]
      return weighting ? term.mul(weighting(sigma.mul(layout.scales[l])).to({ dtype: term.dtype })) : term;
    });
    const perSample = perLevel.map((t, l) => t.mul(weights[l])).reduce((a, b) => a.add(b)); // [B]
    return { loss: perSample.mean(), perSample, sigma, terms: perLevel.map((t) => t.mean()) };
  });
}

/**
 * Progressive training (MDM Sec. 3.3): the levels trained at step k when a level is added every
 * `grow` steps, 1 + floor(k / grow), at most all of them (grow 0: all from the start). Levels not
 * yet grown are outside the forward pass: no gradient, no update (their weights stay as initialized).
 *
 * @example
 *   activeLevels(0, 1000, 3); // 1 (the 16 px core)
 *   activeLevels(1500, 1000, 3); // 2
 */
export function activeLevels(step: number, grow: number, levels: number): number {
  if (!(Number.isInteger(grow) && grow >= 0)) throw new RangeError(`activeLevels: grow must be a non-negative integer, got ${grow}`);
  return grow === 0 ? levels : Math.min(levels, 1 + Math.floor(step / grow));
}
