/**
 * Module: a tree of parameters, buffers and child modules with PyTorch-style
 * dotted names, so state dicts move between Diffuse and PyTorch unchanged.
 *
 * A subclass registers what it owns in its constructor; the property name is the
 * state-dict name:
 *
 * @example
 *   class Affine extends Module {
 *     weight = this.param('weight', ones([4]));
 *     bias = this.param('bias', zeros([4]));
 *     forward(x: Tensor) { return x.mul(this.weight).add(this.bias); }
 *   }
 *   const m = new Affine();
 *   m.stateDict();            // { weight, bias }
 *   m.numParameters();        // 8
 *   m.to({ dtype: 'bfloat16' });
 */
import { DType } from '../engine/dtype';
import { noGrad } from '../engine/scope';
import { Tensor } from '../engine/tensor';

export interface ToOptions {
  device?: string;
  dtype?: DType;
}

export class Module {
  /** Training mode (dropout on, etc.); set by train()/eval(). */
  training = true;
  readonly #params = new Map<string, Tensor>();
  readonly #buffers = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();

  /** Registers a parameter (kept from scopes, requires grad) under `name`, which must be the property it is stored in. */
  protected param(name: string, t: Tensor): Tensor {
    t.kept = true;
    if (!t.requiresGrad) t.requiresGrad_(true);
    this.#params.set(name, t);
    return t;
  }

  /** Registers a buffer: state saved in the state dict but not trained (e.g. fixed frequencies). */
  protected buffer(name: string, t: Tensor): Tensor {
    t.kept = true;
    this.#buffers.set(name, t);
    return t;
  }

  /** Registers a child module under `name`. */
  protected child<M extends Module>(name: string, m: M): M {
    this.#children.set(name, m);
    return m;
  }

  /**
   * Registers a child after construction (adapters attach to a layer this way: LoRA's
   * lora_A and lora_B, src/nn/lora.ts). The name must be new.
   *
   * @example
   *   layer.attach('lora_A', new Linear(64, 4, { bias: false }));   // state dict: lora_A.weight
   */
  attach<M extends Module>(name: string, m: M): M {
    if (this.#children.has(name) || this.#params.has(name) || this.#buffers.has(name)) throw new Error(`attach: this module already has a ${JSON.stringify(name)}`);
    return this.child(name, m);
  }

  /** Removes a child registered under `name` and returns it (the caller owns it now; null when there is none). */
  detach(name: string): Module | null {
    const m = this.#children.get(name) ?? null;
    this.#children.delete(name);
    return m;
  }

  /** Registers a list of child modules as name.0, name.1, ... (PyTorch's ModuleList). */
  protected children<M extends Module>(name: string, ms: M[]): M[] {
    ms.forEach((m, i) => this.#children.set(`${name}.${i}`, m));
    return ms;
  }

  /** [dotted name, tensor] for every parameter, depth first, in registration order. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.#params) out.push([prefix + n, t]);
    for (const [n, c] of this.#children) out.push(...c.namedParameters(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.#buffers) out.push([prefix + n, t]);
    for (const [n, c] of this.#children) out.push(...c.namedBuffers(`${prefix}${n}.`));
    return out;
  }

  /** [dotted name, module] for this module ('') and every descendant. */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, c] of this.#children) out.push(...c.namedModules(`${prefix}${n}.`));
    return out;
  }

  /** Total number of parameter elements. */
  numParameters(): number {
    return this.parameters().reduce((s, p) => s + p.size, 0);
  }

  /** Parameters and buffers by dotted name (the module's own tensors, not copies). */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Copies values from a state dict into this module's tensors (casting dtype and
   * device). strict (default): every name must match and no name may be left over.
   */
  loadStateDict(sd: Record<string, Tensor>, { strict = true }: { strict?: boolean } = {}): void {
    const own = this.stateDict();
    const missing = Object.keys(own).filter((k) => !(k in sd));
    const unexpected = Object.keys(sd).filter((k) => !(k in own));
    if (strict && (missing.length || unexpected.length))
      throw new Error(
        `loadStateDict: ${missing.length ? `missing ${missing.join(', ')}` : ''}${missing.length && unexpected.length ? '; ' : ''}${unexpected.length ? `unexpected ${unexpected.join(', ')}` : ''}`,
      );
    for (const [k, t] of Object.entries(own)) {
      const src = sd[k];
      if (!src) continue;
      const a = t.shape.join(',');
      const b = src.shape.join(',');
      if (a !== b) throw new Error(`loadStateDict: ${k} has shape [${b}] in the state dict but [${a}] in the module`);
    }
    noGrad(() => {
      for (const [k, t] of Object.entries(own)) if (sd[k]) t.copy_(sd[k]);
    });
  }

  /** Sets training mode here and below. */
  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /**
   * Moves/casts every parameter and buffer (the module keeps its identity; the
   * tensors are replaced, so build optimizers after calling to()).
   */
  to(opts: ToOptions): this {
    for (const [, m] of this.namedModules()) {
      m.#swap(m.#params, opts, true);
      m.#swap(m.#buffers, opts, false);
    }
    return this;
  }

  #swap(map: Map<string, Tensor>, opts: ToOptions, isParam: boolean): void {
    for (const [n, t] of map) {
      const moved = noGrad(() => t.to(opts));
      moved.kept = true;
      // A frozen parameter (requiresGrad false, e.g. a LoRA base weight) stays frozen.
      if (isParam && t.requiresGrad && !moved.requiresGrad) moved.requiresGrad_(true);
      t.dispose();
      map.set(n, moved);
      (this as unknown as Record<string, unknown>)[n] = moved;
    }
  }

  /** Sets every parameter's .grad to null. */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const [, t] of [...this.namedParameters(), ...this.namedBuffers()]) t.dispose();
  }
}
