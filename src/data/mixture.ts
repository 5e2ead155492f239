/**
 * An analytic Gaussian mixture: the one data distribution whose noisy densities,
 * scores and ideal denoiser are all known in closed form at every noise level, so
 * losses, samplers and likelihoods can be tested against the truth.
 *
 *   p(x0)        = sum_k w_k N(x0; mu_k, s_k^2 I)
 *   p_sigma(x)   = sum_k w_k N(x; mu_k, (s_k^2 + sigma^2) I)      (p convolved with N(0, sigma^2 I))
 *   r_k(x)       = w_k N(x; mu_k, v_k I) / p_sigma(x),  v_k = s_k^2 + sigma^2   (responsibilities)
 *   score        = sum_k r_k (mu_k - x) / v_k
 *   E[x0 | x]    = sum_k r_k (mu_k + (s_k^2 / v_k) (x - mu_k))   (the exact denoiser D(x, sigma))
 *
 * All math runs in float64 (results come back in x's dtype) and is differentiable in
 * x, so divergences of the exact denoiser can be taken with grad(). x may be [N, D]
 * or [N, ...] with D trailing elements (image-shaped mixtures for U-Net tests).
 *
 * Components may carry class labels (default: component k is class k). Passing
 * `{ classLabels }` [N] to logDensity/score/denoise conditions each sample on its
 * class, i.e. uses the mixture restricted to that class (exact class-conditional
 * densities for guidance tests); a label outside 0..numClasses-1 (the null class
 * numClasses, or -1) means unconditional. classConditional(c) returns that
 * restricted mixture as a mixture of its own.
 *
 * @example
 *   const gmm = GaussianMixture.ring(8, { radius: 1, std: 0.1 });
 *   const x0 = gmm.sample(256, new Generator(0));            // [256, 2]
 *   const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma); // exact at every sigma
 *   gmm.logDensity(x0);                                      // [256], log p(x0)
 */
import { eye, full, tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { keep, tidy } from '../engine/scope';
import { NestedArray, Tensor } from '../engine/tensor';

/** Per-sample class conditioning (structurally core's Conditioning). */
export interface MixtureConditioning {
  /** [N] int64 class ids; ids outside 0..numClasses-1 mean "no class" (unconditional). */
  classLabels?: Tensor;
}

/** Samples with the component and class each was drawn from. */
export interface LabeledSamples {
  /** [n, D] samples. */
  x: Tensor;
  /** [n] int64 component index. */
  component: Tensor;
  /** [n] int64 class label of that component. */
  label: Tensor;
}

export class GaussianMixture {
  /** [K, D] component means (float64). */
  readonly means: Tensor;
  /** [K] isotropic component standard deviations (float64). */
  readonly stds: Tensor;
  /** [K] mixture weights, normalized to sum to 1 (float64). */
  readonly weights: Tensor;
  /** [K] class label of each component (default 0..K-1). */
  readonly classes: readonly number[];
  /** Number of classes: max(classes) + 1. */
  readonly numClasses: number;

  /**
   * means [K, D], stds [K] (> 0), weights [K] (>= 0, normalized here; default
   * uniform), classes [K] (non-negative integer labels; default 0..K-1).
   */
  constructor(means: Tensor | NestedArray, stds: Tensor | number[], weights?: Tensor | number[], classes?: readonly number[]) {
    const f64 = (v: Tensor | NestedArray) => (v instanceof Tensor ? v.to({ dtype: 'float64' }).detach().clone() : tensor(v, { dtype: 'float64' }));
    const m = f64(means);
    if (m.ndim !== 2) throw new TypeError(`GaussianMixture: means must have shape [K, D], got [${m.shape.join(', ')}]`);
    const K = m.dim(0);
    const s = f64(stds);
    const w = weights === undefined ? full([K], 1 / K, { dtype: 'float64' }) : f64(weights);
    if (s.ndim !== 1 || s.dim(0) !== K) throw new TypeError(`GaussianMixture: stds must have shape [${K}], got [${s.shape.join(', ')}]`);
    if (w.ndim !== 1 || w.dim(0) !== K) throw new TypeError(`GaussianMixture: weights must have shape [${K}], got [${w.shape.join(', ')}]`);
    if (!(tidy(() => s.min().item()) > 0)) throw new RangeError('GaussianMixture: stds must be positive');
    if (!(tidy(() => w.min().item()) >= 0) || !(tidy(() => w.sum().item()) > 0)) throw new RangeError('GaussianMixture: weights must be non-negative and not all zero');
    const labels = classes ?? Array.from({ length: K }, (_, k) => k);
    if (labels.length !== K || !labels.every((c) => Number.isSafeInteger(c) && c >= 0))
      throw new TypeError(`GaussianMixture: classes must be ${K} non-negative integers, got ${JSON.stringify(classes)}`);
    this.classes = labels.slice();
    this.numClasses = labels.reduce((a, b) => Math.max(a, b), 0) + 1;
    this.means = keep(m);
    this.stds = keep(s);
    this.weights = keep(tidy(() => w.div(w.sum())));
    w.dispose();
  }

  /** k equal components with means evenly spaced on a circle of `radius` (the classic 2-D toy). */
  static ring(k: number, { radius = 1, std = 0.1 }: { radius?: number; std?: number } = {}): GaussianMixture {
    const means = Array.from({ length: k }, (_, i) => [radius * Math.cos((2 * Math.PI * i) / k), radius * Math.sin((2 * Math.PI * i) / k)]);
    return new GaussianMixture(means, new Array(k).fill(std));
  }

  /** Data dimension D. */
  get dim(): number {
    return this.means.dim(1);
  }

  /** Number of components K. */
  get components(): number {
    return this.means.dim(0);
  }

  /** n samples [n, D] (float32 unless dtype says otherwise): a component by its weight, then mu_k + s_k n. */
  sample(n: number, generator: Generator, { dtype = 'float32' }: { dtype?: 'float32' | 'float64' } = {}): Tensor {
    return tidy(() => this.sampleLabeled(n, generator, { dtype }).x);
  }

  /** Like sample (the same draws), also returning each sample's component and class. */
  sampleLabeled(n: number, generator: Generator, { dtype = 'float32' }: { dtype?: 'float32' | 'float64' } = {}): LabeledSamples {
    return tidy(() => {
      const u = generator.rand([n], { dtype: 'float64' }); // [n]
      const cdf = this.weights.cumsum(0); // [K]
      const k = u
        .unsqueeze(1)
        .ge(cdf.unsqueeze(0))
        .sum(1)
        .clamp(0, this.components - 1)
        .long(); // [n]
      const noise = generator.randn([n, this.dim], { dtype: 'float64' });
      const x = this.means
        .indexSelect(0, k)
        .add(noise.mul(this.stds.indexSelect(0, k).unsqueeze(1)))
        .to({ dtype }); // [n, D]
      const label = tensor(this.classes as number[], { dtype: 'int64' }).indexSelect(0, k); // [n]
      return { x, component: k, label };
    });
  }

  /** The posterior over components p(k | x) [N, K] at noise level sigma. */
  responsibilities(x: Tensor, sigma: Tensor | number = 0, cond?: MixtureConditioning): Tensor {
    return tidy(() => this.#logits(x, sigma, cond).logits.softmax(1).to({ dtype: x.dtype }));
  }

  /** The mixture restricted to the components of class c (weights renormalized): p(x0 | c). */
  classConditional(c: number): GaussianMixture {
    const ks = this.classes.flatMap((l, k) => (l === c ? [k] : []));
    if (ks.length === 0) throw new RangeError(`GaussianMixture.classConditional: no component has class ${c} (classes are ${[...new Set(this.classes)].join(', ')})`);
    return tidy(() => {
      const idx = tensor(ks, { dtype: 'int64' });
      return new GaussianMixture(
        this.means.indexSelect(0, idx),
        this.stds.indexSelect(0, idx),
        this.weights.indexSelect(0, idx),
        ks.map(() => c),
      );
    });
  }

  /** The mixture's mean [D] (float64): sum_k w_k mu_k. */
  mean(): Tensor {
    return tidy(() => this.weights.unsqueeze(0).matmul(this.means).squeeze(0));
  }

  /** The mixture's covariance [D, D] (float64): sum_k w_k (s_k^2 I + mu_k mu_k^T) - mu mu^T. */
  covariance(): Tensor {
    return tidy(() => {
      const mu = this.mean().unsqueeze(1); // [D, 1]
      const second = this.means.transpose(0, 1).matmul(this.means.mul(this.weights.unsqueeze(1))); // [D, D]: sum_k w_k mu_k mu_k^T
      const within = eye(this.dim, this.dim, { dtype: 'float64' }).mul(this.weights.mul(this.stds.square()).sum().item());
      return second.add(within).sub(mu.matmul(mu.transpose(0, 1)));
    });
  }

  /** log p_sigma(x) [N] of the mixture convolved with N(0, sigma^2 I); sigma a number or [N]. */
  logDensity(x: Tensor, sigma: Tensor | number = 0, cond?: MixtureConditioning): Tensor {
    return tidy(() => this.#logits(x, sigma, cond).logits.logsumexp(1).to({ dtype: x.dtype }));
  }

  /** grad_x log p_sigma(x), shaped like x. */
  score(x: Tensor, sigma: Tensor | number, cond?: MixtureConditioning): Tensor {
    return tidy(() => {
      const { logits, diff, v } = this.#logits(x, sigma, cond);
      const r = logits.softmax(1); // [N, K]
      return diff.mul(r.div(v).unsqueeze(2)).sum(1).neg().to({ dtype: x.dtype }).reshape(x.shape); // sum_k r_k (mu_k - x) / v_k
    });
  }

  /** The exact denoiser E[x0 | x], shaped like x, at noise level sigma (a number or [N]). */
  denoise(x: Tensor, sigma: Tensor | number, cond?: MixtureConditioning): Tensor {
    return tidy(() => {
      const { logits, diff, v } = this.#logits(x, sigma, cond);
      const r = logits.softmax(1); // [N, K]
      const dev = x.device;
      const stds = dev === 'cpu' ? this.stds : this.stds.to({ device: dev });
      const means = dev === 'cpu' ? this.means : this.means.to({ device: dev });
      const shrink = stds.square().unsqueeze(0).div(v); // [N, K]: s_k^2 / v_k
      const perComponent = means.unsqueeze(0).add(diff.mul(shrink.unsqueeze(2))); // [N, K, D]: (s_k^2 x + sigma^2 mu_k) / v_k
      return perComponent.mul(r.unsqueeze(2)).sum(1).to({ dtype: x.dtype }).reshape(x.shape);
    });
  }

  /** Frees the parameters. */
  dispose(): void {
    this.means.dispose();
    this.stds.dispose();
    this.weights.dispose();
  }

  /**
   * log w_k + log N(x; mu_k, v_k I) [N, K], with diff = x - mu_k [N, K, D] and v_k [N, K];
   * with a class, components outside it get -inf and the others log(w_k / P(c)).
   */
  #logits(x: Tensor, sigma: Tensor | number, cond?: MixtureConditioning): { logits: Tensor; diff: Tensor; v: Tensor } {
    if (x.ndim < 2 || x.size !== x.dim(0) * this.dim)
      throw new TypeError(`GaussianMixture: x must have shape [N, ${this.dim}] (or [N, ...] with ${this.dim} elements per sample), got [${x.shape.join(', ')}]`);
    const N = x.dim(0);
    const D = this.dim;
    const dev = x.device;
    const on = (t: Tensor) => (dev === 'cpu' ? t : t.to({ device: dev }));
    const xd = x.to({ dtype: 'float64' }).reshape([N, D]);
    const s = sigma instanceof Tensor ? sigma.to({ dtype: 'float64' }).reshape([-1]) : full([1], sigma, { dtype: 'float64', device: dev });
    if (s.size !== 1 && s.size !== N) throw new TypeError(`GaussianMixture: sigma must be a number or have ${N} elements, got ${s.size}`);
    const v = on(this.stds).square().unsqueeze(0).add(s.square().unsqueeze(1)); // [N or 1, K]
    const diff = xd.unsqueeze(1).sub(on(this.means).unsqueeze(0)); // [N, K, D]
    const logits = on(this.weights)
      .log()
      .unsqueeze(0)
      .sub(
        v
          .mul(2 * Math.PI)
          .log()
          .mul(D / 2),
      )
      .sub(diff.square().sum(2).div(v.mul(2))); // [N, K]
    const labels = cond?.classLabels;
    if (labels === undefined) return { logits, diff, v: v.expand([N, this.components]) };
    if (labels.size !== N) throw new TypeError(`GaussianMixture: classLabels must have ${N} elements, got shape [${labels.shape.join(', ')}]`);
    const l = labels.to({ dtype: 'int64', device: dev }).reshape([N, 1]); // [N, 1]
    const unconditional = l.lt(0).logicalOr(l.ge(this.numClasses)); // [N, 1]
    const allowed = tensor(this.classes as number[], { dtype: 'int64', device: dev })
      .unsqueeze(0)
      .eq(l)
      .logicalOr(unconditional); // [N, K]
    const classWeight = allowed.to({ dtype: 'float64' }).mul(on(this.weights).unsqueeze(0)).sum(1, true); // [N, 1]: P(c)
    return { logits: logits.maskedFill(allowed.logicalNot(), -Infinity).sub(classWeight.log()), diff, v: v.expand([N, this.components]) }; // log w_k / P(c) + ...
  }
}
