/**
 * The op profiler: where a step's time goes, op by op.
 *
 * `profile(fn)` runs fn with ATen's RecordFunction callbacks on and returns fn's result
 * with one row per operator (aten::conv2d, aten::add, ...) and per autograd backward
 * function (ConvolutionBackward0, ...): calls, total time (nested ops included), self
 * time (nested ops excluded). `outsideMs` is the wall time not spent inside any ATen
 * op: JavaScript, N-API calls and handle bookkeeping, the engine's own overhead.
 * The profiler is process-wide: ops that worker threads run meanwhile are counted too,
 * and one profile() runs at a time in the process.
 *
 * @example
 *   const { report } = profile(() => tidy(() => { model.forward(x, sigma).square().mean().backward(); }));
 *   console.log(report.format({ top: 15 }));   // a table sorted by self time
 *   report.outsideMs / report.wallMs;          // the share of time outside libtorch
 */
import { native } from './native';

/** One operator's (or backward function's) totals over a profiled run. */
export interface OpProfile {
  /** ATen's name: 'aten::conv2d', or a backward function such as 'ConvolutionBackward0'. */
  name: string;
  /** 'op' for operators, 'backward' for autograd backward functions. */
  kind: 'op' | 'backward';
  calls: number;
  /** Time inside the op, the ops it calls included, ms. */
  totalMs: number;
  /** Time inside the op less the recorded ops it calls, ms. Summed over rows: insideMs. */
  selfMs: number;
  /** Time as an outermost op (nothing recorded above it on its thread), ms. */
  topMs: number;
}

/** What profile() measured. */
export interface ProfileReport {
  /** Rows sorted by self time, largest first. */
  ops: OpProfile[];
  /** Wall time of fn, ms. */
  wallMs: number;
  /** Time inside ATen ops (outermost ops' totals summed), ms. */
  insideMs: number;
  /** wallMs - insideMs: time in JavaScript, N-API and the engine's bookkeeping, ms. */
  outsideMs: number;
  /** The report as an aligned text table of the `top` rows by self time (default 20). */
  format(options?: { top?: number }): string;
}

/** Runs fn (synchronous) with the op profiler on; returns its result and the report. Calls do not nest. */
export function profile<T>(fn: () => T): { result: T; report: ProfileReport } {
  native.profilerStart();
  let rows: ReturnType<typeof native.profilerStop> = [];
  const t0 = performance.now();
  let result: T;
  let wallMs = 0;
  try {
    result = fn();
    if (result instanceof Promise) throw new TypeError('profile: fn must be synchronous (it returned a Promise)');
  } finally {
    wallMs = performance.now() - t0;
    rows = native.profilerStop();
  }
  const ops = rows.map(([name, kind, calls, totalUs, selfUs, topUs]) => ({ name, kind, calls, totalMs: totalUs / 1e3, selfMs: selfUs / 1e3, topMs: topUs / 1e3 })).sort((a, b) => b.selfMs - a.selfMs);
  const insideMs = ops.reduce((s, o) => s + o.topMs, 0);
  const report: ProfileReport = { ops, wallMs, insideMs, outsideMs: Math.max(0, wallMs - insideMs), format: (o) => formatProfile(report, o?.top ?? 20) };
  return { result, report };
}

function formatProfile(r: ProfileReport, top: number): string {
  const head = ['op', 'kind', 'calls', 'self ms', 'self %', 'total ms'];
  const pct = (ms: number) => (r.wallMs > 0 ? ((100 * ms) / r.wallMs).toFixed(1) : '-');
  const body = r.ops.slice(0, top).map((o) => [o.name, o.kind, String(o.calls), o.selfMs.toFixed(2), pct(o.selfMs), o.totalMs.toFixed(2)]);
  const rest = r.ops.slice(top);
  if (rest.length)
    body.push([`(${rest.length} more)`, '', String(rest.reduce((s, o) => s + o.calls, 0)), rest.reduce((s, o) => s + o.selfMs, 0).toFixed(2), pct(rest.reduce((s, o) => s + o.selfMs, 0)), '']);
  body.push(['outside ATen (JS, N-API, handles)', '', '', r.outsideMs.toFixed(2), pct(r.outsideMs), '']);
  body.push(['wall', '', '', r.wallMs.toFixed(2), '100.0', '']);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)));
  const line = (row: string[]) => row.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}
