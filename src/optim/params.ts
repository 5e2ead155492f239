/**
 * Parameter lists as optimizers and averagers take them: plain tensors, or named
 * tensors so that checkpoints key their state by name (`state.{name}.exp_avg`)
 * instead of by position (`state.{i}.exp_avg`).
 *
 * @example
 *   new Adam([w, b]);                                              // keys state.0..., state.1...
 *   new Adam([{ name: 'fc.weight', param: w }, { name: 'fc.bias', param: b }]);
 *   new Adam(model.namedParameters());                             // keys state.fc.weight, ...
 */
import { isFloating } from '../engine/dtype';
import type { Handle } from '../engine/native';
import { Tensor } from '../engine/tensor';

/** A parameter with the name its state is saved under. */
export interface NamedParam {
  name: string;
  param: Tensor;
}

/** Tensors, named tensors, or [name, tensor] pairs as Module.namedParameters() gives (one form per list). */
export type Params = readonly Tensor[] | readonly NamedParam[] | readonly (readonly [string, Tensor])[];

/** @internal A checked parameter list: names, tensors and their native handles (cached for the kernels). */
export interface ParamList {
  names: string[];
  tensors: Tensor[];
  handles: Handle[];
}

type Entry = Tensor | NamedParam | readonly [string, Tensor];
const isPair = (p: Entry): p is readonly [string, Tensor] => Array.isArray(p);
const formOf = (p: Entry): string => (p instanceof Tensor ? 'a Tensor' : isPair(p) ? 'a [name, tensor] pair' : 'a {name, param} object');

/** @internal The tensors of a parameter list, unchecked (for one-off calls such as clipping). */
export function paramTensors(params: Params): Tensor[] {
  return (params as readonly Entry[]).map((p) => (p instanceof Tensor ? p : isPair(p) ? p[1] : p.param));
}

/** @internal Checks a parameter list: non-empty, one form, no duplicates, floating-point, not disposed. */
export function paramList(who: string, params: Params): ParamList {
  if (!Array.isArray(params)) throw new TypeError(`${who}: params must be an array of tensors, {name, param} objects or [name, tensor] pairs, got ${typeof params}`);
  if (params.length === 0) throw new RangeError(`${who}: got an empty parameter list`);
  const entries = params as readonly Entry[];
  const form = formOf(entries[0]);
  const names: string[] = [];
  const tensors: Tensor[] = [];
  entries.forEach((p, i) => {
    const t = p instanceof Tensor ? p : isPair(p) ? p[1] : (p as NamedParam | undefined)?.param;
    if (p === null || p === undefined || formOf(p) !== form || !(t instanceof Tensor)) throw new TypeError(`${who}: params[${i}] must be ${form} like params[0]`);
    const name = p instanceof Tensor ? String(i) : isPair(p) ? p[0] : p.name;
    if (typeof name !== 'string' || name === '') throw new TypeError(`${who}: params[${i}] needs a non-empty string name`);
    if (t.isDisposed) throw new Error(`${who}: parameter ${name} has been disposed`);
    if (!isFloating(t.dtype)) throw new TypeError(`${who}: parameter ${name} must be floating-point, got ${t.dtype}`);
    names.push(name);
    tensors.push(t);
  });
  const seenNames = new Set<string>();
  for (const n of names) {
    if (seenNames.has(n)) throw new RangeError(`${who}: the parameter name ${JSON.stringify(n)} appears twice`);
    seenNames.add(n);
  }
  const seen = new Map<Tensor, string>();
  tensors.forEach((t, i) => {
    if (seen.has(t)) throw new RangeError(`${who}: parameter ${names[i]} is the same tensor as ${seen.get(t)}`);
    seen.set(t, names[i]);
  });
  return { names, tensors, handles: tensors.map((t) => t.handle) };
}

/** @internal Throws `${who}: ${name} must be ${expected}, got ${value}` unless ok(value). */
export function checkOption<T>(who: string, name: string, value: T, ok: (v: T) => boolean, expected: string): T {
  if (!ok(value)) {
    const shown = typeof value === 'number' || value === undefined ? String(value) : JSON.stringify(value);
    throw new RangeError(`${who}: ${name} must be ${expected}, got ${shown}`);
  }
  return value;
}

/** @internal A finite number test for option checks. */
export const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
