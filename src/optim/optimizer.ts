/**
 * What every optimizer shares: the parameter list, per-parameter step counts, state
 * buffers (owned by the optimizer), a settable learning rate, zeroGrad, and the
 * checkpoint format:
 *
 *   tensors   state.{name}.{slot}  (e.g. state.0.exp_avg, state.fc.weight.momentum_buffer)
 *             state.{name}.step    (int64 scalar: the updates this parameter has had)
 *   metadata  optim.type           ('SGD', 'Adam' or 'AdamW')
 *             optim.options        (JSON of the hyperparameters, for the record)
 *
 * `{name}` is the parameter's index, or its name when the optimizer was given named
 * parameters. Both parts go straight into a safetensors file.
 *
 * @example
 *   const s = opt.stateDict();
 *   saveSafetensors('optim.safetensors', s.tensors, s.metadata);
 *   dispose(s.tensors);
 *   // ... later, with an optimizer built the same way:
 *   const f = loadSafetensors('optim.safetensors');
 *   opt.loadStateDict(f);
 *   dispose(f.tensors);
 */
import { tensor } from '../engine/create';
import type { Handle } from '../engine/native';
import { native } from '../engine/native';
import { Tensor } from '../engine/tensor';
import { checkOption, isNum, ParamList, paramList, Params } from './params';

/** An optimizer's state as safetensors tensors and string metadata. */
export interface OptimizerState {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

export abstract class Optimizer {
  /** The parameters, in order. */
  readonly params: readonly Tensor[];
  /** Their names in the state dict (indices as strings for unnamed parameters). */
  readonly names: readonly string[];
  /** @internal Handles of the parameters, cached so a step crosses into native code once. */
  protected readonly handles: Handle[];
  /** @internal Updates each parameter has had (advanced in place by the native kernels). */
  protected readonly steps: Float64Array;
  /** @internal State buffers per slot name, one per parameter, and their handles. */
  protected readonly slots: Record<string, { tensors: Tensor[]; handles: Handle[] }> = {};
  #lr = 0;
  #disposed = false;

  protected constructor(
    /** The name used in errors and in the checkpoint's optim.type. */
    protected readonly kind: string,
    params: Params,
    lr: number,
  ) {
    const list: ParamList = paramList(kind, params);
    this.params = list.tensors;
    this.names = list.names;
    this.handles = list.handles;
    this.steps = new Float64Array(list.tensors.length);
    this.lr = lr;
  }

  /** The learning rate of the next step (set it before each step to follow a schedule). */
  get lr(): number {
    return this.#lr;
  }
  set lr(v: number) {
    this.#lr = checkOption(this.kind, 'lr', v, (x) => isNum(x) && x >= 0, 'a finite number >= 0');
  }

  /** Updates every parameter that has a gradient (`.grad` not null), in one native call. */
  abstract step(): void;

  /** The hyperparameters, as saved in the checkpoint's optim.options. */
  abstract get options(): Record<string, number | boolean | number[]>;

  /** Clears the gradients (to null by default; `setToNone: false` zeroes them in place instead). */
  zeroGrad({ setToNone = true }: { setToNone?: boolean } = {}): void {
    this.check();
    native.zeroGrads(this.handles, setToNone);
  }

  /** How many updates parameter i has had (parameters without a gradient are not updated). */
  stepCount(i = 0): number {
    if (!(i >= 0 && i < this.steps.length)) throw new RangeError(`${this.kind}: no parameter ${i} (there are ${this.steps.length})`);
    return this.steps[i];
  }

  /**
   * The state for a checkpoint. The tensors are new handles on the live state (no copy):
   * save them, then dispose them (which leaves the optimizer's own state alone).
   */
  stateDict(): OptimizerState {
    this.check();
    const tensors: Record<string, Tensor> = {};
    this.names.forEach((name, i) => {
      for (const [slot, s] of Object.entries(this.slots)) tensors[`state.${name}.${slot}`] = s.tensors[i].detach();
      tensors[`state.${name}.step`] = tensor(this.steps[i], { dtype: 'int64' });
    });
    return { tensors, metadata: { 'optim.type': this.kind, 'optim.options': JSON.stringify({ ...this.options, lr: this.lr }) } };
  }

  /**
   * Restores state saved by stateDict() from an optimizer of the same kind over
   * parameters of the same names and shapes: the buffers (copied, cast to the
   * parameters' dtypes), the step counts and lr. The other hyperparameters stay those
   * given to the constructor. Extra tensors are ignored; a missing one is an error.
   */
  loadStateDict(state: OptimizerState): void {
    this.check();
    const type = state.metadata?.['optim.type'];
    if (type !== undefined && type !== this.kind) throw new Error(`${this.kind}.loadStateDict: the state is from ${type}, not ${this.kind}`);
    const get = (key: string, like?: Tensor): Tensor => {
      const t = state.tensors[key];
      if (!(t instanceof Tensor)) throw new Error(`${this.kind}.loadStateDict: the state has no tensor ${key}`);
      if (like && t.shape.join(',') !== like.shape.join(',')) throw new Error(`${this.kind}.loadStateDict: ${key} has shape [${t.shape}], the parameter's state has shape [${like.shape}]`);
      return t;
    };
    const steps = this.names.map((name) => {
      const n = get(`state.${name}.step`).item();
      if (!(Number.isSafeInteger(n) && n >= 0)) throw new Error(`${this.kind}.loadStateDict: state.${name}.step must be a non-negative integer, got ${n}`);
      return n;
    });
    // Everything is checked before anything is copied: a bad state leaves the optimizer as it was.
    const copies = Object.entries(this.slots).map(([slot, s]) => [s.handles, this.names.map((name, i) => get(`state.${name}.${slot}`, s.tensors[i]).handle)]);
    for (const [dst, src] of copies) native.copyList(dst, src);
    this.steps.set(steps);
    const saved = state.metadata?.['optim.options'];
    if (saved !== undefined) {
      const lr = (JSON.parse(saved) as { lr?: unknown }).lr;
      if (typeof lr === 'number') this.lr = lr;
    }
  }

  /** Frees the state buffers. The optimizer cannot be used afterwards; the parameters are untouched. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const s of Object.values(this.slots)) for (const t of s.tensors) t.dispose();
  }

  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** @internal Allocates a zero state buffer per parameter under `slot` (one native call). */
  protected addSlot(slot: string): Handle[] {
    const handles = native.zerosLikeList(this.handles);
    const tensors = handles.map((h) => {
      const t = new Tensor(h);
      t.kept = true; // owned by the optimizer: no tidy() scope may free it
      return t;
    });
    this.slots[slot] = { tensors, handles };
    return handles;
  }

  /** @internal Throws if used after dispose(). */
  protected check(): void {
    if (this.#disposed) throw new Error(`${this.kind}: used after dispose()`);
  }
}
