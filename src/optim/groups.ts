/**
 * Parameter groups with their own learning-rate multipliers, as PyTorch's `param_groups` with
 * lr = base lr x multiplier: one optimizer of the same kind per group, driven as one. The usual
 * use is a new layer on a pretrained network (LCM's w embedding, Luo et al. 2023), which would
 * hardly move at the small rate that keeps the pretrained weights intact.
 *
 * The checkpoint format is the inner optimizers' (state.{name}.{slot}, the names are unique across
 * groups), so a run that switches to groups resumes from the optimizer state of one that had none.
 *
 * @example
 *   const opt = new ParamGroups([{ params: body, lrMult: 1 }, { params: wEmbedding, lrMult: 15 }], (p, lr) => new Adam(p, { lr }), 2e-5);
 *   opt.lr = 2e-5;   // the body at 2e-5, the embedding at 3e-4
 *   opt.step();
 */
import { Tensor } from '../engine/tensor';
import { Optimizer, OptimizerState } from './optimizer';
import { NamedParam, Params } from './params';

/** A group: its named parameters and the multiplier of the base learning rate. */
export interface ParamGroup {
  params: readonly (readonly [string, Tensor])[];
  lrMult: number;
}

export class ParamGroups extends Optimizer {
  readonly groups: readonly { optimizer: Optimizer; lrMult: number }[];

  constructor(groups: readonly ParamGroup[], make: (params: Params, lr: number) => Optimizer, lr: number) {
    const all: NamedParam[] = groups.flatMap((g) => g.params.map(([name, param]) => ({ name, param })));
    const inner = groups.map((g, i) => {
      if (!(Number.isFinite(g.lrMult) && g.lrMult > 0)) throw new RangeError(`ParamGroups: groups[${i}].lrMult must be a number > 0, got ${g.lrMult}`);
      return { optimizer: make(g.params, lr * g.lrMult), lrMult: g.lrMult };
    });
    super('ParamGroups', all, lr); // checks the union: non-empty, no name twice (the saved optim.type is the groups' own)
    this.groups = inner;
  }

  /** Steps every group at the base rate times its multiplier. */
  step(): void {
    for (const g of this.groups) {
      g.optimizer.lr = this.lr * g.lrMult;
      g.optimizer.step();
    }
  }

  get options(): Record<string, number | boolean | number[]> {
    return { ...this.groups[0].optimizer.options, lrMults: this.groups.map((g) => g.lrMult) };
  }

  override stepCount(i = 0): number {
    let j = i;
    for (const g of this.groups) {
      if (j < g.optimizer.params.length) return g.optimizer.stepCount(j);
      j -= g.optimizer.params.length;
    }
    return super.stepCount(i); // out of range: the base's error
  }

  override stateDict(): OptimizerState {
    const states = this.groups.map((g) => g.optimizer.stateDict());
    const tensors: Record<string, Tensor> = Object.fromEntries(states.flatMap((s) => Object.entries(s.tensors)));
    return { tensors, metadata: { ...states[0].metadata, 'optim.options': JSON.stringify({ ...this.options, lr: this.lr }) } };
  }

  /** Each group takes its parameters' entries (the others are extra to it); the base rate comes from the metadata. */
  override loadStateDict(state: OptimizerState): void {
    for (const g of this.groups) g.optimizer.loadStateDict(state);
    const saved = state.metadata?.['optim.options'];
    const lr = saved === undefined ? undefined : (JSON.parse(saved) as { lr?: unknown }).lr;
    if (typeof lr === 'number') this.lr = lr;
  }

  override dispose(): void {
    for (const g of this.groups) g.optimizer.dispose();
    super.dispose();
  }
}
