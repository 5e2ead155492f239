/**
 * Adam (Kingma & Ba 2015, Algorithm 1) and AdamW (Loshchilov & Hutter 2019,
 * Algorithm 2: decoupled weight decay), one class with a `decoupled` flag, with
 * torch.optim.Adam / AdamW's arithmetic (PyTorch 1.13), every parameter updated in
 * one native call.
 */
import { Handle, native } from '../engine/native';
import { Optimizer } from './optimizer';
import { checkOption, isNum, Params } from './params';

export interface AdamOptions {
  /** Learning rate alpha (default 1e-3). */
  lr?: number;
  /** Decay rates [beta1, beta2] of the moment estimates, each in [0, 1) (default [0.9, 0.999]). */
  betas?: readonly [number, number];
  /** Added to the denominator for stability, > 0 (default 1e-8). */
  eps?: number;
  /** Weight decay lambda, >= 0 (default 0 for Adam, 1e-2 for AdamW as in PyTorch). */
  weightDecay?: number;
  /** Decoupled weight decay, p *= 1 - lr lambda (AdamW), instead of an L2 term in the gradient (default false). */
  decoupled?: boolean;
  /** AMSGrad (Reddi et al. 2018): normalise by the running maximum of v (default false). */
  amsgrad?: boolean;
  /** Maximize the objective instead of minimizing it (default false). */
  maximize?: boolean;
}

/**
 * Adam as torch.optim.Adam (1.13), per parameter with gradient g at its step t:
 *   g = g + lambda p                    (Adam's L2 weight decay; AdamW instead: p = p (1 - lr lambda))
 *   m = beta1 m + (1 - beta1) g
 *   v = beta2 v + (1 - beta2) g^2
 *   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * (eps is added after the bias correction of v, as PyTorch does.)
 *
 * @example
 *   const opt = new Adam(params, { lr: 1e-3, betas: [0.9, 0.99] });
 *   for (let step = 0; step < n; step++) {
 *     opt.lr = schedule(step);
 *     tidy(() => loss(batch).backward());
 *     opt.step();
 *     opt.zeroGrad();
 *   }
 *   opt.dispose();
 */
export class Adam extends Optimizer {
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  readonly decoupled: boolean;
  readonly amsgrad: boolean;
  readonly maximize: boolean;
  readonly #m: Handle[];
  readonly #v: Handle[];
  readonly #vmax: Handle[] | null;

  constructor(params: Params, opts: AdamOptions = {}) {
    super(opts.decoupled ? 'AdamW' : 'Adam', params, opts.lr ?? 1e-3);
    const { kind } = this;
    const decoupled = Boolean(opts.decoupled);
    const inUnit = (x: number) => isNum(x) && x >= 0 && x < 1;
    const betas = opts.betas ?? [0.9, 0.999];
    checkOption(kind, 'betas', betas, (b) => Array.isArray(b) && b.length === 2, 'a pair [beta1, beta2]');
    this.betas = [checkOption(kind, 'betas[0]', betas[0], inUnit, 'in [0, 1)'), checkOption(kind, 'betas[1]', betas[1], inUnit, 'in [0, 1)')];
    this.eps = checkOption(kind, 'eps', opts.eps ?? 1e-8, (x) => isNum(x) && x > 0, 'a finite number > 0');
    this.weightDecay = checkOption(kind, 'weightDecay', opts.weightDecay ?? (decoupled ? 1e-2 : 0), (x) => isNum(x) && x >= 0, 'a finite number >= 0');
    this.decoupled = decoupled;
    this.amsgrad = Boolean(opts.amsgrad);
    this.maximize = Boolean(opts.maximize);
    this.#m = this.addSlot('exp_avg');
    this.#v = this.addSlot('exp_avg_sq');
    this.#vmax = this.amsgrad ? this.addSlot('max_exp_avg_sq') : null;
  }

  get options(): Record<string, number | boolean | number[]> {
    const { eps, weightDecay, decoupled, amsgrad, maximize } = this;
    return { betas: [...this.betas], eps, weightDecay, decoupled, amsgrad, maximize };
  }

  step(): void {
    this.check();
    const [beta1, beta2] = this.betas;
    native.adamStep(this.handles, null, this.#m, this.#v, this.#vmax, this.steps, this.lr, beta1, beta2, this.eps, this.weightDecay, this.decoupled, this.amsgrad, this.maximize);
  }
}

/**
 * AdamW: Adam with decoupled weight decay (default weightDecay 1e-2), as
 * torch.optim.AdamW. The same class as Adam with `decoupled: true`.
 *
 * @example
 *   const opt = new AdamW(params, { lr: 1e-4, weightDecay: 0.01 });
 */
export class AdamW extends Adam {
  constructor(params: Params, opts: Omit<AdamOptions, 'decoupled'> = {}) {
    super(params, { ...opts, decoupled: true });
  }
}
