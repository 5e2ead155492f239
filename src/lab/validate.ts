/**
 * Request checking for the lab's API: every parameter is parsed from a query string or a JSON
 * body against its enum or numeric range, and a bad one throws BadRequest naming it (the server
 * answers 400 with { error, param }). Models are found by name in the shipped models/ and in
 * runs/ under the working directory, never by a path from the request.
 *
 * @example
 *   const q = new Params(new URL('http://x/api/forward?t=500').searchParams);
 *   q.int('t', { min: 0, max: 999 });                 // 500
 *   q.choice('schedule', ['linear', 'cosine'], 'linear');
 *   q.int('index', { min: 0, max: 15, def: 0 });       // 0 when absent
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { shippedDir } from '../util/shipped';

/** A request the lab refuses: status 4xx, the parameter at fault and why. */
export class BadRequest extends Error {
  override name = 'BadRequest';
  constructor(
    readonly param: string | null,
    message: string,
    readonly status = 400,
  ) {
    super(param ? `${param}: ${message}` : message);
  }
}

type Source = URLSearchParams | Record<string, unknown>;

/** Typed, range-checked access to a request's parameters (query string or a JSON object). */
export class Params {
  constructor(readonly source: Source) {}

  /** The raw value, or undefined when absent. */
  raw(name: string): unknown {
    if (this.source instanceof URLSearchParams) {
      const all = this.source.getAll(name);
      if (all.length > 1) throw new BadRequest(name, 'given more than once');
      return all[0];
    }
    return Object.prototype.hasOwnProperty.call(this.source, name) ? this.source[name] : undefined;
  }

  /** A finite number in [min, max]. */
  number(name: string, { min, max, def }: { min: number; max: number; def?: number }): number {
    const v = this.raw(name);
    if (v === undefined || v === null || v === '') {
      if (def === undefined) throw new BadRequest(name, 'is required');
      return def;
    }
    const x = typeof v === 'number' ? v : typeof v === 'string' && /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v.trim()) ? Number(v) : NaN;
    if (!Number.isFinite(x)) throw new BadRequest(name, `must be a number, got ${preview(v)}`);
    if (x < min || x > max) throw new BadRequest(name, `must be in [${min}, ${max}], got ${x}`);
    return x;
  }

  /** An integer in [min, max]. */
  int(name: string, range: { min: number; max: number; def?: number }): number {
    const x = this.number(name, range);
    if (!Number.isInteger(x)) throw new BadRequest(name, `must be an integer, got ${x}`);
    return x;
  }

  /** One of `values`. */
  choice<T extends string>(name: string, values: readonly T[], def?: T): T {
    const v = this.raw(name);
    if (v === undefined || v === '') {
      if (def === undefined) throw new BadRequest(name, `is required (one of ${values.join(', ')})`);
      return def;
    }
    if (typeof v !== 'string' || !values.includes(v as T)) throw new BadRequest(name, `must be one of ${values.join(', ')}, got ${preview(v)}`);
    return v as T;
  }
}

/** A short printable form of a rejected value (no huge echoes). */
function preview(v: unknown): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}

/** A model the lab can sample from: a name, and the folder it resolves to. */
export interface LabModel {
  /** 'fashion-mnist' (shipped, models/NAME) or 'runs/NAME' (a run under the working directory). */
  name: string;
  dir: string;
  shipped: boolean;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The folder names in `root` holding a checkpoint.json (a sampling model), sorted. */
function checkpointFolders(root: string): string[] {
  try {
    return fs
      .readdirSync(root, { withFileTypes: true })
      .filter((d) => d.isDirectory() && NAME.test(d.name) && fs.existsSync(path.join(root, d.name, 'checkpoint.json')))
      .map((d) => d.name)
      .sort();
  } catch {
    return [];
  }
}

/** The shipped models (models/NAME) and the runs under cwd (runs/NAME) with a checkpoint. */
export function listModels(cwd: string): LabModel[] {
  return [
    ...checkpointFolders(shippedDir('')).map((n) => ({ name: n, dir: shippedDir(n), shipped: true })),
    ...checkpointFolders(path.join(cwd, 'runs')).map((n) => ({ name: `runs/${n}`, dir: path.join(cwd, 'runs', n), shipped: false })),
  ];
}

/** The model named `name` (looked up in listModels, so no path from a request is ever opened). */
export function findModel(cwd: string, name: unknown, param = 'model'): LabModel {
  if (typeof name !== 'string' || name === '') throw new BadRequest(param, 'is required (a model name from /api/models)');
  const hit = listModels(cwd).find((m) => m.name === name);
  if (!hit) throw new BadRequest(param, `no model named ${preview(name)} (see /api/models)`, 404);
  return hit;
}
