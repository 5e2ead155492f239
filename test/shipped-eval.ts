// What the shipped-model tests share: `diffuse eval` at n = 100 on one thread with its report's
// rows, and an adapter merged into a model at scale 1 and at scale 0 (the control), each evaluated.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runQuick } from './cli-run';

/** One row of a `diffuse eval` report. */
export interface EvalRow {
  sampler: string;
  grid: string;
  steps: number;
  guidance: number | null;
  metrics: Record<string, { value: number }>;
}

/** `diffuse eval DIR --n 100 --threads 1 --out OUT FLAGS...` run in cwd; the report's rows (one per setting). */
export async function evalRows(cwd: string, dir: string, out: string, ...flags: string[]): Promise<EvalRow[]> {
  const r = await runQuick(cwd, 'eval', dir, '--n', '100', '--threads', '1', '--out', out, ...flags);
  assert.equal(r.code, 0, r.err);
  const rows = JSON.parse(fs.readFileSync(/wrote (\S+\.json)/.exec(r.out)![1], 'utf8')) as EvalRow | EvalRow[];
  return Array.isArray(rows) ? rows : [rows];
}

/**
 * `adapter` merged into `base` (diffuse export --lora) at scale 1 and at scale 0 (the control: the base's own
 * denoiser under the adapter's sampling record), each evaluated with `flags`; [merged rows, control rows].
 */
export async function adapterAndControl(cwd: string, base: string, adapter: string, flags: readonly string[]): Promise<[EvalRow[], EvalRow[]]> {
  const rows = async (scale: string) => {
    const dir = path.join(cwd, `${path.basename(adapter)}-scale${scale}`);
    const e = await runQuick(cwd, 'export', base, dir, '--lora', adapter, '--lora-scale', scale, '--dtype', 'float32');
    assert.equal(e.code, 0, e.err);
    return evalRows(cwd, dir, path.join(dir, 'eval'), ...flags);
  };
  return [await rows('1'), await rows('0')];
}
