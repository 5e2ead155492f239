/**
 * Command-line parsing for `diffuse`: `--name value`, `--name=value`, bare boolean
 * flags, positionals. Every mistake is a UsageError (exit code 2) that names the flag
 * and the value.
 *
 * @example
 *   const a = parseArgs(['ckpt', '--n', '16', '--seed=3'], { n: 'int', seed: 'int' });
 *   a.positionals; // ['ckpt']
 *   a.flags.get('n'); // '16'
 *   parseArgs(['-n', '16'], { n: 'value' }).flags.get('n'); // '16': one-letter flags take one dash too
 */
import { closest } from '../training/config';

/** A wrong command, flag or value: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** What a flag takes: a value ('value'), nothing ('switch'), or an optional true/false ('bool'). */
export type FlagKind = 'value' | 'switch' | 'bool';

export interface ParsedArgs {
  positionals: string[];
  /** Flag name (without --) -> value ('true' for switches), in order of appearance. */
  flags: Map<string, string>;
  /** [name, value] in order, repeats included. */
  list: [string, string][];
}

const BOOL_WORDS = new Set(['true', 'false', 'yes', 'no', '1', '0']);

/**
 * Parses argv against the known flags. `-h` is `--help`, and a one-letter flag may be written
 * with one dash (`-n 16` is `--n 16`).
 */
export function parseArgs(argv: readonly string[], known: Record<string, FlagKind>): ParsedArgs {
  const out: ParsedArgs = { positionals: [], flags: new Map(), list: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-' || /^-\d/.test(a)) {
      out.positionals.push(a);
      continue;
    }
    let name: string;
    let value: string | undefined;
    if (a === '-h') name = 'help';
    else if (/^-[a-zA-Z]$/.test(a) && known[a.slice(1)] !== undefined)
      name = a.slice(1); // -n for --n
    else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      if (eq >= 0) value = a.slice(eq + 1);
    } else throw new UsageError(`unknown option ${a} (options are written --name value)`);
    let kind = known[name];
    if (kind === undefined && name.startsWith('no-') && known[name.slice(3)] === 'bool' && value === undefined) {
      name = name.slice(3);
      kind = 'bool';
      value = 'false';
    }
    if (kind === undefined) {
      const c = closest(name, Object.keys(known));
      throw new UsageError(`unknown option --${name}${c ? ` (did you mean --${c}?)` : ''}`);
    }
    if (kind === 'switch') {
      if (value !== undefined) throw new UsageError(`--${name} takes no value, got --${name}=${value}`);
      value = 'true';
    } else if (kind === 'bool') {
      if (value === undefined) value = i + 1 < argv.length && BOOL_WORDS.has(argv[i + 1]) ? argv[++i] : 'true';
    } else if (value === undefined) {
      if (i + 1 >= argv.length || (argv[i + 1].startsWith('--') && argv[i + 1].length > 2)) throw new UsageError(`--${name} needs a value`);
      value = argv[++i];
    }
    out.flags.set(name, value);
    out.list.push([name, value]);
  }
  return out;
}

/** camelCase -> kebab-case (batchSize -> batch-size). */
export const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * What a numeric flag accepts: finite numbers (integers when `integer`) within [min, max],
 * and above `greaterThan` when given (an open bound: { greaterThan: 0 } is "positive").
 */
export interface NumberRule {
  integer?: boolean;
  min?: number;
  max?: number;
  greaterThan?: number;
}

/** "an integer in [1, 10]", "a number >= 0", "a positive number", "integers ..." for a usage message. */
function expected({ integer = false, min = -Infinity, max = Infinity, greaterThan }: NumberRule, plural = false): string {
  const kind = integer ? (plural ? 'integers' : 'an integer') : plural ? 'numbers' : 'a number';
  if (greaterThan === undefined || greaterThan < min) {
    const range = max === Infinity ? (min === -Infinity ? '' : ` >= ${min}`) : ` in [${min}, ${max}]`;
    return kind + range;
  }
  const upTo = max === Infinity ? '' : ` and <= ${max}`;
  if (greaterThan === 0) return `${plural ? 'positive' : 'a positive'} ${kind.replace(/^an? /, '')}${upTo}`;
  return `${kind} > ${greaterThan}${upTo}`;
}

function fits(raw: string, v: number, { integer = false, min = -Infinity, max = Infinity, greaterThan = -Infinity }: NumberRule): boolean {
  return raw.trim() !== '' && (integer ? Number.isSafeInteger(v) : Number.isFinite(v)) && v >= min && v <= max && v > greaterThan;
}

/** One value of --name as a number under the rule, or a usage error naming the flag and the value. */
export function parseNumber(name: string, raw: string, rule: NumberRule = {}): number {
  const v = Number(raw);
  if (!fits(raw, v, rule)) throw new UsageError(`--${name}: expected ${expected(rule)}, got ${JSON.stringify(raw)}`);
  return v;
}

/** --name as a comma list of numbers under the rule (undefined when not given). */
export function numberList(args: ParsedArgs, name: string, rule: NumberRule = {}): number[] | undefined {
  const raw = args.flags.get(name);
  if (raw === undefined) return undefined;
  return raw.split(',').map((p) => {
    const v = Number(p);
    if (!fits(p, v, rule)) throw new UsageError(`--${name}: expected ${expected(rule, true)} separated by commas, got ${JSON.stringify(raw)}`);
    return v;
  });
}

/** An integer flag value within [min, max]. */
export function intFlag(args: ParsedArgs, name: string, dflt: number, { min = -Infinity, max = Infinity } = {}): number {
  const raw = args.flags.get(name);
  return raw === undefined ? dflt : parseNumber(name, raw, { integer: true, min, max });
}

/**
 * A finite number flag value under the rule (undefined when not given).
 *
 * @example
 *   const lr = numberFlag(args, 'lr', { greaterThan: 0 }) ?? 2e-3; // --lr 0 -> "--lr: expected a positive number, got "0""
 */
export function numberFlag(args: ParsedArgs, name: string, rule: Omit<NumberRule, 'integer'> = {}): number | undefined {
  const raw = args.flags.get(name);
  return raw === undefined ? undefined : parseNumber(name, raw, { ...rule, integer: false });
}

/** One of a set of strings. */
export function choiceFlag<T extends string>(args: ParsedArgs, name: string, choices: readonly T[], dflt: T): T {
  const raw = args.flags.get(name);
  if (raw === undefined) return dflt;
  if (!(choices as readonly string[]).includes(raw)) throw new UsageError(`--${name}: expected ${choices.map((c) => `'${c}'`).join(' or ')}, got ${JSON.stringify(raw)}`);
  return raw as T;
}

/** Left-aligned two-column text for help screens. */
export function table(rows: [string, string][], indent = 2): string {
  const w = Math.max(...rows.map(([a]) => a.length));
  return rows.map(([a, b]) => `${' '.repeat(indent)}${a.padEnd(w)}  ${b}`).join('\n');
}

/** Runs a library call whose RangeError means a bad flag value (its message names the flag): as a usage error (exit 2). */
export function asUsage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw e;
  }
}
