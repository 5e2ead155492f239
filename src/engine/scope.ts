/**
 * Scopes: memory and modes that last for the duration of a function.
 *
 * - `tidy(fn)` frees every tensor made while fn runs, except those fn returns
 *   (found in arrays, plain objects and Maps) and those passed to `keep()`.
 * - `noGrad(fn)` runs fn without recording the autograd graph.
 * - `autocast(fn)` runs fn with CPU autocast to bfloat16 (matmuls and convs in
 *   bf16, sensitive ops in fp32), as torch.autocast('cpu') does.
 * - `memory()` counts live tensors and bytes, so tests can show a loop does not grow.
 *
 * @example
 *   const loss = tidy(() => model(x).sub(y).square().mean()); // only loss survives
 *   const y = noGrad(() => model(x));
 *   const before = memory().tensors; for (...) tidy(step); memory().tensors === before;
 */
import { dtypeCode, DType } from './dtype';
import { native } from './native';
import { closeScope, openScope, Tensor } from './tensor';

/** Anything tidy can find tensors in: a tensor, or arrays / plain objects / Maps of them. */
export type TensorContainer = Tensor | null | undefined | number | string | boolean | TensorContainer[] | { [k: string]: TensorContainer } | Map<unknown, TensorContainer>;

function collect(x: unknown, out: Set<Tensor>, seen = new Set<unknown>()): Set<Tensor> {
  if (x instanceof Tensor) out.add(x);
  else if (x !== null && typeof x === 'object' && !seen.has(x)) {
    seen.add(x);
    if (Array.isArray(x)) for (const v of x) collect(v, out, seen);
    else if (x instanceof Map) for (const v of x.values()) collect(v, out, seen);
    else if (Object.getPrototypeOf(x) === Object.prototype) for (const v of Object.values(x)) collect(v, out, seen);
  }
  return out;
}

/** Runs fn and frees every tensor it made except what it returns or keep()s. fn must be synchronous. */
export function tidy<T>(fn: () => T): T {
  const scope = openScope();
  let result: T | undefined;
  let ok = false;
  try {
    result = fn();
    if (result instanceof Promise) throw new TypeError('tidy: fn must be synchronous (it returned a Promise); use tidy inside the async function instead');
    ok = true;
    return result;
  } finally {
    closeScope(scope, ok ? collect(result, new Set()) : new Set());
  }
}

/** Exempts tensors from every enclosing and future scope: the caller frees them. Returns its argument. */
export function keep<T extends TensorContainer>(x: T): T {
  for (const t of collect(x, new Set())) t.kept = true;
  return x;
}

/** Disposes every tensor found in x (arrays, plain objects, Maps). */
export function dispose(x: TensorContainer): void {
  for (const t of collect(x, new Set())) t.dispose();
}

/**
 * Live native tensors (handles) and the bytes of the distinct storages behind them,
 * process-wide. `gcBytes`: the host bytes of storages reported to V8 because a tensor
 * on them was left to the garbage collector (returned from the outermost tidy, kept, or
 * made outside any scope); tensors freed by their scope never count there.
 */
export function memory(): { tensors: number; bytes: number; hostBytes: number; gcBytes: number } {
  const s = native.stats();
  return { tensors: s.tensors, bytes: s.bytes, hostBytes: s.hostBytes, gcBytes: s.gcBytes };
}

function withGrad<T>(enabled: boolean, fn: () => T): T {
  const prev = native.setGradEnabled(enabled);
  try {
    const r = fn();
    if (r instanceof Promise) throw new TypeError('noGrad/enableGrad: fn must be synchronous');
    return r;
  } finally {
    native.setGradEnabled(prev);
  }
}

/** Runs fn without building the autograd graph (inference, sampling, EMA updates). */
export function noGrad<T>(fn: () => T): T {
  return withGrad(false, fn);
}

/** Runs fn with the autograd graph on, even inside noGrad (e.g. classifier guidance). */
export function enableGrad<T>(fn: () => T): T {
  return withGrad(true, fn);
}

export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}

/**
 * Runs fn under CPU autocast: eligible ops (matmul, linear, conv) run in `dtype`
 * (bfloat16 by default; AMX makes it fast here) while precision-sensitive ops stay
 * float32. Outputs of autocast ops are bfloat16: cast losses back with .float().
 */
export function autocast<T>(fn: () => T, { dtype = 'bfloat16', enabled = true }: { dtype?: DType; enabled?: boolean } = {}): T {
  if (dtype !== 'bfloat16' && dtype !== 'float16') throw new TypeError(`autocast: dtype must be bfloat16 or float16, got ${dtype}`);
  const [prevOn, prevDtype] = native.autocastEnter(enabled, dtypeCode(dtype));
  try {
    const r = fn();
    if (r instanceof Promise) throw new TypeError('autocast: fn must be synchronous');
    return r;
  } finally {
    native.autocastExit(prevOn, prevDtype);
  }
}

export function isAutocastEnabled(): boolean {
  return native.isAutocastEnabled();
}
