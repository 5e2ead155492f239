/**
 * Stochastic gradient descent with momentum, Nesterov momentum and weight decay:
 * torch.optim.SGD's math (Sutskever et al. 2013 for the Nesterov form), every
 * parameter updated in one native call.
 */
import { Handle, native } from '../engine/native';
import { Optimizer } from './optimizer';
import { checkOption, isNum, Params } from './params';

export interface SGDOptions {
  /** Learning rate (required, as in PyTorch). */
  lr: number;
  /** Momentum factor mu (default 0: plain SGD, no buffer is kept). */
  momentum?: number;
  /** Dampening tau of the gradient added to the momentum buffer (default 0). */
  dampening?: number;
  /** L2 penalty lambda added to the gradient (default 0). */
  weightDecay?: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0; default false). */
  nesterov?: boolean;
  /** Maximize the objective instead of minimizing it (default false). */
  maximize?: boolean;
}

/**
 * SGD as torch.optim.SGD (1.13), per parameter with gradient g:
 *   d = g + lambda p
 *   b = d on the first step, else mu b + (1 - tau) d
 *   d = nesterov ? d + mu b : b          (when mu != 0)
 *   p = p - lr d
 *
 * @example
 *   const opt = new SGD(params, { lr: 0.1, momentum: 0.9, nesterov: true });
 *   loss.backward();
 *   opt.step();
 *   opt.zeroGrad();
 */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  readonly maximize: boolean;
  readonly #bufs: Handle[] | null;

  constructor(params: Params, opts: SGDOptions) {
    super('SGD', params, opts?.lr);
    const o = { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, ...opts };
    const nonNegative = (x: number) => isNum(x) && x >= 0;
    this.momentum = checkOption('SGD', 'momentum', o.momentum, nonNegative, 'a finite number >= 0');
    this.dampening = checkOption('SGD', 'dampening', o.dampening, isNum, 'a finite number');
    this.weightDecay = checkOption('SGD', 'weightDecay', o.weightDecay, nonNegative, 'a finite number >= 0');
    this.nesterov = Boolean(o.nesterov);
    this.maximize = Boolean(o.maximize);
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0))
      throw new RangeError(`SGD: nesterov momentum needs momentum > 0 and dampening 0, got momentum ${this.momentum}, dampening ${this.dampening}`);
    this.#bufs = this.momentum !== 0 ? this.addSlot('momentum_buffer') : null;
  }

  get options(): Record<string, number | boolean> {
    const { momentum, dampening, weightDecay, nesterov, maximize } = this;
    return { momentum, dampening, weightDecay, nesterov, maximize };
  }

  step(): void {
    this.check();
    native.sgdStep(this.handles, null, this.#bufs, this.steps, this.lr, this.momentum, this.dampening, this.weightDecay, this.nesterov, this.maximize);
  }
}
