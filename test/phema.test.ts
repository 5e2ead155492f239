// EDM2's post-hoc EMA: gamma <-> sigma_rel, betas, the reconstruction coefficients against an
// independent numpy implementation (test/fixtures/optim.json, scripts/fixtures/optim.py), and
// reconstructions against power-function EMAs tracked directly during a run.
//
// Why a reconstruction can be checked tightly: with beta_t = (1 - 1/t)^(gamma + 1), the
// average after step t puts weight (k^(gamma+1) - (k-1)^(gamma+1)) / t^(gamma+1) on the
// parameters of step k, which is exactly the continuous profile (gamma + 1) tau^gamma /
// t^(gamma+1) integrated over (k-1, k]. So the closed-form inner products of Algorithm 3
// are exact for a parameter sequence held constant over each step, and the only error left
// is the least-squares residual of fitting the target profile with the snapshot profiles.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { dispose, Generator, memory, Tensor, tidy, zeros } from '../src/engine';
import {
  gammaToSigmaRel,
  MAX_SIGMA_REL,
  pDotP,
  PhemaSnapshot,
  phemaSnapshotFromState,
  phemaSnapshotState,
  PowerFunctionEMA,
  powerFunctionBeta,
  reconstructPhema,
  sigmaRelToGamma,
  solvePosthocCoefficients,
} from '../src/optim';

const FIXTURE = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../test/fixtures/optim.json'), 'utf8')) as {
  phema: {
    gamma: { sigmaRel: number; gamma: number }[];
    reconstruction: { inT: number[]; inSigmaRel: number[]; outT: number; outSigmaRel: number; coefficients: number[] }[];
  };
};

const norm = (a: Float64Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0));
const diff = (a: Float64Array, b: Float64Array) => a.map((v, i) => v - b[i]);

test('sigmaRelToGamma equals numpy.roots on the EDM2 cubic; gammaToSigmaRel inverts it', () => {
  for (const { sigmaRel, gamma } of FIXTURE.phema.gamma) {
    const g = sigmaRelToGamma(sigmaRel);
    assert.ok(Math.abs(g - gamma) <= 1e-12 * gamma, `sigma_rel ${sigmaRel}: ${g} vs ${gamma}`);
    assert.ok(Math.abs(gammaToSigmaRel(g) - sigmaRel) <= 1e-14, `round trip at ${sigmaRel}`);
  }
  // EDM2's defaults: sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94.
  assert.equal(sigmaRelToGamma(0.05).toFixed(2), '16.97');
  assert.equal(sigmaRelToGamma(0.1).toFixed(2), '6.94');
  assert.throws(() => sigmaRelToGamma(0.29), /sigmaRelToGamma: sigmaRel must be in \(0, 0\.2887\) \(1\/sqrt\(12\)\), got 0\.29/);
  assert.throws(() => sigmaRelToGamma(0), /got 0/);
  assert.throws(() => sigmaRelToGamma(NaN), /got NaN/);
  assert.ok(sigmaRelToGamma(MAX_SIGMA_REL * (1 - 1e-9)) < 1e-6);
});

test('powerFunctionBeta: beta 0 at the first update, (1 - dt/t)^(gamma + 1) after', () => {
  assert.equal(powerFunctionBeta(6.94, 1), 0);
  assert.equal(powerFunctionBeta(6.94, 2048, 2048), 0);
  assert.equal(powerFunctionBeta(2, 10), 0.9 ** 3);
  assert.equal(powerFunctionBeta(2, 10 * 512, 512), 0.9 ** 3);
  assert.throws(() => powerFunctionBeta(2, 0.5), /t must be a finite number >= tDelta = 1 > 0, got 0\.5/);
});

test('pDotP is the inner product of the profiles (numerical quadrature) and symmetric', () => {
  // Profiles f(tau) = (g + 1) tau^g / t^(g + 1) on [0, t]; midpoint rule on a fine grid.
  const [tA, gA, tB, gB] = [700, 3.5, 1000, 6.9];
  const n = 200_000;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const tau = ((i + 0.5) / n) * tA;
    sum += (((gA + 1) * tau ** gA) / tA ** (gA + 1)) * (((gB + 1) * tau ** gB) / tB ** (gB + 1));
  }
  const quad = (sum * tA) / n;
  assert.ok(Math.abs(pDotP(tA, gA, tB, gB) - quad) <= 1e-8 * quad);
  assert.ok(Math.abs(pDotP(tA, gA, tB, gB) - pDotP(tB, gB, tA, gA)) <= 1e-15 * quad, 'symmetric');
});

test('solvePosthocCoefficients equals numpy.linalg.solve on the same system (EDM2 Algorithm 3)', () => {
  for (const c of FIXTURE.phema.reconstruction) {
    const x = solvePosthocCoefficients(c.inT, c.inSigmaRel, c.outT, c.outSigmaRel);
    const scale = Math.max(...c.coefficients.map(Math.abs));
    // Both solve the same 10-20 unknown system in float64 with partial pivoting; its condition
    // number is ~1e3, so they agree to ~1e-16 * cond (observed: 6e-14 at most).
    const err = Math.max(...x.map((v, i) => Math.abs(v - c.coefficients[i])));
    assert.ok(err <= 1e-11 * scale, `t=${c.outT} sigma_rel=${c.outSigmaRel}: error ${err}`);
    assert.ok(Math.abs(x.reduce((a, b) => a + b, 0) - 1) < 1e-12, 'coefficients sum to 1');
  }
  // A target equal to one of the snapshots is that snapshot alone.
  const x = solvePosthocCoefficients([100, 100, 200, 200], [0.05, 0.1, 0.05, 0.1], 200, 0.1);
  x.forEach((v, i) => assert.ok(Math.abs(v - (i === 3 ? 1 : 0)) < 1e-9, `coefficient ${i}: ${v}`));
  assert.throws(() => solvePosthocCoefficients([100, 100], [0.1, 0.1], 100, 0.1), /linearly dependent/);
  assert.throws(() => solvePosthocCoefficients([100], [0.1, 0.05], 100, 0.1), /as many snapshot times as sigma_rels/);
});

test('PowerFunctionEMA equals a hand-rolled power-function EMA loop', () => {
  const g = new Generator(3);
  const p = zeros([16], { dtype: 'float64' });
  const phema = new PowerFunctionEMA([p], { sigmaRels: [0.05, 0.2] });
  const gammas = [0.05, 0.2].map(sigmaRelToGamma);
  const ref = gammas.map(() => new Float64Array(16));
  for (let t = 1; t <= 300; t++) {
    p.copy_(tidy(() => g.randn([16], { dtype: 'float64' })));
    phema.update();
    const v = p.toFloat64Array();
    gammas.forEach((gamma, k) => {
      const beta = (1 - 1 / t) ** (gamma + 1);
      for (let i = 0; i < 16; i++) ref[k][i] = beta * ref[k][i] + (1 - beta) * v[i];
    });
  }
  assert.equal(phema.t, 300);
  gammas.forEach((_, k) => {
    const err = norm(diff(phema.averages(k)[0].toFloat64Array(), ref[k])) / norm(ref[k]);
    assert.ok(err < 1e-13, `average ${k}: ${err}`);
  });
  phema.dispose();
  p.dispose();
});

/**
 * A random walk of "parameters" (D values, T steps), tracked by power-function EMAs of the
 * snapshot sigma_rels (snapshots every K steps) and, directly, of the target sigma_rels.
 */
function randomWalk({ D, T, K, snapshotSigmas, targets }: { D: number; T: number; K: number; snapshotSigmas: number[]; targets: number[] }) {
  const g = new Generator(7);
  const theta = zeros([D], { dtype: 'float64' });
  const phema = new PowerFunctionEMA([{ name: 'theta', param: theta }], { sigmaRels: snapshotSigmas });
  const direct = new PowerFunctionEMA([{ name: 'theta', param: theta }], { sigmaRels: targets });
  const snapshots: PhemaSnapshot[] = [];
  const directAt = new Map<number, Float64Array[]>();
  for (let t = 1; t <= T; t++) {
    tidy(() => theta.add_(g.randn([D], { dtype: 'float64' }).mul(0.1)));
    phema.update();
    direct.update();
    if (t % K === 0) {
      snapshots.push(...phema.snapshot());
      directAt.set(
        t,
        targets.map((_, k) => direct.averages(k)[0].toFloat64Array()),
      );
    }
  }
  const spread = norm(diff(phema.averages(0)[0].toFloat64Array(), phema.averages(snapshotSigmas.length - 1)[0].toFloat64Array()));
  phema.dispose();
  direct.dispose();
  theta.dispose();
  return { snapshots, directAt, spread };
}

test('reconstructions match power-function EMAs tracked directly during the run', () => {
  const before = memory().tensors;
  // EDM2's setting in miniature: snapshots of sigma_rel 0.05 and 0.10 every 100 of 4000 steps.
  const { snapshots, directAt, spread } = randomWalk({ D: 1000, T: 4000, K: 100, snapshotSigmas: [0.05, 0.1], targets: [0.03, 0.07, 0.1, 0.15] });
  const check = (t: number, k: number, sigmaRel: number, tol: number) => {
    const { tensors, coefficients, used } = reconstructPhema(snapshots, { sigmaRel, t });
    assert.equal(used.length, (2 * t) / 100);
    const rec = tensors.theta.toFloat64Array();
    dispose(tensors);
    const want = directAt.get(t)![k];
    const err = norm(diff(rec, want)) / norm(want);
    if (process.env.DIFFUSE_TEST_VERBOSE) console.log(`t=${t} sigma_rel=${sigmaRel}: relative error ${err.toExponential(2)}, max |coef| ${Math.max(...coefficients.map(Math.abs)).toFixed(2)}`);
    assert.ok(err <= tol, `t=${t} sigma_rel=${sigmaRel}: relative error ${err} > ${tol}`);
    return err;
  };
  // Interpolating between the snapshot lengths, and extrapolating beyond them: a least-squares
  // fit of the profile, so a relative error bound on the weights rather than exactness.
  // Observed 7e-6 (0.07), 1.5e-5 (0.15), 1.2e-4 (0.03, extrapolated), 5e-5 (0.07 at t = 2000);
  // the bound 1e-3 leaves a margin of 8x or more and is still 10x tighter than the 1e-2 at
  // which reconstructions would stop being useful. The errors must also be small next to how
  // much the EMA length matters here (the distance between the 0.05 and 0.10 averages).
  const e07 = check(4000, 1, 0.07, 1e-3);
  const e15 = check(4000, 3, 0.15, 1e-3);
  const e03 = check(4000, 0, 0.03, 1e-3);
  const mean = directAt.get(4000)!;
  for (const [k, e] of [
    [1, e07],
    [3, e15],
    [0, e03],
  ] as const)
    assert.ok((e * norm(mean[k])) / spread < 0.1, `sigma_rel index ${k}: error vs spread`);
  check(2000, 1, 0.07, 1e-3); // an earlier time uses only the snapshots up to it
  // A target equal to a snapshot (sigma_rel 0.10 at a snapshot time) reproduces it: the
  // coefficients are e_i up to the solve's rounding (80 snapshots: cond ~2e5, so ~1e-11),
  // bounded by 1e-9 in the weights (observed: 0).
  check(4000, 2, 0.1, 1e-9);
  check(1500, 2, 0.1, 1e-9);
  dispose(snapshots.map((s) => s.tensors as Record<string, Tensor>));
  assert.equal(memory().tensors, before);
});

test('snapshots save as safetensors-shaped state; lazily loaded snapshots are freed after use', () => {
  const { snapshots } = randomWalk({ D: 50, T: 400, K: 100, snapshotSigmas: [0.05, 0.1], targets: [0.07] });
  const states = snapshots.map(phemaSnapshotState);
  assert.deepEqual(states[0].metadata, { 'phema.t': '100', 'phema.sigmaRel': '0.05' });
  const eager = reconstructPhema(snapshots, { sigmaRel: 0.07 });
  let loads = 0;
  const before = memory().tensors;
  // Each lazy snapshot loads a copy, as reading a file would; reconstructPhema frees it.
  const lazy = states.map((s) => {
    const back = phemaSnapshotFromState(s);
    return { ...back, tensors: () => (loads++, { theta: (back.tensors as Record<string, Tensor>).theta.clone() }) };
  });
  const rec = reconstructPhema(lazy, { sigmaRel: 0.07 });
  assert.equal(loads, 8);
  assert.equal(memory().tensors, before + 1);
  assert.deepEqual(rec.tensors.theta.toFloat64Array(), eager.tensors.theta.toFloat64Array());
  assert.equal(rec.tensors.theta.dtype, 'float64');
  assert.throws(() => reconstructPhema(snapshots, { sigmaRel: 0.07, t: 150 }), /t = 150 must be the time of one of the snapshots/);
  assert.throws(() => reconstructPhema([...snapshots, snapshots[0]], { sigmaRel: 0.07 }), /two snapshots have t = 100 and sigmaRel = 0\.05/);
  dispose([rec.tensors, eager.tensors, snapshots.map((s) => s.tensors as Record<string, Tensor>)]);
});

test('PowerFunctionEMA state round-trips and training continues identically', () => {
  const g = new Generator(11);
  const p = g.randn([8], { dtype: 'float64' });
  const a = new PowerFunctionEMA([p]);
  const b = new PowerFunctionEMA([p]);
  const walk = (n: number, ...emas: PowerFunctionEMA[]) => {
    for (let i = 0; i < n; i++) {
      tidy(() => p.add_(g.randn([8], { dtype: 'float64' })));
      emas.forEach((e) => e.update(64));
    }
  };
  walk(20, a);
  const s = a.stateDict();
  assert.deepEqual(Object.keys(s.tensors), ['phema.0.0', 'phema.1.0']);
  assert.deepEqual(s.metadata, { 'phema.t': '1280', 'phema.sigmaRels': '[0.05,0.1]' });
  b.loadStateDict(s);
  dispose(s.tensors);
  walk(10, a, b);
  assert.equal(b.t, 30 * 64);
  for (const k of [0, 1]) assert.deepEqual(b.averages(k)[0].toFloat64Array(), a.averages(k)[0].toFloat64Array());
  const c = new PowerFunctionEMA([p], { sigmaRels: [0.1] });
  const s2 = a.stateDict();
  assert.throws(() => c.loadStateDict(s2), /the state tracks sigma_rels \[0\.05,0\.1\], this tracks \[0\.1\]/);
  dispose(s2.tensors);
  [a, b, c].forEach((e) => e.dispose());
  p.dispose();
});
