// DMD and DMD2 (src/distillation/dmd.ts, dmd-pairs.ts, dmd-task.ts). On the analytic mixture: with
// the exact mixture denoiser as the real score and the exact denoiser of a known Gaussian as the
// fake score, the distribution matching gradient equals the closed form (written out here in plain
// float64 numbers) to 1e-10, and the stop-gradient loss backpropagates exactly grad / numel; the
// gradient with exact scores moves a Gaussian generator onto the target; the fake-score update
// lowers its loss on a fixed batch. On a tiny U-Net teacher: the pairs are the teacher's ODE
// samples of their noise, survive a crash mid-way (resume = uninterrupted, byte for byte), and
// dmd / dmd2 run from the CLI, resume bit for bit, and sample in one step.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { noGrad, setNumThreads, tensor, tidy } from '../src/engine';
import { Generator } from '../src/engine/random';
import { Tensor } from '../src/engine/tensor';
import { Denoiser } from '../src/core/denoiser';
import { GaussianMixture } from '../src/data/mixture';
import { MLPDenoiserNet } from '../src/models/mlp';
import { edmDenoiser } from '../src/core/precond';
import { edmLoss } from '../src/training/losses';
import { Adam } from '../src/optim/adam';
import { generateSamples, samplingSigmas } from '../src/training/build';
import { loadModel, readCheckpointMeta } from '../src/training/checkpoint';
import { runSampler } from '../src/sampling/run';
import { distributionMatchingLoss, dmdGradient, dmdLoss, dmdSigma, generateOneStep, regressionLoss } from '../src/distillation/dmd';
import { makePairs, PAIRS_DEFAULTS, readPairs } from '../src/distillation/dmd-pairs';
import { DmdTask } from '../src/distillation/dmd-task';
import { resolveDistillOptions } from '../src/distillation/run';
import { discreteVP, linearBetas } from '../src/core/schedules';
import { runQuick } from './cli-run';
import { assertResumeBitExact } from './distill-resume';
import { trainTinyTeacher } from './tiny-teacher';

setNumThreads(1);

const f64 = (t: Tensor) => Array.from(t.toFloat64Array());

// The real distribution: a 3-component mixture in 2-D; the fake one: N(m, s^2 I).
const MEANS = [
  [1, 0.5],
  [-1, 0.2],
  [0.3, -1.2],
];
const STDS = [0.3, 0.5, 0.2];
const WEIGHTS = [0.5, 0.3, 0.2];
const [M, S] = [[0.4, -0.3], 0.7];

/** E[x0 | x] of the mixture by hand: sum_k r_k (mu_k + s_k^2 / v_k (x - mu_k)), v_k = s_k^2 + sigma^2. */
function mixtureMean(x: number[], sigma: number): number[] {
  const logp = MEANS.map((mu, k) => {
    const v = STDS[k] ** 2 + sigma ** 2;
    const d2 = mu.reduce((a, m, i) => a + (x[i] - m) ** 2, 0);
    return Math.log(WEIGHTS[k]) - (x.length / 2) * Math.log(2 * Math.PI * v) - d2 / (2 * v);
  });
  const top = Math.max(...logp);
  const w = logp.map((l) => Math.exp(l - top));
  const z = w.reduce((a, b) => a + b, 0);
  return x.map((xi, i) => MEANS.reduce((a, mu, k) => a + (w[k] / z) * (mu[i] + (STDS[k] ** 2 / (STDS[k] ** 2 + sigma ** 2)) * (xi - mu[i])), 0));
}

/** The Gaussian's posterior mean by hand: m + s^2 / (s^2 + sigma^2) (x - m). */
const gaussianMean = (x: number[], sigma: number, m = M, s = S) => x.map((xi, i) => m[i] + (s ** 2 / (s ** 2 + sigma ** 2)) * (xi - m[i]));

describe('the distribution matching gradient on the analytic mixture', () => {
  const real = new GaussianMixture(MEANS, STDS, WEIGHTS);
  const fake = new GaussianMixture([M], [S]);
  const realD: Denoiser = (x, sigma) => real.denoise(x, sigma);
  const fakeD: Denoiser = (x, sigma) => fake.denoise(x, sigma);
  const x0 = [
    [0.9, 0.1],
    [-0.5, 0.7],
    [0.2, -0.9],
    [2.0, 1.5],
  ];
  const xt = [
    [1.3, -0.2],
    [-1.1, 1.4],
    [0.0, -0.4],
    [3.1, 0.2],
  ];
  const sigmas = [0.1, 0.8, 0.35, 2.5];

  test('equals (D_fake - D_real) / mean|x0 - D_real| in closed form, to 1e-10', () => {
    const g = tidy(() => f64(dmdGradient(realD, fakeD, tensor(x0, { dtype: 'float64' }), tensor(xt, { dtype: 'float64' }), tensor(sigmas, { dtype: 'float64' }))));
    const want = xt.flatMap((x, b) => {
      const [dr, df] = [mixtureMean(x, sigmas[b]), gaussianMean(x, sigmas[b])];
      const norm = (Math.abs(x0[b][0] - dr[0]) + Math.abs(x0[b][1] - dr[1])) / 2;
      return df.map((v, i) => (v - dr[i]) / norm);
    });
    assert.equal(g.length, want.length);
    g.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-10, `component ${i}: ${v} vs ${want[i]}`));
    assert.ok(want.some((v) => Math.abs(v) > 0.1)); // a real difference, not zeros
  });

  test('is zero when the fake score is the real one', () => {
    const g = tidy(() => f64(dmdGradient(realD, realD, tensor(x0, { dtype: 'float64' }), tensor(xt, { dtype: 'float64' }), tensor(sigmas, { dtype: 'float64' }))));
    assert.ok(g.every((v) => v === 0));
  });

  test('the stop-gradient loss backpropagates grad / numel into x0', () => {
    tidy(() => {
      const x = tensor(x0, { dtype: 'float64' }).requiresGrad_();
      const grad = dmdGradient(realD, fakeD, x, tensor(xt, { dtype: 'float64' }), tensor(sigmas, { dtype: 'float64' }));
      dmdLoss(x, grad).backward();
      const got = f64(x.grad!);
      const want = f64(grad).map((v) => v / x.size);
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-15, `component ${i}: ${v} vs ${want[i]}`));
    });
  });

  test('distributionMatchingLoss draws sigma in DMD range and noises the detached sample', () => {
    tidy(() => {
      const schedule = discreteVP(linearBetas(1000));
      const x = tensor(x0, { dtype: 'float64' }).requiresGrad_();
      const { loss, grad, sigma } = distributionMatchingLoss(x, realD, fakeD, { sampleSigma: dmdSigma(schedule), generator: new Generator(3) });
      const s = f64(sigma);
      assert.ok(
        s.every((v) => v >= schedule.sigmas[20] && v <= schedule.sigmas[980]),
        `sigmas ${s}`,
      );
      // The same draws by hand: sigma first, then the noise.
      const g = new Generator(3);
      const sig = dmdSigma(schedule)(4, g, { dtype: 'float64' });
      const xt2 = x.detach().add(g.randnLike(x).mul(sig.reshape([4, 1])));
      assert.deepEqual(f64(grad), f64(dmdGradient(realD, fakeD, x, xt2, sig)));
      loss.backward();
      assert.ok(x.grad !== null);
    });
  });

  test('with exact scores, following the gradient moves a Gaussian generator G(z) = a + b z onto a Gaussian target', () => {
    const [mu, s] = [[0.8, -0.5], 0.4];
    const target = new GaussianMixture([mu], [s]);
    const a = tensor([-0.6, 0.9], { dtype: 'float64' }).requiresGrad_();
    const b = tensor([1.5], { dtype: 'float64' }).requiresGrad_();
    const opt = new Adam(
      [
        ['a', a],
        ['b', b],
      ],
      { lr: 0.02 },
    );
    const gen = new Generator(0);
    const schedule = discreteVP(linearBetas(1000));
    for (let k = 0; k < 400; k++) {
      tidy(() => {
        const [av, bv] = [f64(a), f64(b)[0]];
        const fakeExact: Denoiser = (x, sigma) => new GaussianMixture([av], [Math.abs(bv)]).denoise(x, sigma); // the exact score of G's distribution N(a, b^2 I)
        const x = a.add(gen.randn([256, 2], { dtype: 'float64' }).mul(b));
        distributionMatchingLoss(x, (y, sg) => target.denoise(y, sg), fakeExact, { sampleSigma: dmdSigma(schedule), generator: gen }).loss.backward();
      });
      opt.step();
      opt.zeroGrad();
    }
    const [av, bv] = [f64(a), Math.abs(f64(b)[0])];
    assert.ok(Math.abs(av[0] - mu[0]) < 0.05 && Math.abs(av[1] - mu[1]) < 0.05, `a = ${av}`);
    assert.ok(Math.abs(bv - s) < 0.05, `b = ${bv}`);
    opt.dispose();
    target.dispose();
  });

  test('the fake score update (denoising loss on detached samples) lowers its loss on a fixed batch', () => {
    const net = new MLPDenoiserNet({ hidden: 32, depth: 2, embedDim: 16, embedding: 'fourier' }, { generator: new Generator(1) });
    const D = edmDenoiser((x, c) => net.forward(x, c));
    const x0 = real.sample(128, new Generator(2));
    const lossAt = () => edmLoss(D, x0, { generator: new Generator(5) }).loss; // the same sigmas and noise each time
    const before = tidy(() => noGrad(() => lossAt().item()));
    const opt = new Adam(net.namedParameters(), { lr: 3e-3 });
    for (let k = 0; k < 40; k++) {
      tidy(() => lossAt().backward());
      opt.step();
      opt.zeroGrad();
    }
    const afterLoss = tidy(() => noGrad(() => lossAt().item()));
    assert.ok(afterLoss < 0.7 * before, `${before} -> ${afterLoss}`);
    opt.dispose();
    net.dispose();
    x0.dispose();
  });

  test('regressionLoss is the mean square', () => {
    tidy(() => assert.equal(regressionLoss(tensor([1, 2, 3], { dtype: 'float64' }), tensor([1, 0, 0], { dtype: 'float64' })).item(), (0 + 4 + 9) / 3));
  });

  after(() => {
    real.dispose();
    fake.dispose();
  });
});

let root: string;
let teacher: string;

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-dmd-'));
  teacher = await trainTinyTeacher(root);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const pairsOptions = (out: string) => ({ ...PAIRS_DEFAULTS, teacher, out, n: 5, chunk: 2, steps: 3 });
const filesOf = (dir: string) =>
  fs
    .readdirSync(dir)
    .sort()
    .map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('base64')]);

describe('DMD pairs', () => {
  test("pair i is the teacher's dpmpp-2m sample from sigma_max z_i, class i mod 10", () => {
    const dir = path.join(root, 'pairs-a');
    assert.deepEqual(makePairs(pairsOptions(dir), { log: null }), { chunks: 3, written: 3 });
    const p = readPairs(dir);
    const t = loadModel(teacher);
    try {
      assert.deepEqual(p.noise.shape, [5, 1, 32, 32]);
      assert.deepEqual(f64(p.labels!), [0, 1, 2, 3, 4]);
      tidy(() => {
        const sigmas = samplingSigmas(t.meta.config, 3, 'karras');
        assert.equal(p.manifest.sigmaMax, sigmas.select(0, 0).item());
        const y = noGrad(() => runSampler('dpmpp-2m', t.denoiser, p.noise.mul(p.manifest.sigmaMax), sigmas, { generator: new Generator(0), cond: { classLabels: p.labels! }, clip: [-1, 1] }));
        // (batches of 5 here, of 2, 2, 1 in the chunks: the convolutions round differently, within float32 noise)
        const close = (a: Tensor, what: string) => assert.ok(Math.max(...f64(a.sub(p.images).abs())) < 1e-5, what);
        close(y, 'the ODE from sigma_max z');
        // and the noise is diffuse sample's: sample i of seed 0 is these images
        close(generateSamples(t.denoiser, t.meta.config, { shape: [1, 32, 32], n: 5, seed: 0, steps: 3, sampler: 'dpmpp-2m', grid: 'karras', labels: [0, 1, 2, 3, 4] }), 'diffuse sample');
      });
    } finally {
      p.dispose();
      t.net.dispose();
    }
  });

  test('a run stopped after its first chunk is finished by the same call, byte for byte; other settings are refused', () => {
    const dir = path.join(root, 'pairs-b');
    assert.throws(
      () =>
        makePairs(pairsOptions(dir), {
          log: null,
          onChunk: () => {
            throw new Error('crash');
          },
        }),
      /crash/,
    );
    assert.throws(() => readPairs(dir), /2 of 3 chunks are missing/);
    assert.deepEqual(makePairs(pairsOptions(dir), { log: null }), { chunks: 3, written: 2 });
    assert.deepEqual(filesOf(dir), filesOf(path.join(root, 'pairs-a')));
    assert.throws(() => makePairs({ ...pairsOptions(dir), steps: 4 }, { log: null }), /steps = 3, not 4/);
    assert.throws(() => makePairs({ ...pairsOptions(dir), sampler: 'ddpm' }, { log: null }), /deterministic/);
  });
});

const SMALL = ['--batch-size', '2', '--checkpoint-every', '0', '--threads', '1', '--dmd-steps', '2'];

describe('diffuse distill dmd|dmd2', () => {
  test('dmd2 writes a one-step student that diffuse sample runs in one evaluation: G(sigma_max z) clipped', async () => {
    const out = path.join(root, 'dmd2');
    const r = await runQuick(root, 'distill', 'dmd2', '--teacher', teacher, '--out', out, '--fake-updates', '2', ...SMALL);
    assert.equal(r.code, 0, r.err);
    const dir = path.join(out, 'dmd2');
    const meta = readCheckpointMeta(dir);
    assert.equal(meta.step, 2);
    assert.deepEqual(meta.distillation!.sampling, { sampler: 'ddim', grid: 'trailing', steps: 1 });
    assert.equal(meta.distillation!.stage, 'dmd');
    assert.ok(meta.files.fake && meta.files['fake-optimizer']);
    const s = await runQuick(root, 'sample', dir, '--n', '2', '--out', path.join(root, 'dmd2.png'));
    assert.equal(s.code, 0, s.err);
    const student = loadModel(dir);
    try {
      tidy(() => {
        const x = generateSamples(student.denoiser, student.meta.config, { shape: [1, 32, 32], n: 2, seed: 0, steps: 1, sampler: 'ddim', grid: 'trailing', labels: [0, 1] });
        const z = new Generator(0).randn([1, 1, 32, 32]);
        const z1 = new Generator(1).randn([1, 1, 32, 32]);
        const sigmaMax = samplingSigmas(student.meta.config, 1).select(0, 0).item();
        const g = noGrad(() => generateOneStep(student.denoiser, tensor([...f64(z), ...f64(z1)], { shape: [2, 1, 32, 32] }), sigmaMax, { classLabels: tensor([0, 1], { dtype: 'int64' }) })).clamp(
          -1,
          1,
        );
        const err = Math.max(...f64(x.sub(g).abs()));
        assert.ok(err < 1e-6, `sample vs G(z): ${err}`);
      });
    } finally {
      student.net.dispose();
    }
  });

  test("dmd with pairs runs and records the pairs' steps; flags are checked", async () => {
    const out = path.join(root, 'dmd');
    const pairs = path.join(root, 'pairs-a');
    const r = await runQuick(root, 'distill', 'dmd', '--teacher', teacher, '--out', out, '--pairs', pairs, ...SMALL);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /student: .*dmd/);
    const meta = readCheckpointMeta(path.join(out, 'dmd'));
    assert.equal(meta.distillation!.teacher.steps, 3);
    const bad = async (args: string[], re: RegExp) => {
      const b = await runQuick(root, 'distill', ...args, '--teacher', teacher, '--out', path.join(root, 'x'));
      assert.equal(b.code, 2, b.err);
      assert.match(b.err, re);
    };
    await bad(['dmd'], /dmd needs --pairs/);
    await bad(['dmd2', '--pairs', pairs], /--pairs is for dmd/);
    await bad(['dmd2', '--student-steps', '2'], /one-step generator/);
    await bad(['progressive', '--fake-updates', '2'], /--fake-updates is for dmd, dmd2/);
    await bad(['dmd', '--pairs', pairs, '--guidance', '2'], /were made with guidance null/);
  });

  test('a dmd2 stage resumed from a checkpoint takes the steps of an uninterrupted one, bit for bit (generator, fake score, both optimizers)', async () => {
    const options = resolveDistillOptions({ method: 'dmd2', teacher, out: path.join(root, 'resume'), batchSize: 2, dmdSteps: 4, fakeUpdates: 2, checkpointEvery: 0, threads: 1 });
    await assertResumeBitExact(options, teacher, path.join(root, 'resume'), { create: (s, run) => DmdTask.create(s, run), nets: (t) => [t.net, t.fake] });
  });

  test('dmd-pairs from the CLI', async () => {
    const out = path.join(root, 'pairs-cli');
    const r = await runQuick(root, 'distill', 'dmd-pairs', '--teacher', teacher, '--n', '3', '--steps', '2', '--out', out, '--threads', '1');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote 1 of 1 chunks: 3 pairs/);
    const again = await runQuick(root, 'distill', 'dmd-pairs', '--teacher', teacher, '--n', '3', '--steps', '2', '--out', out);
    assert.match(again.out, /all 1 chunks were there/);
  });
});
