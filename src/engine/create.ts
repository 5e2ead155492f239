/**
 * Making tensors: from JS data, filled, ranges, and joined from others.
 * Random tensors come from a seeded `Generator` (see random.ts).
 *
 * @example
 *   const a = tensor([[1, 2], [3, 4]]);            // float32 [2, 2]
 *   const b = zeros([2, 3], { dtype: 'float64' });
 *   const c = arange(0, 10, 2);                    // [0, 2, 4, 6, 8]
 *   const d = cat([a, a], 0);                      // [4, 2]
 */
import { DType, dtypeCode, itemSize } from './dtype';
import { native } from './native';
import { NestedArray, Tensor, TensorOptions, TypedArray } from './tensor';

const DEFAULT_DTYPE: DType = 'float32';
const dev = (o?: TensorOptions) => o?.device ?? 'cpu';
const code = (o?: TensorOptions, fallback: DType = DEFAULT_DTYPE) => dtypeCode(o?.dtype ?? fallback);

/** Checks a shape argument: a list of non-negative integers. */
export function checkShape(shape: readonly number[], name = 'shape'): number[] {
  // `satisfies unknown`: a JavaScript caller may pass anything, and the check must not narrow the type to any[]
  if (!Array.isArray(shape satisfies unknown) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0))
    throw new TypeError(`${name} must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  return shape.slice();
}

function typedDType(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Int16Array) return 'int16';
  if (a instanceof Int8Array) return 'int8';
  return 'uint8';
}

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let d: NestedArray = data;
  while (Array.isArray(d)) {
    shape.push(d.length);
    if (d.length === 0) break;
    d = d[0];
  }
  return shape;
}

function flatten(data: NestedArray, shape: number[], depth: number, out: (number | boolean)[]): void {
  if (depth === shape.length) {
    if (typeof data !== 'number' && typeof data !== 'boolean') throw new TypeError(`tensor: nested arrays are ragged (expected a scalar at depth ${depth})`);
    out.push(data);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth]) throw new TypeError(`tensor: nested arrays are ragged (expected length ${shape[depth]} at depth ${depth})`);
  for (const x of data) flatten(x, shape, depth + 1, out);
}

/** Packs numbers into the bytes of `dtype` (float16/bfloat16 go through float32). */
function pack(values: ArrayLike<number | boolean>, dtype: DType): TypedArray {
  switch (dtype) {
    case 'float64':
      return Float64Array.from(values as ArrayLike<number>, Number);
    case 'int64':
      return BigInt64Array.from(values as ArrayLike<number>, (v) => {
        const n = Number(v);
        if (!Number.isInteger(n)) throw new TypeError(`tensor: int64 values must be integers, got ${v}`);
        return BigInt(n);
      });
    case 'int32':
      return Int32Array.from(values as ArrayLike<number>, Number);
    case 'int16':
      return Int16Array.from(values as ArrayLike<number>, Number);
    case 'int8':
      return Int8Array.from(values as ArrayLike<number>, Number);
    case 'uint8':
    case 'bool':
      return Uint8Array.from(values as ArrayLike<number>, (v) => (dtype === 'bool' ? (v ? 1 : 0) : Number(v)));
    default:
      return Float32Array.from(values as ArrayLike<number>, Number);
  }
}

/**
 * A tensor from nested arrays, a number, or a typed array (with `shape`).
 * dtype defaults to float32 for numbers, bool for booleans, and the array's own
 * type for typed arrays.
 */
export function tensor(data: NestedArray | TypedArray, opts: TensorOptions & { shape?: number[] } = {}): Tensor {
  let values: ArrayLike<number | boolean>;
  let shape: number[];
  let natural: DType;
  if (ArrayBuffer.isView(data)) {
    natural = typedDType(data);
    shape = opts.shape ? checkShape(opts.shape) : [data.length];
    if (natural === 'int64' && (opts.dtype ?? 'int64') === 'int64') return fromBytes(data, 'int64', shape, opts);
    values = natural === 'int64' ? Array.from(data as BigInt64Array, Number) : (data as ArrayLike<number>);
  } else {
    shape = opts.shape ? checkShape(opts.shape) : inferShape(data);
    const flat: (number | boolean)[] = [];
    flatten(data, inferShape(data), 0, flat);
    values = flat;
    natural = flat.length > 0 && typeof flat[0] === 'boolean' ? 'bool' : DEFAULT_DTYPE;
  }
  const dtype = opts.dtype ?? natural;
  const n = shape.reduce((a, b) => a * b, 1);
  if (n !== values.length) throw new TypeError(`tensor: ${values.length} values do not fill shape [${shape.join(', ')}]`);
  if (dtype === 'float16' || dtype === 'bfloat16') {
    const f = fromBytes(pack(values, 'float32'), 'float32', shape);
    try {
      return f.to({ dtype, device: opts.device });
    } finally {
      f.dispose();
    }
  }
  return fromBytes(pack(values, dtype), dtype, shape, opts);
}

/** A tensor whose memory is a copy of `data`'s bytes, read as `dtype` in row-major order. */
export function fromBytes(data: ArrayBufferView, dtype: DType, shape: number[], opts: { device?: string } = {}): Tensor {
  const s = checkShape(shape);
  const need = s.reduce((a, b) => a * b, 1) * itemSize(dtype);
  if (data.byteLength !== need) throw new RangeError(`fromBytes: ${data.byteLength} bytes given, shape [${s.join(', ')}] of ${dtype} needs ${need}`);
  return new Tensor(native.fromBytes(data, dtypeCode(dtype), s, opts.device ?? null));
}

export function zeros(shape: number[], opts?: TensorOptions): Tensor {
  return new Tensor(native.zeros(checkShape(shape), code(opts), dev(opts)));
}

export function ones(shape: number[], opts?: TensorOptions): Tensor {
  return new Tensor(native.ones(checkShape(shape), code(opts), dev(opts)));
}

/** Uninitialized memory (fast; fill it before reading). */
export function empty(shape: number[], opts?: TensorOptions): Tensor {
  return new Tensor(native.empty(checkShape(shape), code(opts), dev(opts)));
}

export function full(shape: number[], value: number | boolean, opts?: TensorOptions): Tensor {
  return new Tensor(native.full(checkShape(shape), value, code(opts, typeof value === 'boolean' ? 'bool' : DEFAULT_DTYPE), dev(opts)));
}

export function zerosLike(t: Tensor, opts: { dtype?: DType } = {}): Tensor {
  return new Tensor(native.fullLike(t.handle, 0, opts.dtype ? dtypeCode(opts.dtype) : null));
}

export function onesLike(t: Tensor, opts: { dtype?: DType } = {}): Tensor {
  return new Tensor(native.fullLike(t.handle, 1, opts.dtype ? dtypeCode(opts.dtype) : null));
}

export function fullLike(t: Tensor, value: number | boolean, opts: { dtype?: DType } = {}): Tensor {
  return new Tensor(native.fullLike(t.handle, value, opts.dtype ? dtypeCode(opts.dtype) : null));
}

/** [start, end) in steps of `step`; arange(n) is 0..n-1. Integer arguments give int64 unless dtype says otherwise. */
export function arange(start: number, end?: number, step = 1, opts?: TensorOptions): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (step === 0) throw new RangeError('arange: step must be non-zero');
  const ints = [start, end, step].every(Number.isInteger);
  return new Tensor(native.arange(start, end, step, code(opts, ints ? 'int64' : DEFAULT_DTYPE), dev(opts)));
}

/** `steps` evenly spaced values from start to end inclusive. */
export function linspace(start: number, end: number, steps: number, opts?: TensorOptions): Tensor {
  if (!Number.isSafeInteger(steps) || steps < 0) throw new RangeError(`linspace: steps must be a non-negative integer, got ${steps}`);
  return new Tensor(native.linspace(start, end, steps, code(opts), dev(opts)));
}

/** The n x m identity (m defaults to n). */
export function eye(n: number, m = n, opts?: TensorOptions): Tensor {
  return new Tensor(native.eye(n, m, code(opts), dev(opts)));
}

/** Joins tensors along an existing dim. */
export function cat(tensors: Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new RangeError('cat: needs at least one tensor');
  return new Tensor(
    native.cat(
      tensors.map((t) => t.handle),
      dim,
    ),
  );
}

/** Joins tensors along a new dim. */
export function stack(tensors: Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new RangeError('stack: needs at least one tensor');
  return new Tensor(
    native.stack(
      tensors.map((t) => t.handle),
      dim,
    ),
  );
}

/** Elementwise choice: cond ? a : b (numbers allowed for a and b). */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  return cond.where(a, b);
}
