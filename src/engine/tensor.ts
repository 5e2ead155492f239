/**
 * The Tensor: a handle on a libtorch tensor in native memory, with the math,
 * shape and autograd methods the rest of Diffuse is written in.
 *
 * Memory: a tensor holds native memory that V8 does not see. Free it with
 * `dispose()`, or create it inside `tidy(() => ...)`, which frees every tensor made
 * inside except the ones returned or `keep()`-ed. Tensors nobody frees are
 * released when V8 collects them (the addon reports their bytes to V8, so memory
 * pressure triggers collection) — a backstop, not a plan.
 *
 * @example
 *   const x = tensor([[1, 2], [3, 4]]);
 *   const y = tidy(() => x.mul(2).add(1).sum()); // intermediates freed
 *   y.item(); // 24
 */
import { DType, dtypeCode, dtypeFromCode, isFloating } from './dtype';
import { GenHandle, Handle, native, OPS } from './native';

/** 'cpu', 'cuda' or 'cuda:N'. */
export type Device = string;
/** Where and how a new tensor is made. */
export interface TensorOptions {
  /** Element type (default float32). */
  dtype?: DType;
  /** Device (default 'cpu'). */
  device?: Device;
}
/** A number (or boolean) stands for a scalar operand, typed like a Python scalar. */
export type Operand = Tensor | number | boolean;
/** Nested arrays of numbers or booleans. */
export type NestedArray = number | boolean | NestedArray[];
export type TypedArray = Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array;

// ---- scopes: a stack of lists of tensors made while each scope was open ----
const scopes: Tensor[][] = [];

/** @internal Opens a scope; tensors made until closeScope are recorded in it. */
export function openScope(): Tensor[] {
  const s: Tensor[] = [];
  scopes.push(s);
  return s;
}

/** @internal Closes the innermost scope, freeing its tensors except those in `keepSet`, which move to the parent scope. */
export function closeScope(scope: Tensor[], keepSet: Set<Tensor>): void {
  if (scopes[scopes.length - 1] !== scope) throw new Error('tidy: scopes closed out of order (was an async function passed to tidy?)');
  scopes.pop();
  const parent = scopes.length > 0 ? scopes[scopes.length - 1] : undefined;
  for (const t of scope) {
    if (t.kept)
      guard(t); // leaves every scope
    else if (keepSet.has(t)) {
      if (parent) parent.push(t);
      else guard(t);
    } else t.dispose();
  }
}

// ---- the GC backstop ----
// A tensor nobody disposes is released when V8 collects its handle (the Tensor, or code
// that keeps the raw handle, holds it): this registry watches the handle and then
// disposes the tensor through an alias of it (a no-op if it was disposed meanwhile).
// The addon's handles carry no finalizer of their own (per-handle N-API finalizers
// cost more than a small op). Registering costs about as much as a small op too, so
// only tensors that outlive their first moments are registered: those made in a scope
// when they leave it undisposed (kept, or returned from the outermost tidy), and those
// made outside any scope in batches, once 1024 are waiting or when the current task's
// microtasks run, whichever comes first; the ones disposed by then never are.
const backstop = new FinalizationRegistry<Handle>((alias) => native.dispose(alias));
const unguarded: Tensor[] = [];
let flushQueued = false;

function guard(t: Tensor): void {
  if (unguarded.push(t) >= 1024) registerUnguarded();
  else if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(flushUnguarded);
  }
}

function flushUnguarded(): void {
  flushQueued = false;
  registerUnguarded();
}

function registerUnguarded(): void {
  for (const t of unguarded) if (!t.isDisposed) backstop.register(t.handle, native.handleAlias(t.handle));
  unguarded.length = 0;
}

const h = (x: Operand): Handle | number | boolean => (x instanceof Tensor ? x.handle : x);

export class Tensor {
  /** The native handle (advanced use). */
  readonly handle: Handle;
  /** True once `keep()` exempted this tensor from every scope. */
  kept = false;
  #disposed = false;
  #shape: number[] | undefined;

  /** @internal Wraps a handle the addon returned. */
  constructor(handle: Handle) {
    this.handle = handle;
    // (scopes[-1] on an empty stack would be a slow property lookup: test the length)
    if (scopes.length > 0) scopes[scopes.length - 1].push(this);
    else guard(this);
  }

  // ---- metadata ----
  /** Sizes of each dimension. */
  get shape(): number[] {
    if (this.#shape === undefined) this.#shape = native.shape(this.handle);
    return this.#shape.slice();
  }
  /** Number of dimensions. */
  get ndim(): number {
    return (this.#shape ??= native.shape(this.handle)).length;
  }
  /** Number of elements. */
  get size(): number {
    return (this.#shape ??= native.shape(this.handle)).reduce((a, b) => a * b, 1);
  }
  /** Size of one dimension (negative counts from the end). */
  dim(d: number): number {
    const s = (this.#shape ??= native.shape(this.handle));
    const i = d < 0 ? s.length + d : d;
    if (i < 0 || i >= s.length) throw new RangeError(`dim: dimension ${d} is out of range for a ${s.length}-d tensor`);
    return s[i];
  }
  get dtype(): DType {
    return dtypeFromCode(native.dtype(this.handle));
  }
  get device(): Device {
    return native.device(this.handle);
  }
  get isDisposed(): boolean {
    return this.#disposed;
  }
  /** Frees the native memory now (idempotent). Using the tensor afterwards is an error. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    native.dispose(this.handle);
  }
  toString(): string {
    if (this.#disposed) return 'Tensor(disposed)';
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device})`;
  }

  // ---- reading values ----
  /** The only element, as a number (or boolean). */
  item(): number {
    return native.item(this.handle) as number;
  }
  /** Raw row-major little-endian bytes (copied to the CPU). */
  bytes(): Uint8Array {
    return native.toBytes(this.handle);
  }
  /** A typed-array copy of the values; float16/bfloat16 come back as Float32Array. */
  data(): TypedArray {
    const d = this.dtype;
    if (d === 'float16' || d === 'bfloat16') {
      const f = new Tensor(native.to(this.handle, dtypeCode('float32'), null));
      try {
        return f.data();
      } finally {
        f.dispose();
      }
    }
    const b = this.bytes();
    const buf = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    switch (d) {
      case 'float32':
        return new Float32Array(buf);
      case 'float64':
        return new Float64Array(buf);
      case 'int64':
        return new BigInt64Array(buf);
      case 'int32':
        return new Int32Array(buf);
      case 'int16':
        return new Int16Array(buf);
      case 'int8':
        return new Int8Array(buf);
      default:
        return new Uint8Array(buf);
    }
  }
  /** The values as float64, flat in row-major order (any dtype). */
  toFloat64Array(): Float64Array {
    if (this.dtype === 'float64') return this.data() as Float64Array;
    const f = new Tensor(native.to(this.handle, dtypeCode('float64'), null));
    try {
      return f.data() as Float64Array;
    } finally {
      f.dispose();
    }
  }
  /** Nested JS arrays of numbers (booleans for bool tensors). */
  toArray(): NestedArray {
    const d = this.dtype;
    const raw = this.data();
    const flat: (number | boolean)[] = d === 'bool' ? Array.from(raw as Uint8Array, (v) => v !== 0) : Array.from(raw as ArrayLike<number | bigint>, Number);
    const shape = this.shape;
    if (shape.length === 0) return flat[0];
    let k = 0;
    const build = (dim: number): NestedArray[] => {
      const out: NestedArray[] = [];
      for (let i = 0; i < shape[dim]; i++) out.push(dim === shape.length - 1 ? flat[k++] : build(dim + 1));
      return out;
    };
    return build(0);
  }

  // ---- elementwise math ----
  private un(op: string): Tensor {
    return new Tensor(native.unary(OPS.unary[op], this.handle));
  }
  private bin(op: string, other: Operand): Tensor {
    return new Tensor(native.binary(OPS.binary[op], this.handle, h(other)));
  }
  /** this + alpha * other */
  add(other: Operand, alpha?: number): Tensor {
    if (alpha !== undefined && alpha !== 1) return new Tensor(native.addScaled(this.handle, h(other), alpha));
    return this.bin('add', other);
  }
  sub(other: Operand): Tensor {
    return this.bin('sub', other);
  }
  /** other - this (for a number on the left: 1 - t). */
  rsub(other: number): Tensor {
    return new Tensor(native.rbinary(OPS.binary.sub, this.handle, other));
  }
  mul(other: Operand): Tensor {
    return this.bin('mul', other);
  }
  div(other: Operand): Tensor {
    return this.bin('div', other);
  }
  /** other / this (for a number on the left: 1 / t is reciprocal()). */
  rdiv(other: number): Tensor {
    return new Tensor(native.rbinary(OPS.binary.div, this.handle, other));
  }
  pow(exponent: Operand): Tensor {
    return this.bin('pow', exponent);
  }
  maximum(other: Operand): Tensor {
    return this.bin('maximum', other);
  }
  minimum(other: Operand): Tensor {
    return this.bin('minimum', other);
  }
  remainder(other: Operand): Tensor {
    return this.bin('remainder', other);
  }
  atan2(other: Operand): Tensor {
    return this.bin('atan2', other);
  }
  eq(other: Operand): Tensor {
    return this.bin('eq', other);
  }
  ne(other: Operand): Tensor {
    return this.bin('ne', other);
  }
  lt(other: Operand): Tensor {
    return this.bin('lt', other);
  }
  le(other: Operand): Tensor {
    return this.bin('le', other);
  }
  gt(other: Operand): Tensor {
    return this.bin('gt', other);
  }
  ge(other: Operand): Tensor {
    return this.bin('ge', other);
  }
  logicalAnd(other: Operand): Tensor {
    return this.bin('logicalAnd', other);
  }
  logicalOr(other: Operand): Tensor {
    return this.bin('logicalOr', other);
  }
  neg(): Tensor {
    return this.un('neg');
  }
  abs(): Tensor {
    return this.un('abs');
  }
  exp(): Tensor {
    return this.un('exp');
  }
  log(): Tensor {
    return this.un('log');
  }
  sqrt(): Tensor {
    return this.un('sqrt');
  }
  rsqrt(): Tensor {
    return this.un('rsqrt');
  }
  sin(): Tensor {
    return this.un('sin');
  }
  cos(): Tensor {
    return this.un('cos');
  }
  tanh(): Tensor {
    return this.un('tanh');
  }
  sigmoid(): Tensor {
    return this.un('sigmoid');
  }
  silu(): Tensor {
    return this.un('silu');
  }
  relu(): Tensor {
    return this.un('relu');
  }
  /** GELU, exact (erf) or with the tanh approximation. */
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor {
    return this.un(approximate === 'tanh' ? 'geluTanh' : 'gelu');
  }
  square(): Tensor {
    return this.un('square');
  }
  reciprocal(): Tensor {
    return this.un('reciprocal');
  }
  sign(): Tensor {
    return this.un('sign');
  }
  floor(): Tensor {
    return this.un('floor');
  }
  ceil(): Tensor {
    return this.un('ceil');
  }
  round(): Tensor {
    return this.un('round');
  }
  log1p(): Tensor {
    return this.un('log1p');
  }
  expm1(): Tensor {
    return this.un('expm1');
  }
  log2(): Tensor {
    return this.un('log2');
  }
  erf(): Tensor {
    return this.un('erf');
  }
  erfinv(): Tensor {
    return this.un('erfinv');
  }
  softplus(): Tensor {
    return this.un('softplus');
  }
  logicalNot(): Tensor {
    return this.un('logicalNot');
  }
  isnan(): Tensor {
    return this.un('isnan');
  }
  isfinite(): Tensor {
    return this.un('isfinite');
  }
  /** Clamps into [min, max]; either bound may be omitted (null). */
  clamp(min: number | null, max: number | null = null): Tensor {
    return new Tensor(native.clamp(this.handle, min, max));
  }
  /** this + weight (end - this). */
  lerp(end: Tensor, weight: Tensor | number): Tensor {
    return new Tensor(native.lerp(this.handle, end.handle, weight instanceof Tensor ? weight.handle : weight));
  }
  /** Elementwise choice: where this (bool) is true take a, else b. */
  where(a: Operand, b: Operand): Tensor {
    return new Tensor(native.where(this.handle, h(a), h(b)));
  }
  maskedFill(mask: Tensor, value: number | boolean): Tensor {
    return new Tensor(native.maskedFill(this.handle, mask.handle, value));
  }

  // ---- reductions (dims: a dim, a list, or all when omitted) ----
  private red(op: string, dims: number | number[] | undefined, keepdim: boolean): Tensor {
    return new Tensor(native.reduce(OPS.reduce[op], this.handle, dims === undefined ? null : ([] as number[]).concat(dims), keepdim));
  }
  sum(dims?: number | number[], keepdim = false): Tensor {
    return this.red('sum', dims, keepdim);
  }
  mean(dims?: number | number[], keepdim = false): Tensor {
    return this.red('mean', dims, keepdim);
  }
  /** Maximum over dims (the values; see argmax for the indices). */
  max(dims?: number | number[], keepdim = false): Tensor {
    return this.red('max', dims, keepdim);
  }
  min(dims?: number | number[], keepdim = false): Tensor {
    return this.red('min', dims, keepdim);
  }
  prod(dims?: number | number[], keepdim = false): Tensor {
    return this.red('prod', dims, keepdim);
  }
  logsumexp(dims?: number | number[], keepdim = false): Tensor {
    return this.red('logsumexp', dims, keepdim);
  }
  /** Variance; unbiased (Bessel's correction, n - 1) by default as in PyTorch. */
  var(dims?: number | number[], { unbiased = true, keepdim = false } = {}): Tensor {
    return this.red(unbiased ? 'var' : 'varBiased', dims, keepdim);
  }
  std(dims?: number | number[], { unbiased = true, keepdim = false } = {}): Tensor {
    return this.red(unbiased ? 'std' : 'stdBiased', dims, keepdim);
  }
  all(dims?: number | number[], keepdim = false): Tensor {
    return this.red('all', dims, keepdim);
  }
  any(dims?: number | number[], keepdim = false): Tensor {
    return this.red('any', dims, keepdim);
  }
  /** Vector p-norm over dims (default 2, all dims). */
  norm(p = 2, dims?: number | number[], keepdim = false): Tensor {
    return new Tensor(native.norm(this.handle, p, dims === undefined ? null : ([] as number[]).concat(dims), keepdim));
  }
  argmax(dim?: number, keepdim = false): Tensor {
    return new Tensor(native.argmax(this.handle, dim ?? null, keepdim));
  }
  argmin(dim?: number, keepdim = false): Tensor {
    return new Tensor(native.argmin(this.handle, dim ?? null, keepdim));
  }
  cumsum(dim: number): Tensor {
    return new Tensor(native.cumsum(this.handle, dim));
  }
  /** The k largest (or smallest) values along dim, with their indices. */
  topk(k: number, dim = -1, largest = true): [Tensor, Tensor] {
    const [v, i] = native.topk(this.handle, k, dim, largest);
    return [new Tensor(v), new Tensor(i)];
  }
  sort(dim = -1, descending = false): [Tensor, Tensor] {
    const [v, i] = native.sort(this.handle, dim, descending);
    return [new Tensor(v), new Tensor(i)];
  }
  softmax(dim: number): Tensor {
    return new Tensor(native.softmax(this.handle, dim));
  }
  logSoftmax(dim: number): Tensor {
    return new Tensor(native.logSoftmax(this.handle, dim));
  }

  // ---- linear algebra ----
  matmul(other: Tensor): Tensor {
    return new Tensor(native.matmul(this.handle, other.handle));
  }
  bmm(other: Tensor): Tensor {
    return new Tensor(native.bmm(this.handle, other.handle));
  }

  // ---- shape ----
  reshape(...shape: number[] | [number[]]): Tensor {
    return new Tensor(native.reshape(this.handle, shape.flat()));
  }
  /** A view with a new shape (no copy; fails if the strides do not allow it). */
  view(...shape: number[] | [number[]]): Tensor {
    return new Tensor(native.view(this.handle, shape.flat()));
  }
  permute(...dims: number[] | [number[]]): Tensor {
    return new Tensor(native.permute(this.handle, dims.flat()));
  }
  transpose(d0 = -2, d1 = -1): Tensor {
    return new Tensor(native.transpose(this.handle, d0, d1));
  }
  /** Broadcasts size-1 dims to `shape` (-1 keeps a dim); a view. */
  expand(...shape: number[] | [number[]]): Tensor {
    return new Tensor(native.expand(this.handle, shape.flat()));
  }
  expandAs(other: Tensor): Tensor {
    return this.expand(other.shape);
  }
  /** Splits into chunks of `size` (a number) or of the given sizes along dim. */
  split(size: number | number[], dim = 0): Tensor[] {
    return native.split(this.handle, size, dim).map((x) => new Tensor(x));
  }
  chunk(chunks: number, dim = 0): Tensor[] {
    return native.chunk(this.handle, chunks, dim).map((x) => new Tensor(x));
  }
  unbind(dim = 0): Tensor[] {
    return native.unbind(this.handle, dim).map((x) => new Tensor(x));
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return new Tensor(native.narrow(this.handle, dim, start, length));
  }
  /** Python's t[..., start:end:step] along one dim; start/end may be negative or omitted. */
  slice(dim: number, start?: number | null, end?: number | null, step = 1): Tensor {
    return new Tensor(native.slice(this.handle, dim, start ?? null, end ?? null, step));
  }
  /** t[index] along dim, dropping that dim. */
  select(dim: number, index: number): Tensor {
    return new Tensor(native.select(this.handle, dim, index));
  }
  indexSelect(dim: number, index: Tensor): Tensor {
    return new Tensor(native.indexSelect(this.handle, dim, index.handle));
  }
  gather(dim: number, index: Tensor): Tensor {
    return new Tensor(native.gather(this.handle, dim, index.handle));
  }
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    return new Tensor(native.scatterAdd(this.handle, dim, index.handle, src.handle));
  }
  /** Removes size-1 dims (all, or just `dim`). */
  squeeze(dim?: number): Tensor {
    return new Tensor(native.squeeze(this.handle, dim ?? null));
  }
  unsqueeze(dim: number): Tensor {
    return new Tensor(native.unsqueeze(this.handle, dim));
  }
  flatten(start = 0, end = -1): Tensor {
    return new Tensor(native.flatten(this.handle, start, end));
  }
  /** Tiles the tensor `reps[i]` times along each dim. */
  repeat(...reps: number[] | [number[]]): Tensor {
    return new Tensor(native.repeat(this.handle, reps.flat()));
  }
  flip(...dims: number[] | [number[]]): Tensor {
    return new Tensor(native.flip(this.handle, dims.flat()));
  }
  roll(shifts: number | number[], dims: number | number[]): Tensor {
    return new Tensor(native.roll(this.handle, ([] as number[]).concat(shifts), ([] as number[]).concat(dims)));
  }
  /**
   * Pads the last dims: pads = [left, right, top, bottom, ...] as in
   * torch.nn.functional.pad; mode constant (with value), reflect, replicate or circular.
   */
  pad(pads: number[], mode: 'constant' | 'reflect' | 'replicate' | 'circular' = 'constant', value = 0): Tensor {
    return new Tensor(native.pad(this.handle, pads, mode, mode === 'constant' ? value : null));
  }
  triu(k = 0): Tensor {
    return new Tensor(native.triu(this.handle, k));
  }
  tril(k = 0): Tensor {
    return new Tensor(native.tril(this.handle, k));
  }
  contiguous(): Tensor {
    return new Tensor(native.contiguous(this.handle));
  }
  get isContiguous(): boolean {
    return native.isContiguous(this.handle);
  }
  /** A copy with its own memory (differentiable). */
  clone(): Tensor {
    return new Tensor(native.clone(this.handle));
  }

  // ---- device and dtype ----
  /** Converts to another dtype and/or device (a new tensor; a view when nothing changes). */
  to(opts: TensorOptions | DType | Device): Tensor {
    const o: TensorOptions = typeof opts === 'string' ? (opts.startsWith('cpu') || opts.startsWith('cuda') ? { device: opts } : { dtype: opts as DType }) : opts;
    return new Tensor(native.to(this.handle, o.dtype === undefined ? null : dtypeCode(o.dtype), o.device ?? null));
  }
  float(): Tensor {
    return this.to({ dtype: 'float32' });
  }
  double(): Tensor {
    return this.to({ dtype: 'float64' });
  }
  half(): Tensor {
    return this.to({ dtype: 'float16' });
  }
  bfloat16(): Tensor {
    return this.to({ dtype: 'bfloat16' });
  }
  long(): Tensor {
    return this.to({ dtype: 'int64' });
  }
  int(): Tensor {
    return this.to({ dtype: 'int32' });
  }
  bool(): Tensor {
    return this.to({ dtype: 'bool' });
  }
  cpu(): Tensor {
    return this.to({ device: 'cpu' });
  }
  cuda(index = 0): Tensor {
    return this.to({ device: `cuda:${index}` });
  }

  // ---- in-place updates (for optimizers, EMA and buffers; return this) ----
  add_(other: Operand, alpha?: number): this {
    native.add_(this.handle, h(other), alpha ?? null);
    return this;
  }
  sub_(other: Operand): this {
    native.sub_(this.handle, h(other));
    return this;
  }
  mul_(other: Operand): this {
    native.mul_(this.handle, h(other));
    return this;
  }
  div_(other: Operand): this {
    native.div_(this.handle, h(other));
    return this;
  }
  /** Copies src's values into this tensor (broadcasting, casting, across devices). */
  copy_(src: Tensor): this {
    native.copy_(this.handle, src.handle);
    return this;
  }
  zero_(): this {
    native.zero_(this.handle);
    return this;
  }
  fill_(value: number | boolean): this {
    native.fill_(this.handle, value);
    return this;
  }
  /** this += weight (end - this): the EMA update. */
  lerp_(end: Tensor, weight: Tensor | number): this {
    native.lerp_(this.handle, end.handle, weight instanceof Tensor ? weight.handle : weight);
    return this;
  }
  /** this += value * a * b */
  addcmul_(a: Tensor, b: Tensor, value = 1): this {
    native.addcmul_(this.handle, a.handle, b.handle, value);
    return this;
  }
  /** this += value * a / b */
  addcdiv_(a: Tensor, b: Tensor, value = 1): this {
    native.addcdiv_(this.handle, a.handle, b.handle, value);
    return this;
  }

  // ---- autograd ----
  get requiresGrad(): boolean {
    return native.requiresGrad(this.handle);
  }
  /** Marks a leaf tensor as a variable to differentiate with respect to. */
  requiresGrad_(on = true): this {
    if (on && !isFloating(this.dtype)) throw new TypeError(`requiresGrad_: only floating-point tensors can require grad, got ${this.dtype}`);
    native.setRequiresGrad(this.handle, on);
    return this;
  }
  /** The gradient accumulated by backward() (null before any). A new handle on the same memory. */
  get grad(): Tensor | null {
    const g = native.gradOf(this.handle);
    return g === null ? null : new Tensor(g);
  }
  set grad(g: Tensor | null) {
    native.setGrad(this.handle, g === null ? null : g.handle);
  }
  /** Keeps .grad for a non-leaf tensor during backward(). */
  retainGrad(): this {
    native.retainGrad(this.handle);
    return this;
  }
  get isLeaf(): boolean {
    return native.isLeaf(this.handle);
  }
  /** Name of the autograd node that produced this tensor ('' for leaves), e.g. 'MulBackward0'. */
  get gradFn(): string {
    return native.gradFn(this.handle);
  }
  /** Accumulates d(this)/d(leaves) into their .grad; `gradient` is required for non-scalars. */
  backward(gradient?: Tensor, { retainGraph, createGraph = false }: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    native.backward(this.handle, gradient?.handle ?? null, retainGraph ?? null, createGraph);
  }
  /** The same values cut from the graph (shares memory). */
  detach(): Tensor {
    return new Tensor(native.detach(this.handle));
  }
}

/** @internal Wraps a generator handle for random ops. */
export type { GenHandle };
