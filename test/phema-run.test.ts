// Post-hoc EMA in a training run (train --ema phema, diffuse phema): on a tiny MLP over a 2-D
// toy, the snapshots a run writes reconstruct the EMA it tracked (exactly, at a tracked
// sigma_rel) and power-function EMAs of other sigma_rels tracked directly alongside the same
// run (within a bound derived below, not a number copied from a run); resume with phema is
// bit-exact, also after a crash that left snapshots past the checkpoint; the output loads
// as a model; the command's errors name the std and the run.
//
// Why the bound: after step T a power-function EMA of exponent g puts the weight
// w_k = (k/T)^(g+1) - ((k-1)/T)^(g+1) on the parameters theta_k of step k (test/phema.test.ts:
// the continuous profile integrated over (k-1, k]), so a reconstruction with coefficients x_i
// (sum 1) over snapshots (t_i, g_i) is exactly sum_k (sum_i x_i w_k^(i)) theta_k -- checked
// against the recorded trajectory -- and its error against the EMA tracked directly is
// e = sum_k d_k theta_k, d_k = w_k^target - sum_i x_i w_k^(i). As sum_k d_k = 0, any constant c
// may be subtracted: ||e|| <= sum_k |d_k| ||theta_k - c||, with c the target EMA. That bound is
// the least-squares misfit of the profiles weighted by how far the parameters moved; float32
// adds ~1e-7 * sum |x_i| * ||theta|| of rounding (1e-6 allowed).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, memory, setNumThreads, Tensor } from '../src/engine';
import { loadSafetensors } from '../src/engine/safetensors';
import { PowerFunctionEMA, reconstructPhema, sigmaRelToGamma, solvePosthocCoefficients } from '../src/optim/phema';
import { decodeFloats, loadCheckpoint, loadModel } from '../src/training/checkpoint';
import { ConfigError, resolveTrainConfig } from '../src/training/config';
import { listPhemaSnapshots, listSnapshotFiles, reconstructRunEma } from '../src/training/phema';
import { Trainer } from '../src/training/trainer';
import { runQuick } from './cli-run';

setNumThreads(1);

const STEPS = 48;
const EVERY = 4;
const TOY = {
  data: '8gaussians',
  model: { type: 'mlp', hidden: 32, depth: 2 },
  batchSize: 32,
  steps: STEPS,
  warmupSteps: 4,
  lr: 3e-3,
  sigmaData: 1,
  sampleEvery: 0,
  checkpointEvery: 0,
  sampleCount: 8,
  sampleSteps: 4,
  ema: 'phema',
  phemaStds: [0.05, 0.1],
  phemaSnapshotEvery: EVERY,
};
let root: string;
let runA: string;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-phema-'));
  runA = path.join(root, 'a');
  const a = Trainer.create(resolveTrainConfig({ ...TOY, out: runA }), { log: null });
  await a.run();
  a.dispose();
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const f64 = (t: Tensor) => t.toFloat64Array();
const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, v) => s + v * v, 0));
const sub = (a: Float64Array, b: Float64Array) => a.map((v, i) => v - b[i]);
const flat = (ts: readonly Float64Array[]) => Float64Array.from(ts.flatMap((t) => Array.from(t)));

describe('train --ema phema', () => {
  test('writes a snapshot of each std every phemaSnapshotEvery steps and at the end; the checkpoint holds the EMAs', () => {
    const files = fs.readdirSync(path.join(runA, 'phema')).sort();
    const want = [];
    for (let s = EVERY; s <= STEPS; s += EVERY) for (const std of [0.05, 0.1]) want.push(`phema-${String(s).padStart(8, '0')}-${std}.safetensors`);
    assert.deepEqual(files, want.sort());
    const { metadata, tensors } = loadSafetensors(path.join(runA, 'phema', 'phema-00000012-0.1.safetensors'));
    assert.deepEqual(metadata, { 'phema.t': '12', 'phema.sigmaRel': '0.1', 'phema.step': '12' });
    assert.ok(Object.values(tensors).every((t) => t.dtype === 'float32'));
    dispose(tensors);
    const ck = loadCheckpoint(runA);
    assert.equal(ck.meta.files.phema!.file, `phema-000000${STEPS}.safetensors`);
    assert.deepEqual(ck.phema!.metadata, { 'phema.t': String(STEPS), 'phema.sigmaRels': '[0.05,0.1]' });
    // The run's EMA (ema file, sample grids) is the first power-function average.
    for (const [n, t] of Object.entries(ck.phema!.tensors)) if (n.startsWith('phema.0.')) assert.deepEqual(f64(ck.ema!.tensors[n.slice(8)]), f64(t), n);
    dispose([ck.model!.tensors, ck.ema!.tensors, ck.optimizer!.tensors, ck.phema!.tensors]);
  });

  test('reconstructing at a tracked sigma_rel reproduces that EMA; other sigma_rels match EMAs tracked directly, within the misfit bound', () => {
    const before = memory().tensors;
    // The same run again, stepped by hand (it is deterministic: checked below), with power-function
    // EMAs of the targets tracked directly and every step's parameters recorded.
    const b = Trainer.create(resolveTrainConfig({ ...TOY, out: path.join(root, 'b-direct') }), { log: null });
    const targets = [0.03, 0.07, 0.15];
    const params = b.net.namedParameters();
    const direct = new PowerFunctionEMA(params, { sigmaRels: targets });
    const theta: Float64Array[] = [];
    for (let k = 1; k <= STEPS; k++) {
      b.trainStep();
      direct.update();
      theta.push(flat(params.map(([, p]) => f64(p))));
    }
    const ck = loadCheckpoint(runA, { parts: ['phema'] });
    const tracked = (k: number) => flat(params.map(([name]) => f64(ck.phema!.tensors[`phema.${k}.${name}`])));
    assert.deepEqual(flat(b.phema!.averages.map(f64)), tracked(0), 'the hand-stepped run is the same run');

    const snaps = listPhemaSnapshots(runA);
    assert.equal(snaps.length, (2 * STEPS) / EVERY);
    const rec = (std: number) => {
      const r = reconstructPhema(snaps, { sigmaRel: std });
      const v = flat(params.map(([name]) => f64(r.tensors[name])));
      dispose(r.tensors);
      return v;
    };
    // At sigma_rel 0.10 (tracked) the coefficients are e_i up to the solve's rounding (~1e-12),
    // so the result is the last 0.10 snapshot to float32 precision.
    const at10 = rec(0.1);
    const err10 = norm(sub(at10, tracked(1))) / norm(tracked(1));
    assert.ok(err10 < 1e-6, `sigma_rel 0.1: relative error ${err10}`);

    // Weight of step k (1-based) in the power-function EMA of exponent g after step t.
    const w = (k: number, t: number, g: number) => (k > t ? 0 : (k / t) ** (g + 1) - ((k - 1) / t) ** (g + 1));
    const gammas = snaps.map((s) => sigmaRelToGamma(s.sigmaRel));
    for (const [j, std] of targets.entries()) {
      const want = flat(direct.averages(j).map(f64));
      const got = rec(std);
      const x = solvePosthocCoefficients(
        snaps.map((s) => s.t),
        snaps.map((s) => s.sigmaRel),
        STEPS,
        std,
      );
      const g = sigmaRelToGamma(std);
      const fit = theta.map((_, k) => snaps.reduce((a, s, i) => a + x[i] * w(k + 1, s.t, gammas[i]), 0));
      const rounding = 1e-6 * x.reduce((a, v) => a + Math.abs(v), 0) * norm(want);
      // The reconstruction from the files is the fitted combination of the recorded trajectory.
      const fromTrajectory = theta.reduce((acc, th, k) => acc.map((v, i) => v + fit[k] * th[i]), new Float64Array(want.length));
      const errTrajectory = norm(sub(got, fromTrajectory));
      assert.ok(errTrajectory <= rounding, `sigma_rel ${std}: the files give ${errTrajectory} away from the trajectory's combination`);
      // Against the EMA tracked directly: within the misfit bound.
      const bound = theta.reduce((a, th, k) => a + Math.abs(w(k + 1, STEPS, g) - fit[k]) * norm(sub(th, want)), 0) + rounding;
      const err = norm(sub(got, want));
      const lengthMatters = norm(sub(want, tracked(1))); // how much the EMA length matters here
      if (process.env.DIFFUSE_TEST_VERBOSE)
        console.log(
          `sigma_rel ${std}: error ${err.toExponential(2)}, bound ${bound.toExponential(2)}, |EMA(${std}) - EMA(0.1)| ${lengthMatters.toExponential(2)}, max |x| ${Math.max(...x.map(Math.abs)).toFixed(2)}`,
        );
      assert.ok(err <= bound, `sigma_rel ${std}: error ${err} > bound ${bound}`);
      // The bound must be able to fail: far below the difference a wrong EMA length would make.
      assert.ok(bound < 0.25 * lengthMatters, `sigma_rel ${std}: the bound ${bound} does not separate it from sigma_rel 0.1 (${lengthMatters})`);
    }
    dispose(ck.phema!.tensors);
    direct.dispose();
    b.dispose();
    assert.equal(memory().tensors, before, 'no tensors leak');
  });

  test('resume is bit-exact, and snapshots a crash left past the checkpoint are replaced, not duplicated', async () => {
    const dir = path.join(root, 'c');
    const b = Trainer.create(resolveTrainConfig({ ...TOY, out: dir }), { log: null });
    for (let k = 1; k <= 20; k++) {
      b.trainStep();
      b.phema!.maybeSnapshot(b.step, dir);
    }
    b.checkpoint();
    for (let k = 21; k <= 26; k++) {
      b.trainStep();
      b.phema!.maybeSnapshot(b.step, dir);
    }
    b.dispose(); // a crash at step 26: snapshots of step 24 exist, the checkpoint is at 20
    assert.ok(listSnapshotFiles(dir).some((f) => f.step === 24));
    const c = Trainer.create(resolveTrainConfig({ ...TOY, out: dir }), { resume: dir, log: null });
    assert.equal(c.phema!.step, 20);
    assert.deepEqual(
      listSnapshotFiles(dir)
        .map((f) => f.step)
        .filter((s) => s > 20),
      [],
      'the snapshots past the checkpoint are gone',
    );
    const r = await c.run();
    c.dispose();
    assert.equal(r.step, STEPS);
    const ref = loadCheckpoint(runA);
    const got = loadCheckpoint(dir);
    assert.deepEqual(r.losses, decodeFloats(ref.meta.state!.losses), 'the same losses');
    for (const part of ['model', 'ema', 'phema'] as const) for (const [n, t] of Object.entries(ref[part]!.tensors)) assert.deepEqual(got[part]!.tensors[n].bytes(), t.bytes(), `${part} ${n}`);
    assert.deepEqual(got.phema!.metadata, ref.phema!.metadata);
    for (const ck of [ref, got]) dispose([ck.model!.tensors, ck.ema!.tensors, ck.optimizer!.tensors, ck.phema!.tensors]);
    const names = (d: string) => fs.readdirSync(path.join(d, 'phema')).sort();
    assert.deepEqual(names(dir), names(runA), 'the same snapshot files, no duplicates');
    for (const n of names(runA)) assert.ok(fs.readFileSync(path.join(dir, 'phema', n)).equals(fs.readFileSync(path.join(runA, 'phema', n))), `${n}: the same bytes`);
  });

  test('resuming into another --out copies the snapshots up to the checkpoint', () => {
    const dir = path.join(root, 'moved');
    const c = Trainer.create(resolveTrainConfig({ ...TOY, steps: STEPS + 8, out: dir }), { resume: runA, log: null });
    c.dispose();
    assert.deepEqual(fs.readdirSync(path.join(dir, 'phema')).sort(), fs.readdirSync(path.join(runA, 'phema')).sort());
  });

  test('the config checks ema, phemaStds and phemaSnapshotEvery, naming the key and the value', () => {
    const err = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof ConfigError && re.test(e.message), re.source);
    err(() => resolveTrainConfig({ ema: 'power' }), /^config: ema: expected 'standard' or 'phema', got "power"/);
    err(() => resolveTrainConfig({ phemaStds: [0.05, 0.3] }, 'run.json'), /^run.json: phemaStds: expected a non-empty list of distinct numbers in \(0, 0\.2887\), got \[0\.05,0\.3\]/);
    err(() => resolveTrainConfig({ phemaStds: [0.1, 0.1] }), /phemaStds: expected a non-empty list of distinct numbers/);
    err(() => resolveTrainConfig({ phemaSnapshotEvery: 0 }), /phemaSnapshotEvery: expected an integer >= 1, got 0/);
  });
});

describe('diffuse phema', () => {
  test('writes one checkpoint per std that loads as a model and samples', async () => {
    const r = await runQuick(root, 'phema', 'a', '--std', '0.1,0.15', '--out', 'post');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /sigma_rel 0\.15 +post\/ema-0\.15-00000048 +\(step 48, 24 snapshots/);
    const { net, meta } = loadModel(path.join(root, 'post', 'ema-0.1-00000048'));
    assert.equal(meta.exportedFrom!.posthocEma!.sigmaRel, 0.1);
    const ck = loadCheckpoint(runA, { parts: ['phema'] });
    for (const [n, p] of net.namedParameters()) {
      const want = f64(ck.phema!.tensors[`phema.1.${n}`]);
      const e = norm(sub(f64(p), want)) / norm(want);
      assert.ok(e < 1e-6, `${n}: ${e}`);
    }
    dispose(ck.phema!.tensors);
    net.dispose();
    const s = await runQuick(root, 'sample', 'post/ema-0.15-00000048', '--n', '4', '--steps', '3', '--out', 's.png');
    assert.equal(s.code, 0, s.err);
    // An earlier step uses the snapshots up to it; the loss history is cut there.
    const e = await runQuick(root, 'phema', 'a', '--std', '0.07', '--step', '20', '--out', 'post');
    assert.equal(e.code, 0, e.err);
    const live = memory().tensors;
    const [early] = reconstructRunEma(runA, { stds: [0.07], step: 20, out: path.join(root, 'post2') });
    assert.equal(memory().tensors, live, 'reconstructRunEma frees what it loads');
    assert.equal(early.snapshots, 10);
    assert.equal(loadCheckpoint(early.dir, { parts: [] }).meta.step, 20);
  });

  test('errors name the std, the step and the run', async () => {
    const std = await runQuick(root, 'train', '--data', '8gaussians', '--model', 'mlp', '--hidden', '8', '--depth', '1', '--steps', '2', '--sample-every', '0', '--out', 'plain', '--threads', '1');
    assert.equal(std.code, 0, std.err);
    for (const [args, code, re] of [
      [['phema', 'a', '--std', '0.3'], 2, /--std: 0\.3 is out of range: a sigma_rel must be in \(0, 0\.2887\)/],
      [['phema', 'a', '--std', '0,0.1'], 2, /--std: expected positive numbers separated by commas, got "0,0\.1"/],
      [['phema', 'a', '--std', '0.1,0.1'], 2, /--std: 0\.1 is given twice/],
      [['phema', 'a'], 2, /--std is required/],
      [['phema', '--std', '0.1'], 2, /expected one RUN folder, got none/],
      [['phema', 'a', '--std', '0.1', '--step', '7'], 1, /step 7 has no snapshot; the snapshot steps are 4, 8, 12/],
      [['phema', 'plain', '--std', '0.1'], 1, /plain\/phema: the run has no post-hoc EMA snapshots .*train it with --ema phema/],
      [['phema', 'nowhere', '--std', '0.1'], 1, /nowhere\/checkpoint.json: not found/],
      [['train', '--ema', 'power'], 2, /--ema: expected 'standard' or 'phema', got "power"/],
      [['train', '--phema-stds', '0.05,0.5'], 2, /--phema-stds: expected a non-empty list of distinct numbers in \(0, 0\.2887\), got \[0\.05,0\.5\]/],
    ] as [string[], number, RegExp][]) {
      const r = await runQuick(root, ...args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re, args.join(' '));
    }
    assert.throws(() => reconstructRunEma(runA, { stds: [0.29] }), /reconstructRunEma: std 0\.29 is out of range/);
  });
});
