/**
 * Options checked at the edge: one table of field specifications serves a JSON file, the
 * command line's flags and the help text, for every command that trains (diffuse train's
 * TrainConfig in config.ts, train-classifier's options in classifier.ts). A mistake names
 * where the value came from ('--lr', 'run.json: lr') and the value; the fields marked
 * resumable are the only ones a resumed run may change, and resumeOverrides() is the one
 * place that says so.
 *
 * @example
 *   const specs = { steps: { kind: 'int', min: 1, resumable: true }, lr: { kind: 'number', min: 0, above: true } } satisfies Record<string, FieldSpec>;
 *   checkValue('--lr', specs.lr, 0);                 // throws ConfigError: "--lr: expected a number > 0, got 0"
 *   parseValue('--steps', specs.steps, '100');       // 100
 */
import * as fs from 'node:fs';

/** A bad configuration value; `source` says where it came from ('--lr', 'run.json: lr', ...). */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly source: string,
    problem: string,
  ) {
    super(`${source}: ${problem}`);
  }
}

export type Kind = 'int' | 'number' | 'bool' | 'enum' | 'string' | 'ints' | 'numbers';

export interface FieldSpec {
  kind: Kind;
  /** null is allowed (written 'none' or 'null' as a string). */
  nullable?: boolean;
  /** Allowed strings for 'enum'. */
  values?: readonly string[];
  /** Other accepted strings and the value each stands for ('enum'). */
  aliases?: Readonly<Record<string, string>>;
  /** Smallest allowed value (numbers), and whether it is excluded. */
  min?: number;
  above?: boolean;
  max?: number;
  /** Also accepts the string 'auto'. */
  auto?: boolean;
  /** May differ from the checkpoint's value when resuming. */
  resumable?: boolean;
}

export function describeSpec(s: FieldSpec): string {
  let d: string;
  if (s.kind === 'enum')
    d =
      (s.values ?? []).map((v) => `'${v}'`).join(' or ') +
      Object.entries(s.aliases ?? {})
        .map(([a, v]) => ` ('${a}' = '${v}')`)
        .join('');
  else if (s.kind === 'bool') d = 'true or false';
  else if (s.kind === 'ints') d = 'a list of integers';
  else if (s.kind === 'numbers') d = `a non-empty list of distinct numbers in (${s.min}, ${s.max!.toFixed(4)})`;
  else if (s.kind === 'string') d = 'a string';
  else {
    d = s.kind === 'int' ? 'an integer' : 'a number';
    if (s.min !== undefined && s.max !== undefined) d += ` in [${s.min}, ${s.max}]`;
    else if (s.min !== undefined) d += s.above ? ` > ${s.min}` : ` >= ${s.min}`;
  }
  if (s.auto) d += " or 'auto'";
  if (s.nullable) d += " or 'none'";
  return d;
}

export const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? JSON.stringify(v) : String(v));

/** Checks a value (already JSON-typed) against a spec; returns it or throws naming `source`. */
export function checkValue(source: string, s: FieldSpec, v: unknown): unknown {
  const bad = () => new ConfigError(source, `expected ${describeSpec(s)}, got ${show(v)}`);
  if (v === null) {
    if (s.nullable) return null;
    throw bad();
  }
  if (s.auto && v === 'auto') return v;
  switch (s.kind) {
    case 'bool':
      if (typeof v !== 'boolean') throw bad();
      return v;
    case 'string':
      if (typeof v !== 'string' || v === '') throw bad();
      return v;
    case 'enum':
      if (typeof v === 'string' && s.aliases && Object.hasOwn(s.aliases, v)) return s.aliases[v];
      if (typeof v !== 'string' || !s.values!.includes(v)) throw bad();
      return v;
    case 'numbers': // each in (min, max), both open (phemaStds: sigma_rel)
      if (!Array.isArray(v) || v.length === 0 || new Set(v).size !== v.length || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > s.min! && x < s.max!)) throw bad();
      return [...(v as number[])];
    case 'ints':
      if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x))) throw bad();
      return [...(v as number[])];
    default: {
      if (typeof v !== 'number' || !Number.isFinite(v) || (s.kind === 'int' && !Number.isSafeInteger(v))) throw bad();
      if (s.min !== undefined && (s.above ? v <= s.min : v < s.min)) throw bad();
      if (s.max !== undefined && v > s.max) throw bad();
      return v;
    }
  }
}

/** Parses a string (a flag's value) into the spec's type, then checks it. */
export function parseValue(source: string, s: FieldSpec, raw: string): unknown {
  const t = raw.trim();
  if (s.nullable && (t === 'none' || t === 'null')) return null;
  if (s.auto && t === 'auto') return 'auto';
  let v: unknown = t;
  if (s.kind === 'bool') v = t === 'true' || t === '1' || t === 'yes' ? true : t === 'false' || t === '0' || t === 'no' ? false : t;
  else if (s.kind === 'int' || s.kind === 'number') v = t === '' || !/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t) ? t : Number(t);
  else if (s.kind === 'ints') v = t === '' || t === 'none' ? [] : t.split(',').map((p) => (/^\s*[-+]?\d+\s*$/.test(p) ? Number(p) : p));
  else if (s.kind === 'numbers') v = t.split(',').map((p) => (/^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(p) ? Number(p) : p));
  return checkValue(source, s, v);
}

/** The closest known name, for "did you mean" hints (edit distance <= 3). */
export function closest(name: string, known: readonly string[]): string | null {
  const dist = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
    for (let j = 1; j <= b.length; j++) d[0][j] = j;
    for (let i = 1; i <= a.length; i++) for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    return d[a.length][b.length];
  };
  let best: string | null = null;
  let bestD = 4;
  for (const k of known) {
    const dd = dist(name.toLowerCase(), k.toLowerCase());
    if (dd < bestD) [best, bestD] = [k, dd];
  }
  return best;
}

export const hint = (name: string, known: readonly string[]) => {
  const c = closest(name, known);
  return c ? ` (did you mean ${c}?)` : '';
};

/** One override: a config key, a string value (a flag's), and where it came from. */
export interface Override {
  key: string;
  value: string;
  source: string;
}

/** The keys of a spec table whose value may change when a run is resumed. */
export function resumableKeys(specs: Readonly<Record<string, FieldSpec>>): string[] {
  return Object.entries(specs)
    .filter(([, s]) => s.resumable)
    .map(([k]) => k);
}

/**
 * Checks the overrides (flags) given to a resumed run: each must set a resumable key or
 * repeat the run's own value (so the original command plus --resume works). Throws a
 * ConfigError naming the first flag that would change the run, the run's value and the
 * flags that may change. `same(o)` says whether applying `o` leaves the run's options as
 * they are; `value(key)` reads the run's value.
 *
 * @example
 *   refuseResumeChanges(overrides, { resumable: ['steps', 'out'], same: (o) => ..., value: (k) => run[k], flag: (k) => `--${kebab(k)}`, run: 'runs/x' });
 */
export function refuseResumeChanges(
  overrides: readonly Override[],
  { resumable, same, value, flag, run }: { resumable: readonly string[]; same: (o: Override) => boolean; value: (key: string) => unknown; flag: (key: string) => string; run: string },
): void {
  const fixed = overrides.find((o) => !resumable.includes(o.key) && !same(o));
  if (fixed)
    throw new ConfigError(
      fixed.source,
      `${JSON.stringify(fixed.value)} cannot change when resuming the run in ${run}: its ${fixed.key} is ${JSON.stringify(value(fixed.key))} (only ${resumable.map(flag).join(', ')} can change)`,
    );
}

/**
 * Options from a JSON file: an object whose keys must be in `specs` (an unknown key is an
 * error with a "did you mean" hint), each value checked; errors name the file and the key.
 *
 * @example
 *   const fromFile = readOptionsFile('cls.json', CLASSIFIER_FIELDS);   // { steps: 500, lr: 0.001 }
 */
export function readOptionsFile(file: string, specs: Readonly<Record<string, FieldSpec>>): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, code === 'ENOENT' ? 'file not found' : code ? `cannot read it (${code})` : `not valid JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, `expected a JSON object of options, got ${show(raw)}`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (!Object.hasOwn(specs, k)) throw new ConfigError(`${file}: ${k}`, `unknown option${hint(k, Object.keys(specs))}`);
    out[k] = checkValue(`${file}: ${k}`, specs[k], v);
  }
  return out;
}
