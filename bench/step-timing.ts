/**
 * What the training-step benchmarks share (bench/unet.ts, bench/autoencoder.ts): one timed
 * step (forward and loss, backward, optimizer; wall and process CPU time per phase), the
 * repeats' record, loss-curve agreement and the side-by-side op profile table. The PyTorch
 * twin times its step the same way (bench/peer_common.py, timed_steps).
 *
 * @example
 *   const r = emptyRun();
 *   for (let i = 0; i < n; i++) timedStep(r, () => F.mseLoss(net.forward(x, t), eps), opt);
 *   record(mine, r, warmup, batch); // mine.ips: images/s of this repeat
 */
import * as os from 'node:os';
import { ProfileReport, Tensor, tidy } from '../src/engine';

/** Per-step times (ms) and losses of a run of consecutive steps. */
export interface RunResult {
  losses: number[];
  total: number[];
  fwd: number[];
  bwd: number[];
  opt: number[];
  /** Process CPU time (all threads) per step, ms: less sensitive to other jobs than wall time. */
  cpu: number[];
}

/** An empty run, to fill with timedStep. */
export const emptyRun = (): RunResult => ({ losses: [], total: [], fwd: [], bwd: [], opt: [], cpu: [] });

/** One training step appended to r: `loss` built and backpropagated in a scope (its intermediates freed), then the optimizer's step. */
export function timedStep(r: RunResult, loss: () => Tensor, opt: { step(): void; zeroGrad(): void }): void {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let t1 = t0;
  const value = tidy(() => {
    const l = loss();
    t1 = performance.now();
    l.backward();
    return l.item();
  });
  const t2 = performance.now();
  opt.step();
  opt.zeroGrad();
  const t3 = performance.now();
  const c = process.cpuUsage(c0);
  r.cpu.push((c.user + c.system) / 1000);
  r.losses.push(value);
  r.total.push(t3 - t0);
  r.fwd.push(t1 - t0);
  r.bwd.push(t2 - t1);
  r.opt.push(t3 - t2);
}

export function cpuModel(): string {
  const m = os.cpus()[0]?.model?.trim();
  return m && m.length ? m : 'unknown CPU';
}

export const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

export interface Timing {
  /** images/s of each repeat. */
  ips: number[];
  /** Timed steps' per-phase times, all repeats. */
  fwd: number[];
  bwd: number[];
  opt: number[];
  total: number[];
  cpu: number[];
  /** Every step's loss (warm-up included), in order. */
  losses: number[];
}

export const emptyTiming = (): Timing => ({ ips: [], fwd: [], bwd: [], opt: [], total: [], cpu: [], losses: [] });

export function record(into: Timing, r: RunResult, warmup: number, batch: number): void {
  into.losses.push(...r.losses);
  const timed = (xs: number[]) => xs.slice(warmup);
  if (r.total.length === warmup) return;
  into.ips.push((batch * timed(r.total).length * 1000) / sum(timed(r.total)));
  into.fwd.push(...timed(r.fwd));
  into.bwd.push(...timed(r.bwd));
  into.opt.push(...timed(r.opt));
  into.total.push(...timed(r.total));
  into.cpu.push(...timed(r.cpu));
}

/** Largest relative difference per step between two loss curves over their common steps, and the mean of the last m. */
export function compareCurves(a: number[], b: number[], last = 10): { n: number; maxRel: number; lastMeanRel: number } {
  const n = Math.min(a.length, b.length);
  let maxRel = 0;
  for (let i = 0; i < n; i++) maxRel = Math.max(maxRel, Math.abs(a[i] - b[i]) / Math.abs(b[i]));
  const m = Math.min(last, n);
  const mean = (xs: number[]) => sum(xs.slice(n - m, n)) / m;
  return { n, maxRel, lastMeanRel: n ? Math.abs(mean(a) - mean(b)) / Math.abs(mean(b)) : NaN };
}

/** The peer's profile of one step: rows [name, kind, calls, self us, total us], wall and inside (us). */
export interface PeerProfile {
  rows: [string, 'op' | 'backward', number, number, number][];
  wall: number;
  inside: number;
}

/** Self time per op of one step, ours and PyTorch's side by side: the `top` largest, the rest, the time outside ATen, the wall time. */
export function profileTable(ours: ProfileReport, theirs: PeerProfile, top = 16): string {
  type Cell = { calls: number; ms: number };
  const rows = new Map<string, { name: string; kind: string; ours?: Cell; theirs?: Cell }>();
  const at = (name: string, kind: string) => rows.get(`${kind} ${name}`) ?? rows.set(`${kind} ${name}`, { name, kind }).get(`${kind} ${name}`)!;
  for (const o of ours.ops) at(o.name, o.kind).ours = { calls: o.calls, ms: o.selfMs };
  for (const [name, kind, calls, selfUs] of theirs.rows) at(name, kind).theirs = { calls, ms: selfUs / 1e3 };
  const size = (r: { ours?: Cell; theirs?: Cell }) => Math.max(r.ours?.ms ?? 0, r.theirs?.ms ?? 0);
  const sorted = [...rows.values()].sort((a, b) => size(b) - size(a));
  const ms = (c?: Cell) => (c ? c.ms.toFixed(1) : '-');
  const calls = (c?: Cell) => (c ? String(c.calls) : '-');
  const lines = sorted.slice(0, top).map((r) => [r.name, r.kind, calls(r.ours), ms(r.ours), calls(r.theirs), ms(r.theirs)]);
  const rest = sorted.slice(top);
  const restMs = (side: 'ours' | 'theirs') => rest.reduce((s, r) => s + (r[side]?.ms ?? 0), 0).toFixed(1);
  lines.push([`(${rest.length} more ops)`, '', '', restMs('ours'), '', restMs('theirs')]);
  lines.push(['outside ATen (JS + N-API / Python)', '', '', ours.outsideMs.toFixed(1), '', ((theirs.wall - theirs.inside) / 1e3).toFixed(1)]);
  lines.push(['wall', '', '', ours.wallMs.toFixed(1), '', (theirs.wall / 1e3).toFixed(1)]);
  const head = ['op (one fp32 training step, self time)', 'kind', 'diffuse calls', 'diffuse ms', 'pytorch calls', 'pytorch ms'];
  const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (l: string[]) => `| ${l.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ')} |`;
  return [fmt(head), `|${w.map((x, i) => (i < 2 ? '-'.repeat(x + 2) : '-'.repeat(x + 1) + ':')).join('|')}|`, ...lines.map(fmt)].join('\n');
}
