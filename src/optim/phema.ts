/**
 * EDM2's post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training
 * Dynamics of Diffusion Models", section "Post-hoc EMA" and its appendix;
 * training/phema.py). Equation numbers are the arXiv appendix's, as phema.py cites them.
 *
 * During training, PowerFunctionEMA tracks power-function averages, whose weight on the
 * parameters at time tau is proportional to tau^gamma; their width is the relative
 * standard deviation sigma_rel (Eq. 123). Snapshots of these averages are
 * saved every so often. After training, reconstructPhema combines the snapshots into
 * the average of any other sigma_rel (Algorithm 3): the snapshots' weight profiles are
 * fitted to the wanted profile by least squares, with their inner products in closed
 * form, and the same coefficients combine the snapshot weights.
 *
 * Time t may be counted in steps (tDelta 1 per update) or in training images (tDelta =
 * batch size, as EDM2); snapshots and targets must use the same unit.
 *
 * @example
 *   const phema = new PowerFunctionEMA(params, { sigmaRels: [0.05, 0.10] });
 *   for (let step = 1; step <= steps; step++) {
 *     trainStep();
 *     phema.update();
 *     if (step % 1000 === 0) snapshots.push(...phema.snapshot()); // or save them to files
 *   }
 *   const { tensors } = reconstructPhema(snapshots, { sigmaRel: 0.07 });
 */
import { zeros } from '../engine/create';
import type { Handle } from '../engine/native';
import { native } from '../engine/native';
import { Tensor } from '../engine/tensor';
import { Averages } from './averages';
import { checkOption, isNum, paramList, Params } from './params';

/** sigma_rel of gamma = 0 (a uniform average): the largest a power-function EMA has. */
export const MAX_SIGMA_REL = 1 / Math.sqrt(12);

/**
 * The relative standard deviation of a power-function EMA profile (Eq. 123):
 * sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))).
 *
 * @example
 *   gammaToSigmaRel(6.94); // 0.1 (about)
 */
export function gammaToSigmaRel(gamma: number): number {
  checkOption('gammaToSigmaRel', 'gamma', gamma, (x) => isNum(x) && x > 0, 'a finite number > 0');
  return Math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)));
}

/**
 * The exponent gamma of the power-function EMA with relative standard deviation
 * sigma_rel (Algorithm 2; Eq. 126): the largest real root of
 * gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s) with s = sigma_rel^-2. EDM2 finds it
 * with numpy.roots; here Newton's method from above the root, where the cubic is
 * increasing and convex, converges monotonically.
 *
 * @example
 *   sigmaRelToGamma(0.10); // 6.94...
 */
export function sigmaRelToGamma(sigmaRel: number): number {
  checkOption('sigmaRelToGamma', 'sigmaRel', sigmaRel, (x) => isNum(x) && x > 0 && x < MAX_SIGMA_REL, `in (0, ${MAX_SIGMA_REL.toFixed(4)}) (1/sqrt(12))`);
  const s = sigmaRel ** -2;
  const f = (g: number) => ((g + 7) * g + 16 - s) * g + 12 - s;
  const df = (g: number) => (3 * g + 14) * g + 16 - s;
  let g = Math.max(s, 1); // above every root (the cubic is positive there)
  for (let i = 0; i < 500; i++) {
    const next = g - f(g) / df(g);
    if (!(next < g)) break; // no more progress in double precision
    g = next;
  }
  return g;
}

/**
 * The EMA decay of one update of a power-function EMA (Eq. 127): at time t after an
 * update of length tDelta, beta = (1 - tDelta / t)^(gamma + 1). With tDelta = 1 and t the
 * step count this is Algorithm 2's beta = (1 - 1/t)^(gamma + 1); the first update
 * (t = tDelta) has beta 0.
 *
 * @example
 *   powerFunctionBeta(sigmaRelToGamma(0.1), 1000); // 0.992...
 */
export function powerFunctionBeta(gamma: number, t: number, tDelta = 1): number {
  checkOption('powerFunctionBeta', 't', t, (x) => isNum(x) && x >= tDelta && tDelta > 0, `a finite number >= tDelta = ${tDelta} > 0`);
  return (1 - tDelta / t) ** (gamma + 1);
}

/**
 * The inner product of two power-function EMA profiles, the one ending at time tA with
 * exponent gammaA and the one ending at tB with gammaB (Algorithm 3's p_dot_p; Eq. 151):
 *   (gA + 1)(gB + 1) (tA / tB)^(tA < tB ? gB : -gA) / ((gA + gB + 1) max(tA, tB)).
 */
export function pDotP(tA: number, gammaA: number, tB: number, gammaB: number): number {
  const ratio = tA / tB;
  const exponent = tA < tB ? gammaB : -gammaA;
  return ((gammaA + 1) * (gammaB + 1) * ratio ** exponent) / ((gammaA + gammaB + 1) * Math.max(tA, tB));
}

/** Solves A x = b by Gauss-Jordan elimination with partial pivoting, in float64. */
function solveDense(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[piv][c])) piv = r;
    if (!(Math.abs(M[piv][c]) > 0)) throw new RangeError('solvePosthocCoefficients: the snapshot profiles are linearly dependent (a repeated snapshot?)');
    [M[c], M[piv]] = [M[piv], M[c]];
    const p = M[c][c];
    for (let k = c; k <= n; k++) M[c][k] /= p;
    for (let r = 0; r < n; r++) {
      if (r === c || M[r][c] === 0) continue;
      const f = M[r][c];
      for (let k = c; k <= n; k++) M[r][k] -= f * M[c][k];
    }
  }
  return M.map((row) => row[n]);
}

/**
 * Coefficients x (one per snapshot) such that sum_i x_i snapshot_i best approximates the
 * power-function EMA with sigma_rel outSigmaRel at time outT (Algorithm 3): the
 * least-squares fit of the profiles, A x = b with A_ij = p_dot_p(i, j) and
 * b_i = p_dot_p(i, out), then normalised to sum to 1 as EDM2 does.
 *
 * @example
 *   solvePosthocCoefficients([100, 100, 200, 200], [0.05, 0.1, 0.05, 0.1], 200, 0.1); // about [0, 0, 0, 1]
 */
export function solvePosthocCoefficients(inT: readonly number[], inSigmaRel: readonly number[], outT: number, outSigmaRel: number): number[] {
  const who = 'solvePosthocCoefficients';
  if (inT.length === 0 || inT.length !== inSigmaRel.length) throw new RangeError(`${who}: need as many snapshot times as sigma_rels (at least one), got ${inT.length} and ${inSigmaRel.length}`);
  inT.forEach((t, i) => checkOption(who, `inT[${i}]`, t, (x) => isNum(x) && x > 0, 'a finite number > 0'));
  checkOption(who, 'outT', outT, (x) => isNum(x) && x > 0, 'a finite number > 0');
  const inGamma = inSigmaRel.map(sigmaRelToGamma);
  const outGamma = sigmaRelToGamma(outSigmaRel);
  const A = inT.map((ti, i) => inT.map((tj, j) => pDotP(ti, inGamma[i], tj, inGamma[j])));
  const b = inT.map((ti, i) => pDotP(ti, inGamma[i], outT, outGamma));
  const x = solveDense(A, b);
  const sum = x.reduce((a, v) => a + v, 0);
  return x.map((v) => v / sum);
}

/**
 * A snapshot of one power-function average: its time, sigma_rel, and the averaged
 * weights by parameter name, or a function that loads them (called once by
 * reconstructPhema, which disposes what it returns after use).
 */
export interface PhemaSnapshot {
  t: number;
  sigmaRel: number;
  tensors: Record<string, Tensor> | (() => Record<string, Tensor>);
}

/**
 * Tracks power-function EMAs of a parameter list for several sigma_rel (EDM2 uses 0.05
 * and 0.10) during training (EDM2's PowerFunctionEMA). The averages start as copies
 * of the parameters and are owned by this object.
 *
 * @example
 *   const phema = new PowerFunctionEMA(named, { sigmaRels: [0.05, 0.10] });
 *   phema.update(batchSize);          // after each optimizer step, t counted in images
 *   const snaps = phema.snapshot();   // copies: save them, then dispose their tensors
 */
export class PowerFunctionEMA {
  readonly names: readonly string[];
  readonly sigmaRels: readonly number[];
  readonly gammas: readonly number[];
  /** Time of the latest update (steps, or images when update() is given the batch size). */
  t = 0;
  readonly #params: Handle[];
  readonly #avgs: Averages[];
  #disposed = false;

  constructor(params: Params, { sigmaRels = [0.05, 0.1] }: { sigmaRels?: readonly number[] } = {}) {
    const list = paramList('PowerFunctionEMA', params);
    // `satisfies unknown`: a JavaScript caller may pass anything, and the check must not narrow the type to any[]
    if (!Array.isArray(sigmaRels satisfies unknown) || sigmaRels.length === 0) throw new RangeError('PowerFunctionEMA: sigmaRels must be a non-empty array');
    this.gammas = sigmaRels.map(sigmaRelToGamma);
    this.sigmaRels = [...sigmaRels];
    this.names = list.names;
    this.#params = list.handles;
    this.#avgs = sigmaRels.map(() => new Averages(list));
  }

  /** Folds the current parameters into every average; time advances by tDelta (1 step, or the batch size in images). */
  update(tDelta = 1): void {
    this.check();
    checkOption('PowerFunctionEMA.update', 'tDelta', tDelta, (x) => isNum(x) && x > 0, 'a finite number > 0');
    this.t += tDelta;
    this.gammas.forEach((g, k) => this.#avgs[k].update(this.#params, powerFunctionBeta(g, this.t, tDelta)));
  }

  /** The average for sigmaRels[k] in parameter order (owned: do not dispose). */
  averages(k: number): readonly Tensor[] {
    this.check();
    const a = this.#avgs[k];
    if (!a) throw new RangeError(`PowerFunctionEMA: no average ${k} (there are ${this.#avgs.length})`);
    return a.tensors;
  }

  /** Copies average k into `params` (e.g. a network that samples with it), as EMA.copyTo does. */
  copyTo(k: number, params: Params): void {
    const dst = paramList('PowerFunctionEMA.copyTo', params).handles;
    native.copyList(
      dst,
      this.averages(k).map((t) => t.handle),
    );
  }

  /** Copies of every average at the current time, one snapshot per sigma_rel (the caller owns the tensors). */
  snapshot(): PhemaSnapshot[] {
    this.check();
    return this.sigmaRels.map((sigmaRel, k) => ({ t: this.t, sigmaRel, tensors: this.#avgs[k].copy(this.names) }));
  }

  /** The state for a checkpoint: `phema.{k}.{name}` (new handles, no copy: dispose after saving), t and the sigma_rels. */
  stateDict(): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
    this.check();
    const tensors: Record<string, Tensor> = {};
    this.#avgs.forEach((a, k) => Object.assign(tensors, a.view(this.names, `phema.${k}.`)));
    return { tensors, metadata: { 'phema.t': String(this.t), 'phema.sigmaRels': JSON.stringify(this.sigmaRels) } };
  }

  loadStateDict(state: { tensors: Record<string, Tensor>; metadata: Record<string, string> }): void {
    this.check();
    const saved = state.metadata?.['phema.sigmaRels'];
    if (saved !== undefined && saved !== JSON.stringify(this.sigmaRels))
      throw new Error(`PowerFunctionEMA.loadStateDict: the state tracks sigma_rels ${saved}, this tracks ${JSON.stringify(this.sigmaRels)}`);
    this.#avgs.forEach((a, k) => a.load('PowerFunctionEMA', this.names, state.tensors, `phema.${k}.`));
    this.t = Number(state.metadata?.['phema.t'] ?? 0);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const a of this.#avgs) a.dispose();
  }

  private check(): void {
    if (this.#disposed) throw new Error('PowerFunctionEMA: used after dispose()');
  }
}

/** A snapshot as safetensors tensors and metadata (`phema.t`, `phema.sigmaRel`). */
export function phemaSnapshotState(s: PhemaSnapshot): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  if (typeof s.tensors === 'function') throw new TypeError('phemaSnapshotState: the snapshot is not loaded');
  return { tensors: s.tensors, metadata: { 'phema.t': String(s.t), 'phema.sigmaRel': String(s.sigmaRel) } };
}

/** The snapshot saved by phemaSnapshotState (e.g. read back with loadSafetensors). */
export function phemaSnapshotFromState(state: { tensors: Record<string, Tensor>; metadata: Record<string, string> }): PhemaSnapshot {
  const t = Number(state.metadata?.['phema.t']);
  const sigmaRel = Number(state.metadata?.['phema.sigmaRel']);
  if (!(t > 0) || !(sigmaRel > 0)) throw new Error('phemaSnapshotFromState: metadata phema.t and phema.sigmaRel are missing or invalid');
  return { t, sigmaRel, tensors: state.tensors };
}

/**
 * Post-hoc EMA reconstruction (EDM2 Algorithm 3; reconstruct_phema.py): the average
 * with relative standard deviation `sigmaRel` at time `t` (default: the latest
 * snapshot; otherwise it must be one of the snapshot times), from the snapshots taken
 * at or before t. Accumulates in float32 (float64 when the snapshots are float64).
 * Returns the weights by name (the caller owns them) and the coefficients per used snapshot.
 *
 * @example
 *   const { tensors, coefficients } = reconstructPhema(snapshots, { sigmaRel: 0.07 });
 */
export function reconstructPhema(
  snapshots: readonly PhemaSnapshot[],
  { sigmaRel, t }: { sigmaRel: number; t?: number },
): { tensors: Record<string, Tensor>; coefficients: number[]; used: PhemaSnapshot[]; t: number } {
  const who = 'reconstructPhema';
  if (snapshots.length === 0) throw new RangeError(`${who}: no snapshots`);
  const outT = t ?? Math.max(...snapshots.map((s) => s.t));
  if (t !== undefined && !snapshots.some((s) => s.t === t)) throw new RangeError(`${who}: t = ${t} must be the time of one of the snapshots`);
  const used = snapshots.filter((s) => s.t > 0 && s.t <= outT);
  const seen = new Set<string>();
  for (const s of used) {
    const key = `${s.t}/${s.sigmaRel}`;
    if (seen.has(key)) throw new RangeError(`${who}: two snapshots have t = ${s.t} and sigmaRel = ${s.sigmaRel}`);
    seen.add(key);
  }
  const coefficients = solvePosthocCoefficients(
    used.map((s) => s.t),
    used.map((s) => s.sigmaRel),
    outT,
    sigmaRel,
  );
  let out: Record<string, Tensor> | null = null;
  let names: string[] = [];
  used.forEach((s, i) => {
    const lazy = typeof s.tensors === 'function';
    const w = typeof s.tensors === 'function' ? s.tensors() : s.tensors;
    try {
      if (out === null) {
        names = Object.keys(w);
        const acc: Record<string, Tensor> = {};
        for (const n of names) acc[n] = zeros(w[n].shape, { dtype: w[n].dtype === 'float64' ? 'float64' : 'float32', device: w[n].device });
        out = acc;
      }
      const acc: Record<string, Tensor> = out;
      for (const n of names) {
        const src = w[n];
        if (!(src instanceof Tensor)) throw new Error(`${who}: snapshot ${i} (t = ${s.t}, sigmaRel = ${s.sigmaRel}) has no tensor ${n}`);
        if (src.shape.join(',') !== acc[n].shape.join(',')) throw new Error(`${who}: ${n} has shape [${src.shape}] in snapshot ${i} but [${acc[n].shape}] in the first`);
        acc[n].add_(src, coefficients[i]);
      }
    } catch (e) {
      if (out) for (const v of Object.values(out)) v.dispose();
      throw e;
    } finally {
      if (lazy) for (const v of Object.values(w)) v.dispose();
    }
  });
  return { tensors: out!, coefficients, used, t: outT };
}
