// Latent consistency models (LCM) and LCM-LoRA against known answers: the skipping-step grid of the
// teacher's schedule by hand; the boundary f(x, sigma_min) = x of the LCM coefficients exactly, the
// teacher's denoiser elsewhere; on the analytic mixture with the exact denoiser behind classifier-free
// guidance as the teacher, the LCM loss equals the closed form of one exact DDIM step over k teacher
// timesteps of D_u + w (D_c - D_u) per sample. On a tiny U-Net teacher: `diffuse distill lcm` writes a
// student whose w embedding changes its output and that `diffuse sample --guidance W` and the yardstick
// run; LCM-LoRA trains only the adapters (the base bit for bit unchanged), writes the adapter alone with
// its record, and `diffuse sample --lora` makes both the base and a model fine-tuned from it few-step
// samplers; resume is bit-exact for both.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { full, Generator, readSafetensorsHeader, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { boundaryCoefficients, Denoiser, discreteTimestep, discreteVP, expandSigma, fromCoefficients, linearBetas, Network, vpCoefficients } from '../src/core';
import { GaussianMixture } from '../src/data';
import { classifierFreeGuidance } from '../src/guidance';
import { guidedTeacher, LCM_LR, lcmBoundary, lcmLoss, skippingGrid } from '../src/distillation/lcm';
import { meanSquared } from '../src/distillation/consistency';
import { withGuidance } from '../src/distillation/guided';
import { resolveDistillOptions, planStages } from '../src/distillation/run';
import { DistillTask } from '../src/distillation/task';
import { resolveTrainConfig } from '../src/training/config';
import { loadTrainData } from '../src/training/build';
import { loadModel, readCheckpointMeta } from '../src/training/checkpoint';
import { loadLora, loraNamedParameters } from '../src/nn/lora';
import { runQuick } from './cli-run';
import { assertResumeBitExact } from './distill-resume';
import { TINY_TEACHER, trainTinyTeacher } from './tiny-teacher';

setNumThreads(1);

const maxAbs = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const f64 = (v: number[]) => tensor(v, { dtype: 'float64' });
const ddpm = discreteVP(linearBetas());
const SMIN = ddpm.sigmas[0];

test("skipping-step grid: sigma(0), sigma(k - 1), sigma(2k - 1), ..., sigma(T - 1) of the teacher's schedule; k must divide T", () => {
  const g = skippingGrid(ddpm, 20);
  assert.equal(g.length, 51);
  assert.deepEqual([g[0], g[1], g[2], g[50]], [ddpm.sigmas[0], ddpm.sigmas[19], ddpm.sigmas[39], ddpm.sigmas[999]]);
  assert.ok(
    g.every((s, i) => i === 0 || s > g[i - 1]),
    'ascending',
  );
  assert.deepEqual(skippingGrid(ddpm, 500), [ddpm.sigmas[0], ddpm.sigmas[499], ddpm.sigmas[999]]);
  assert.throws(() => skippingGrid(ddpm, 30), /skip must be an integer in \[1, 1000\) that divides the teacher's 1000 timesteps, got 30/);
  assert.throws(() => skippingGrid(ddpm, 1000), /got 1000/);
});

test("LCM coefficients: f(x, sigma_min) = x exactly on an eps network; the teacher's denoiser away from it; by hand", () => {
  const W = new Generator(5).randn([2, 2], { dtype: 'float64' });
  const net: Network = (xIn, cNoise) =>
    tidy(() =>
      xIn
        .matmul(W)
        .add(expandSigma(cNoise.div(1000), xIn))
        .tanh(),
    );
  const cNoise = discreteTimestep(ddpm);
  const b = lcmBoundary(SMIN);
  assert.deepEqual(b, { sigmaMin: SMIN, form: 'denoiser', sigmaData: SMIN });
  const f = fromCoefficients(net, (s) => boundaryCoefficients(vpCoefficients('eps', s, cNoise), s, { sigmaMin: SMIN, sigmaData: SMIN }));
  const D = fromCoefficients(net, (s) => vpCoefficients('eps', s, cNoise));
  const x = new Generator(1).randn([6, 2], { dtype: 'float64' }).mul(3);
  assert.equal(maxAbs(f(x, full([6], SMIN, { dtype: 'float64' })), x), 0, 'f(x, sigma_min) = x bit for bit');
  // at sigma = 1: c_skip = sd^2 / ((1 - smin)^2 + sd^2), f = c_skip x + (1 - c_skip) D
  const s1 = full([6], 1, { dtype: 'float64' });
  const cs = SMIN ** 2 / ((1 - SMIN) ** 2 + SMIN ** 2);
  assert.ok(maxAbs(f(x, s1), x.mul(cs).add(D(x, s1).mul(1 - cs))) < 1e-14);
  assert.ok(cs < 1.1e-4 && maxAbs(f(x, s1), D(x, s1)) < 1e-3, 'the teacher away from the boundary');
  const c = boundaryCoefficients(vpCoefficients('eps', f64([SMIN, 5]), cNoise), f64([SMIN, 5]), b);
  assert.deepEqual(Array.from(c.cSkip.toFloat64Array()).slice(0, 1), [1]);
  assert.equal(Math.abs(Array.from(c.cOut.toFloat64Array())[0]), 0);
});

// Two classes of two components each: guidance has work to do (as in test/guidance.test.ts)
const gmm = new GaussianMixture(
  [
    [-1, 0.5],
    [-0.3, -1],
    [1, 0],
    [0.4, 1.2],
  ],
  [0.5, 0.4, 0.45, 0.6],
  [0.3, 0.2, 0.35, 0.15],
  [0, 0, 1, 1],
);
const NULL = gmm.numClasses;
const exact: Denoiser = (x, sigma, cond) => gmm.denoise(x, sigma, cond);

test('LCM loss on the mixture: one exact DDIM step over k teacher timesteps of D_u + w (D_c - D_u), w per sample, in closed form', () => {
  const grid = skippingGrid(ddpm, 100); // 11 points
  const B = 6;
  const x0 = gmm.sample(B, new Generator(3)).to({ dtype: 'float64' });
  const labels = tensor([0, 1, 0, 1, 1, 0], { dtype: 'int64' });
  const w = f64([1, 2, 3.5, 5, 0, 7]);
  const cond = { classLabels: labels, guidance: w };
  // a student and target that read w: f = c_skip x + (1 - c_skip) D_w-shifted (any function of w will do)
  const f: Denoiser = (x, sigma, c) => tidy(() => exact(x, sigma, { classLabels: c!.classLabels }).mul(expandSigma(c!.guidance!.mul(0.1).add(1), x)));
  const teacher = guidedTeacher(exact, NULL, null);
  const { loss, perSample } = lcmLoss(f, { target: f, teacher }, x0, { grid, generator: new Generator(7), cond });
  // the same draws by hand: n uniform on the grid's pairs, z, x_{n+1} = x0 + sigma_{n+1} z
  const g = new Generator(7);
  const n = Array.from(g.randint(0, grid.length - 1, [B]).toFloat64Array());
  const z = g.randnLike(x0);
  const [now, next] = [f64(n.map((i) => grid[i])), f64(n.map((i) => grid[i + 1]))];
  const xNext = x0.add(z.mul(expandSigma(next, x0)));
  const Dc = gmm.denoise(xNext, next, { classLabels: labels });
  const Du = gmm.denoise(xNext, next);
  const Dw = Du.add(Dc.sub(Du).mul(expandSigma(w, x0))); // D_u + w (D_c - D_u)
  const xHat = Dw.add(xNext.sub(Dw).mul(expandSigma(now.div(next), x0))); // DDIM: D + sigma_n (x - D) / sigma_{n+1}
  const want = meanSquared(f(xNext, next, cond), f(xHat, now, cond));
  assert.ok(maxAbs(perSample, want) < 1e-12, `per sample ${Array.from(perSample.toFloat64Array()).join(', ')} vs ${Array.from(want.toFloat64Array()).join(', ')}`);
  assert.ok(Math.abs(loss.item() - want.mean().item()) < 1e-12);
  assert.ok(n.some((i, j) => n.indexOf(i) !== j) || new Set(n).size > 1, 'several grid pairs drawn');
  // the teacher at a fixed w is classifier-free guidance at that w; per-sample w equals it sample by sample
  const xs = gmm.sample(4, new Generator(4)).to({ dtype: 'float64' }).mul(2);
  const s = full([4], 0.8, { dtype: 'float64' });
  const y = tensor([0, 1, 1, 0], { dtype: 'int64' });
  const fixed = guidedTeacher(exact, NULL, 3)(xs, s, { classLabels: y });
  assert.ok(maxAbs(fixed, classifierFreeGuidance(exact, { scale: 3, nullClass: NULL })(xs, s, { classLabels: y })) < 1e-15);
  assert.ok(maxAbs(teacher(xs, s, { classLabels: y, guidance: full([4], 3, { dtype: 'float64' }) }), fixed) < 1e-12);
  assert.throws(() => teacher(xs, s, { classLabels: y }), /guidedTeacher: cond needs classLabels and guidance/);
});

let root: string;
let teacher: string;

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-lcm-'));
  teacher = await trainTinyTeacher(root, { dropout: 0.1 });
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const SMALL = ['--batch-size', '2', '--checkpoint-every', '0', '--threads', '1', '--consistency-steps', '2', '--skip', '100', '--lr', '1e-3'];

describe('diffuse distill lcm', () => {
  test('writes a w-embedding consistency student (teacher prediction + boundary) that sample --guidance W and the yardstick run', async () => {
    const out = path.join(root, 'lcm');
    const r = await runQuick(root, 'distill', 'lcm', '--teacher', teacher, '--out', out, '--student-steps', '2', ...SMALL);
    assert.equal(r.code, 0, r.err);
    const dir = path.join(out, 'lcm');
    const meta = readCheckpointMeta(dir);
    const rec = meta.distillation!;
    assert.equal(rec.method, 'lcm');
    assert.equal(rec.parameterization, 'eps');
    assert.deepEqual(rec.guidance.embedded, [1, 5]);
    assert.deepEqual(rec.consistency, { sigmaMin: SMIN, form: 'denoiser', sigmaData: SMIN });
    assert.deepEqual(rec.sampling, { sampler: 'consistency', grid: 'consistency', steps: 2 });
    assert.equal(meta.config.objective, 'eps');
    const optimizer = fs.readdirSync(dir).find((f) => f.startsWith('optimizer-'))!;
    const options = JSON.parse(readSafetensorsHeader(path.join(dir, optimizer)).metadata['optim.options']) as { lr: number; lrMults: number[] };
    assert.deepEqual([options.lr, options.lrMults], [1e-3, [1, LCM_LR.embeddingMult]], 'the new w embedding (a group of its own) learns at embeddingMult x the rate');
    const s = loadModel(dir);
    try {
      const x = new Generator(2).randn([2, 1, 32, 32]);
      const y = tensor([1, 3], { dtype: 'int64' });
      const at = (w: number, sigma: number) => withGuidance(s.denoiser, w)(x, full([2], sigma, { dtype: 'float64' }), { classLabels: y });
      assert.equal(maxAbs(at(3, SMIN), x), 0, 'f(x, sigma_min) = x');
      assert.ok(maxAbs(at(1, 5), at(5, 5)) > 1e-6, 'w reaches the student: changing w changes its output');
    } finally {
      s.net.dispose();
    }
    const smp = await runQuick(root, 'sample', dir, '-n', '4', '--guidance', '3', '--out', path.join(root, 'l.png'));
    assert.equal(smp.code, 0, smp.err);
    assert.match(smp.out, /2 steps, .*sampler consistency on the consistency grid, .*2 denoiser evaluations/);
    const no = await runQuick(root, 'sample', dir, '-n', '2', '--out', path.join(root, 'l2.png'));
    assert.equal(no.code, 2);
    assert.match(no.err, /embeds the guidance weight/);
    const ys = ['distill', 'yardstick', dir, '--teacher', teacher, '--n', '8', '--reference-steps', '4', '--student-steps', '1,2', '--guidance', '3'];
    const yd = await runQuick(root, ...ys, '--solvers', 'ddim:trailing', '--batch-size', '8', '--threads', '1', '--out', path.join(root, 'yd'));
    assert.equal(yd.code, 0, yd.err);
    const yj = JSON.parse(fs.readFileSync(path.join(root, 'yd', 'yardstick.json'), 'utf8')) as { students: { name: string; nfe: number }[] };
    assert.deepEqual(
      yj.students.map((row) => [path.basename(row.name), row.nfe]),
      [
        ['lcm@1', 1],
        ['lcm@2', 2],
      ],
    );
  });

  test('LCM-LoRA: only the adapters train, the adapter alone carries the record, and it makes the base and a fine-tune of it few-step samplers', async () => {
    const out = path.join(root, 'lora');
    const r = await runQuick(root, 'distill', 'lcm', '--teacher', teacher, '--out', out, '--lora-rank', '2', '--guidance', '3', ...SMALL);
    assert.equal(r.code, 0, r.err);
    const dir = path.join(out, 'lcm');
    const rec = readCheckpointMeta(dir).distillation!;
    assert.equal(rec.guidance.teacherScale, 3);
    assert.equal(rec.guidance.embedded, null);
    const adapter = path.join(dir, 'lora');
    assert.ok(fs.existsSync(path.join(adapter, 'adapter_model.safetensors')) && fs.existsSync(path.join(adapter, 'adapter_config.json')));
    // the base weights bit for bit the teacher's after the steps; the adapters moved; the adapter file round-trips
    const options = resolveDistillOptions({ method: 'lcm', teacher, out: path.join(root, 'lora-task'), consistencySteps: 3, batchSize: 2, skip: 100, loraRank: 2, guidance: 3, lr: 1e-3 });
    const task = DistillTask.create({ plan: planStages(options)[0], rounds: 1, options, teacherDir: teacher, out: path.join(root, 'lora-task', 'lcm') }, { log: null });
    const t = loadModel(teacher, { weights: 'ema' });
    try {
      for (let i = 0; i < 3; i++) task.trainStep();
      const bytes = (v: Tensor) => Buffer.from(v.bytes()).toString('base64');
      const base = t.net.stateDict();
      const after = task.net.stateDict();
      for (const [k, v] of Object.entries(base)) assert.equal(bytes(after[k]), bytes(v), `${k} unchanged`);
      const trained = loraNamedParameters(task.net);
      assert.ok(
        trained.some(([k, p]) => k.endsWith('lora_B.weight') && p.abs().max().item() > 0),
        'B moved off zero',
      );
      task.checkpoint();
      loadLora(t.net, path.join(root, 'lora-task', 'lcm', 'lora'));
      const back = new Map(loraNamedParameters(t.net));
      for (const [k, p] of trained) assert.equal(bytes(back.get(k)!), bytes(p), `${k} round-trips`);
    } finally {
      task.dispose();
      t.net.dispose();
    }
    // the base + adapter samples as the student; so does a model fine-tuned from the base
    const a = await runQuick(root, 'sample', teacher, '--lora', adapter, '-n', '4', '--steps', '2', '--out', path.join(root, 'b.png'));
    assert.equal(a.code, 0, a.err);
    assert.match(a.out, /LoRA .* x 1\), 2 steps, .*sampler consistency on the consistency grid, 2 denoiser evaluations/);
    const fine = path.join(root, 'fine');
    const ft = await runQuick(root, 'train', '--init', teacher, '--steps', '1', '--data-classes', '5,7,9', '--out', fine, '--threads', '1');
    assert.equal(ft.code, 0, ft.err);
    const b = await runQuick(root, 'sample', fine, '--lora', adapter, '-n', '4', '--out', path.join(root, 'f.png'));
    assert.equal(b.code, 0, b.err);
    assert.match(b.out, /4 steps, .*sampler consistency on the consistency grid, 4 denoiser evaluations/);
    const g = await runQuick(root, 'sample', fine, '--lora', adapter, '-n', '2', '--guidance', '2', '--out', path.join(root, 'g.png'));
    assert.equal(g.code, 2);
    assert.match(g.err, /guidance w = 3 built in/);
    // the merged export is a student the yardstick measures
    const ex = await runQuick(root, 'export', fine, path.join(root, 'fine-lcm'), '--lora', adapter);
    assert.equal(ex.code, 0, ex.err);
    assert.equal(readCheckpointMeta(path.join(root, 'fine-lcm')).distillation!.method, 'lcm');
    const bad = await runQuick(root, 'sample', dir, '--lora', adapter, '-n', '2', '--out', path.join(root, 'x.png'));
    assert.equal(bad.code, 2);
    assert.match(bad.err, /load it on an undistilled base model/);
  });

  test('dataClasses keeps the samples of the listed classes only (the fine-tune of scripts/lcm-lora.sh), every class name kept', () => {
    const all = loadTrainData(resolveTrainConfig({ ...TINY_TEACHER, dataLimit: null, out: path.join(root, 'x') }));
    const some = loadTrainData(resolveTrainConfig({ ...TINY_TEACHER, dataLimit: null, dataClasses: '5,7,9', out: path.join(root, 'x') }));
    try {
      const ys = Array.from({ length: 50 }, (_, k) => tidy(() => Array.from(some.batchAt(k).labels!.toFloat64Array()))).flat(); // 200 samples
      assert.ok(ys.length > 0 && ys.every((y) => [5, 7, 9].includes(y)), 'only classes 5, 7, 9');
      assert.equal(some.size, 18000, '6000 training images per class');
      assert.deepEqual(some.classNames, all.classNames);
      assert.throws(() => loadTrainData(resolveTrainConfig({ ...TINY_TEACHER, dataClasses: '5,10', out: path.join(root, 'x') })), /dataClasses.*class ids in 0\.\.9, got "5,10"/);
    } finally {
      all.dispose();
      some.dispose();
    }
  });

  test('flags: lcm-only flags elsewhere, LoRA without a fixed w, and a skip that does not divide T are refused', async () => {
    const cases: [string[], RegExp][] = [
      [['cd', '--skip', '10'], /--skip is for lcm \(not cd\)/],
      [['lcm', '--lora-rank', '4'], /LCM-LoRA bakes one w into the adapter/],
      [['lcm', '--skip', '30'], /skip must be an integer in \[1, 1000\) that divides/],
      [['lcm', '--parameterization', 'v'], /an lcm student keeps its teacher's prediction/],
      [['lcm', '--guidance', '3', '--guidance-range', '1,4'], /--guidance-range is for a student that embeds w/],
    ];
    for (const [args, re] of cases) {
      const r = await runQuick(root, 'distill', ...args, '--teacher', teacher, '--out', path.join(root, `bad-${args.join('')}`), '--batch-size', '2', '--threads', '1', '--consistency-steps', '1');
      assert.ok(r.code !== 0, args.join(' '));
      assert.match(r.err, re, args.join(' '));
    }
  });

  test('an lcm stage and an LCM-LoRA stage resumed from their checkpoints take the steps of uninterrupted ones, bit for bit', async () => {
    for (const [name, extra] of [
      ['r-lcm', {}],
      ['r-lora', { loraRank: 2, guidance: 3 }],
    ] as const) {
      const options = resolveDistillOptions({ method: 'lcm', teacher, out: path.join(root, name), consistencySteps: 4, skip: 100, batchSize: 2, checkpointEvery: 0, ...extra });
      const dir = path.join(root, name);
      fs.mkdirSync(dir);
      await assertResumeBitExact(options, teacher, dir);
    }
  });
});
