/**
 * The evaluation reports the lab charts: every JSON file `diffuse eval` wrote (one EvalReport, or
 * an array of them for a sweep; docs/evaluation.md) and every yardstick.json of `diffuse distill
 * yardstick` (its reference, teacher solvers and students; docs/distillation.md) under runs/ in
 * the working directory and under the shipped models/, flattened to one row per measured setting.
 *
 * @example
 *   findReports(process.cwd());   // [{ file: 'runs/eval/fashion-mnist/heun_karras_steps5-10_n1000_seed0.json', sampler: 'heun', nfe: 9, ... }]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MetricValue } from '../eval/report';
import { shippedDir } from '../util/shipped';

/** One measured setting of a report. */
export interface ReportRow {
  /** The report file, relative to where it was found (runs/... or models/...). */
  file: string;
  sampler: string;
  grid: string;
  steps: number;
  nfe: number | null;
  guidance: number | null;
  guidanceType: string | null;
  n: number;
  metrics: Record<string, number>;
  /** The curve a row belongs to in a yardstick report ('teacher ddim trailing', 'student cd', 'teacher reference'); absent for eval reports (one curve per file). */
  series?: string;
}

/** JSON files under dir, at most `depth` folders down (symlinks not followed). */
function jsonFiles(dir: string, depth: number): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && depth > 0) return jsonFiles(p, depth - 1);
    return e.isFile() && e.name.endsWith('.json') && !e.name.startsWith('.') ? [p] : [];
  });
}

/** A yardstick.json's rows: its reference, each teacher solver and each student group, one curve each. */
function yardstickRows(y: Record<string, unknown>, file: string): ReportRow[] {
  const n = typeof y.n === 'number' ? y.n : 0;
  const tag = (r: unknown, series: string) => (r && typeof r === 'object' ? { ...r, n, series } : r);
  const solverSeries = (r: { sampler?: unknown; grid?: unknown }) => `teacher ${String(r.sampler)} ${String(r.grid)}`;
  const rows = [
    tag(y.reference, 'teacher reference'),
    ...(y.solvers as { sampler?: unknown; grid?: unknown }[]).map((r) => tag(r, solverSeries(r))),
    ...(y.students as { group?: unknown; name?: unknown }[]).map((r) => tag(r, `student ${String(r.group ?? r.name)}`)),
  ];
  return reportRows(rows, file);
}

/** The report's rows, or [] when the JSON is neither an eval report nor a yardstick report. */
export function reportRows(json: unknown, file: string): ReportRow[] {
  const y = json as Record<string, unknown> | null;
  if (y && typeof y === 'object' && !Array.isArray(y) && Array.isArray(y.solvers) && Array.isArray(y.students)) return yardstickRows(y, file);
  const list = Array.isArray(json) ? json : [json];
  return list.flatMap((r) => {
    const o = r as Record<string, unknown>;
    if (!o || typeof o !== 'object' || typeof o.sampler !== 'string' || typeof o.steps !== 'number' || !o.metrics || typeof o.metrics !== 'object') return [];
    const metrics = Object.fromEntries(
      Object.entries(o.metrics as Record<string, MetricValue>)
        .filter(([, v]) => typeof v?.value === 'number')
        .map(([k, v]) => [k, v.value]),
    );
    return [
      {
        file,
        sampler: o.sampler,
        grid: typeof o.grid === 'string' ? o.grid : '',
        steps: o.steps,
        nfe: typeof o.nfe === 'number' ? o.nfe : null,
        guidance: typeof o.guidance === 'number' ? o.guidance : null,
        guidanceType: typeof o.guidanceType === 'string' ? o.guidanceType : null,
        n: typeof o.n === 'number' ? o.n : 0,
        metrics,
        ...(typeof o.series === 'string' ? { series: o.series } : {}),
      },
    ];
  });
}

/** Every report row under cwd/runs and the shipped models/ (files over 1 MB or not JSON are skipped). */
export function findReports(cwd: string): ReportRow[] {
  const roots: [string, string][] = [
    [path.join(cwd, 'runs'), 'runs'],
    [shippedDir(''), 'models'],
  ];
  return roots.flatMap(([root, label]) =>
    jsonFiles(root, 4).flatMap((f) => {
      try {
        if (fs.statSync(f).size > 1 << 20) return [];
        if (path.basename(path.dirname(f)) === 'rows' && fs.existsSync(path.join(path.dirname(f), '..', 'yardstick.json'))) return []; // a yardstick's row cache: its rows are in yardstick.json
        return reportRows(JSON.parse(fs.readFileSync(f, 'utf8')), path.join(label, path.relative(root, f)));
      } catch {
        return [];
      }
    }),
  );
}
