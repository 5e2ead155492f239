// Adversarial diffusion distillation (Sauer et al. 2023): the hinge losses against hand values; the R1
// penalty against a hand value and its gradient (double backward) against finite differences in
// float64; the distillation target built from the RE-NOISED student output (on the analytic mixture,
// whose denoiser is exact: a target from noised real data fails the test); the first student point is
// pure noise; the frozen feature network stays bit-identical through training; `diffuse distill add`
// end to end (then `diffuse sample --steps 1`), and a resumed stage matches an uninterrupted one bit
// for bit (student, heads and both optimizers).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Generator, gradcheck, setNumThreads, tensor, tidy } from '../src/engine';
import * as F from '../src/engine/functional';
import { Tensor } from '../src/engine/tensor';
import { Denoiser } from '../src/core/denoiser';
import { GaussianMixture } from '../src/data/mixture';
import { ADD_LAMBDA, AddHeads, addDistillationLoss, addGeneratorLoss, addStudentInput, addWeight, hingeDiscriminatorLoss, hingeGeneratorLoss, r1Penalty } from '../src/distillation/add';
import { resolveDistillOptions, planStages } from '../src/distillation/run';
import { DistillTask } from '../src/distillation/task';
import { Part, readCheckpointMeta } from '../src/training/checkpoint';
import { runQuick } from './cli-run';
import { assertResumeBitExact } from './distill-resume';
import { trainTinyTeacher } from './tiny-teacher';

setNumThreads(1);

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);
const f64 = (v: number[][] | number[]) => tensor(v, { dtype: 'float64' });

describe('ADD losses', () => {
  test('hinge losses against hand values (two heads)', () => {
    const real = f64([
      [0.5, -2],
      [2, 0],
    ]);
    const fake = f64([
      [-0.5, 1],
      [-3, 0.2],
    ]);
    // head 0: real mean(0.5, 0) = 0.25, fake mean(0.5, 0) = 0.25; head 1: real mean(3, 1) = 2, fake mean(2, 1.2) = 1.6
    close(hingeDiscriminatorLoss(real, fake).item(), 4.1);
    // -(mean(-0.5, -3) + mean(1, 0.2)) = -(-1.75 + 0.6)
    close(hingeGeneratorLoss(fake).item(), 1.15);
  });

  test('R1 of a linear discriminator is gamma/2 ||sum_k w_k||^2; its gradient (double backward) matches finite differences', () => {
    const g = new Generator(3);
    const x = g.randn([2, 1, 4, 4], { dtype: 'float64' });
    const w = g.randn([2, 16], { dtype: 'float64' }); // two heads, D_k(x) = w_k . x
    const xr = x.detach().requiresGrad_();
    const lin = tidy(() => xr.reshape([2, 16]).matmul(w.transpose(0, 1))); // [B, 2]
    const sumW = tidy(() => w.sum(0).square().sum().item());
    close(r1Penalty(lin, xr, 0.3).item(), 0.15 * sumW, 1e-10);

    // A nonlinear tiny discriminator: frozen features tanh(conv(x, Wf)), a head silu(conv(., W1)) pooled, then . w2.
    const Wf = g.randn([3, 1, 3, 3], { dtype: 'float64' }).mul(0.5);
    const r1Of = (W1: Tensor, w2: Tensor) => {
      const xi = x.detach().requiresGrad_();
      const feat = F.conv2d(xi, Wf, { padding: 1 }).tanh(); // [B, 3, 4, 4]
      const phi = F.conv2d(feat, W1, { padding: 1 }).silu().mean([2, 3]); // [B, 2]
      return r1Penalty(phi.matmul(w2), xi, 0.7); // logits [B, 1]
    };
    const W1 = g.randn([2, 3, 3, 3], { dtype: 'float64' }).mul(0.5);
    const w2 = g.randn([2, 1], { dtype: 'float64' });
    const r = gradcheck(r1Of, [W1, w2]);
    assert.ok(r.ok, `max |autograd - finite differences| = ${r.maxError}`);
    assert.ok(r1Of(W1, w2).item() > 0);
  });

  test('c(t) is alpha-bar_t = 1 / (1 + sigma^2)', () => {
    assert.deepEqual(Array.from(addWeight(f64([0, 1, 3])).toFloat64Array()), [1, 0.5, 0.1]);
  });

  test('the student input: x0 + sigma_s eps on the grid, pure noise sigma_max eps at its first point', () => {
    const x0 = tidy(() => new Generator(1).randn([64, 2], { dtype: 'float64' }).add(5));
    const grid = [80, 2, 0.5];
    const { x, sigma } = addStudentInput(x0, grid, new Generator(7));
    const replay = new Generator(7);
    const idx = Array.from(replay.randint(0, 3, [64]).toFloat64Array());
    const eps = replay.randnLike(x0);
    const s = Array.from(sigma.toFloat64Array());
    assert.deepEqual(
      s,
      idx.map((i) => grid[i]),
    );
    assert.ok(idx.includes(0) && idx.some((i) => i > 0));
    const want = tidy(() => x0.mul(f64(idx.map((i) => (i === 0 ? 0 : 1))).reshape([64, 1])).add(eps.mul(sigma.reshape([64, 1]))));
    close(
      tidy(() => x.sub(want).abs().max().item()),
      0,
    );
  });

  test('the distillation target is the teacher x0 of the RE-NOISED student output (exact mixture teacher), not of noised real data', () => {
    const gmm = new GaussianMixture(
      [
        [-1, 0.5],
        [1, -0.5],
      ],
      [0.2, 0.3],
    );
    const exact: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
    const B = 32;
    const x0 = gmm.sample(B, new Generator(1), { dtype: 'float64' }); // real data
    const student = tidy(() =>
      new Generator(2)
        .randn([B, 2], { dtype: 'float64' })
        .mul(0.3)
        .add(f64([2.5, 2.5])),
    ); // far from the data
    const teacherSigmas = [0.1, 0.5, 1, 2];
    const loss = addDistillationLoss(exact, student, { teacherSigmas, generator: new Generator(9) });

    const replay = new Generator(9);
    const sig = f64(Array.from(replay.randint(0, 4, [B]).toFloat64Array(), (i) => teacherSigmas[i]));
    const n = replay.randnLike(student);
    const byHand = (from: Tensor) =>
      tidy(() => {
        const target = exact(from.add(n.mul(sig.reshape([B, 1]))), sig);
        return student.sub(target).square().mean([1]).mul(sig.square().add(1).reciprocal());
      });
    const d = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
    assert.ok(d(loss, byHand(student)) < 1e-12, 'c(t) ||x^ - D_teacher(x^ + sigma_t n, sigma_t)||^2 / d');
    assert.ok(d(loss, byHand(x0)) > 1e-2, 'a target from noised real data differs');

    // The same through addGeneratorLoss (the student's input drawn from x0, then its output re-noised).
    const heads = new AddHeads([2], { generator: new Generator(4) }).to({ dtype: 'float64' });
    const disc = { features: (x: Tensor) => [x.reshape([x.dim(0), 2, 1, 1])], heads };
    const c = f64([2.5, 2.5]);
    const constant: Denoiser = (x) => x.mul(0).add(c); // its output does not depend on its input
    const studentSigmas = [80, 1];
    const g = addGeneratorLoss(constant, exact, disc, x0, { studentSigmas, teacherSigmas, generator: new Generator(5) });
    const r2 = new Generator(5);
    r2.randint(0, 2, [B]);
    r2.randnLike(x0); // addStudentInput's draws
    const sig2 = f64(Array.from(r2.randint(0, 4, [B]).toFloat64Array(), (i) => teacherSigmas[i]));
    const n2 = r2.randnLike(x0);
    const want = tidy(() => {
      const xHat = c.reshape([1, 2]).expand([B, 2]);
      const target = exact(xHat.add(n2.mul(sig2.reshape([B, 1]))), sig2);
      return xHat.sub(target).square().mean([1]).mul(sig2.square().add(1).reciprocal()).mean().item();
    });
    close(g.distill.item(), want);
    close(g.loss.item(), g.adversarial.item() + ADD_LAMBDA * want, 1e-12);
    heads.dispose();
  });
});

describe('diffuse distill add', () => {
  let root: string;
  let teacher: string;
  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-add-'));
    teacher = await trainTinyTeacher(root);
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test('the frozen feature network (the teacher) stays bit-identical while the student and the heads train', () => {
    const o = resolveDistillOptions({ method: 'add', teacher, out: path.join(root, 'frozen'), adversarialSteps: 3, batchSize: 2, checkpointEvery: 0 });
    const task = DistillTask.create({ plan: planStages(o)[0], rounds: 1, options: o, teacherDir: teacher, out: o.out }, { log: null });
    try {
      const bytes = (m: { stateDict(): Record<string, Tensor> }) => Object.entries(m.stateDict()).map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')]);
      const t0 = bytes(task.teacherNet);
      const [s0, h0] = task.parts.map((p) => bytes(p.module));
      for (let i = 0; i < 3; i++) task.trainStep();
      assert.deepEqual(bytes(task.teacherNet), t0);
      assert.ok(task.teacherNet.parameters().every((p) => !p.requiresGrad && p.grad === null));
      const [s1, h1] = task.parts.map((p) => bytes(p.module));
      assert.notDeepEqual(s1, s0, 'the student trains');
      assert.notDeepEqual(h1, h0, 'the heads train');
      assert.equal(task.history.discriminator.length, 3);
      assert.equal(task.history['adversarial distillation'].length, 3);
      assert.notDeepEqual(task.history.discriminator, task.history['adversarial distillation'], "both phases' losses are recorded, each its own (not copies)");
      const heads = task.parts[1].module as AddHeads;
      assert.deepEqual(
        heads.convs.map((c) => c.inChannels),
        [8, 16],
        "one head per feature map of the teacher's encoder (level 0's last block, 8 x 32^2) and middle (16 x 16^2)",
      );
      assert.ok(task.history.discriminator.every((l) => Number.isFinite(l) && l >= 0));
    } finally {
      task.dispose();
    }
  });

  test('writes a 1-4 step student that diffuse sample runs in 1 step; flags are checked', async () => {
    const out = path.join(root, 'add');
    const r = await runQuick(root, 'distill', 'add', '--teacher', teacher, '--out', out, '--adversarial-steps', '2', '--batch-size', '2', '--checkpoint-every', '0', '--threads', '1');
    assert.equal(r.code, 0, r.err);
    const dir = path.join(out, 'add');
    const meta = readCheckpointMeta(dir);
    const rec = meta.distillation!;
    assert.equal(meta.step, 2);
    assert.equal(rec.method, 'add');
    assert.equal(rec.stage, 'adversarial');
    assert.deepEqual(rec.sampling, { sampler: 'consistency', grid: 'trailing', steps: 4 });
    assert.deepEqual(Object.keys(meta.files).sort(), ['discriminator', 'discriminator-optimizer', 'model', 'optimizer']);
    const one = await runQuick(root, 'sample', dir, '-n', '2', '--steps', '1', '--out', path.join(root, 'a1.png'));
    assert.equal(one.code, 0, one.err);
    assert.match(one.out, /1 steps, .*sampler consistency on the trailing grid, 1 denoiser evaluations/);
    const cases: [string[], RegExp][] = [
      [['add', '--student-steps', '8'], /studentSteps.*at most 4/],
      [['add', '--round-steps', '3'], /--round-steps is for progressive, guided \(not add\)/],
      [['cd', '--r1-gamma', '1'], /--r1-gamma is for add \(not cd\)/],
      [['add', '--guidance', '3'], /--guidance is not for add/],
    ];
    for (const [args, re] of cases) {
      const b = await runQuick(root, 'distill', ...args, '--teacher', teacher, '--out', path.join(root, `bad-${args.join('')}`), '--batch-size', '2', '--threads', '1');
      assert.ok(b.code !== 0, args.join(' '));
      assert.match(b.err, re, args.join(' '));
    }
  });

  test('a resumed add stage takes the steps of an uninterrupted one, bit for bit (student, heads, both optimizers)', async () => {
    const options = resolveDistillOptions({ method: 'add', teacher, out: path.join(root, 'r'), adversarialSteps: 4, batchSize: 2, checkpointEvery: 0 });
    await assertResumeBitExact(options, teacher, root);
    const bytes = (dir: string, key: Part) => fs.readFileSync(path.join(dir, readCheckpointMeta(dir).files[key]!.file)).toString('base64');
    for (const key of ['discriminator', 'discriminator-optimizer', 'optimizer'] as const) assert.equal(bytes(path.join(root, 'rb'), key), bytes(path.join(root, 'ra'), key), key);
  });
});
