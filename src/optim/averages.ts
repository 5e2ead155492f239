// Averaged copies of a parameter list, owned by their tracker: the storage and the one-call
// update shared by the classic EMA (ema.ts) and EDM2's power-function EMA (phema.ts).
// Internal to src/optim (not exported from its index).
import type { Handle } from '../engine/native';
import { native } from '../engine/native';
import { Tensor } from '../engine/tensor';
import type { ParamList } from './params';

export class Averages {
  readonly tensors: Tensor[];
  readonly handles: Handle[];

  constructor(list: ParamList) {
    this.handles = native.cloneList(list.handles);
    this.tensors = this.handles.map((h) => {
      const t = new Tensor(h);
      t.kept = true; // owned: no tidy() scope may free it
      return t;
    });
  }

  /** avg = lerp(avg, p, 1 - beta) for every parameter. */
  update(params: Handle[], beta: number): void {
    native.emaUpdate(this.handles, params, beta);
  }

  /** New handles on the averages (no copy), keyed `${prefix}${name}`. */
  view(names: readonly string[], prefix = ''): Record<string, Tensor> {
    return Object.fromEntries(names.map((n, i) => [prefix + n, this.tensors[i].detach()]));
  }

  /** Copies of the averages (their own memory), keyed by name. */
  copy(names: readonly string[]): Record<string, Tensor> {
    return Object.fromEntries(native.cloneList(this.handles).map((h, i) => [names[i], new Tensor(h)]));
  }

  /** Copies saved averages back in, checking names and shapes first. */
  load(who: string, names: readonly string[], tensors: Record<string, Tensor>, prefix = ''): void {
    const src = names.map((n, i) => {
      const t = tensors[prefix + n];
      if (!(t instanceof Tensor)) throw new Error(`${who}.loadStateDict: the state has no tensor ${prefix + n}`);
      if (t.shape.join(',') !== this.tensors[i].shape.join(',')) throw new Error(`${who}.loadStateDict: ${prefix + n} has shape [${t.shape}], the parameter has shape [${this.tensors[i].shape}]`);
      return t.handle;
    });
    native.copyList(this.handles, src);
  }

  dispose(): void {
    for (const t of this.tensors) t.dispose();
  }
}
