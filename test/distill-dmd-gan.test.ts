// DMD2's GAN head (src/distillation/dmd-gan.ts, dmd-task.ts; Yin et al. 2024, Sec. 4.3): the logistic
// losses against hand values and their gradients in the logits; the classifier reads the U-Net's
// bottleneck at c_in x_t and t(sigma) and draws sigma before the noise; the head's discriminator loss
// gives gradient to the head and the fake score's encoder and middle, none to its decoder; the
// generator loss reaches the generator. On a tiny U-Net teacher: the head trains with the fake score
// (one optimizer, one checkpoint file), it changes the run, the checkpoint round trip keeps it, a run
// with the head resumes bit for bit, and the options are checked.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { noGrad, setNumThreads, tensor, tidy } from '../src/engine';
import { Generator } from '../src/engine/random';
import { Tensor } from '../src/engine/tensor';
import { sigmaToT } from '../src/core/schedules';
import { UNet } from '../src/models/unet';
import { buildDenoiser, buildLoss, buildNetwork, buildSchedule } from '../src/training/build';
import { loadModel, readCheckpointMeta } from '../src/training/checkpoint';
import { discreteSigma } from '../src/training/sigma-sampling';
import { AddHeads } from '../src/distillation/add';
import { generateOneStep } from '../src/distillation/dmd';
import { bottleneckChannels, bottleneckClassifier, classifyNoised, ganDiscriminatorLoss, ganGeneratorLoss } from '../src/distillation/dmd-gan';
import { DmdTask } from '../src/distillation/dmd-task';
import { DistillOptions } from '../src/distillation/task';
import { planStages, resolveDistillOptions } from '../src/distillation/run';
import { runQuick } from './cli-run';
import { assertResumeBitExact } from './distill-resume';
import { trainTinyTeacher } from './tiny-teacher';

setNumThreads(1);

const f64 = (t: Tensor) => Array.from(t.toFloat64Array());
const softplus = (v: number) => Math.log1p(Math.exp(v));
const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

describe('the GAN losses', () => {
  const real = [0.5, -2, 1.25];
  const fake = [1, -0.3, 0];

  test('discriminator side: mean softplus(-D(real)) + mean softplus(D(fake)); its gradients by hand', () => {
    tidy(() => {
      const r = tensor(real, { dtype: 'float64' }).requiresGrad_();
      const f = tensor(fake, { dtype: 'float64' }).requiresGrad_();
      const loss = ganDiscriminatorLoss(r, f);
      const want = real.reduce((a, v) => a + softplus(-v), 0) / 3 + fake.reduce((a, v) => a + softplus(v), 0) / 3;
      close(loss.item(), want);
      loss.backward();
      f64(r.grad!).forEach((g, i) => close(g, -sigmoid(-real[i]) / 3)); // d softplus(-x) = -sigmoid(-x)
      f64(f.grad!).forEach((g, i) => close(g, sigmoid(fake[i]) / 3));
    });
  });

  test('generator side (non-saturating): mean softplus(-D(fake)); at D = 0 both losses are ln 2 per term', () => {
    tidy(() => {
      const f = tensor(fake, { dtype: 'float64' }).requiresGrad_();
      const loss = ganGeneratorLoss(f);
      close(loss.item(), fake.reduce((a, v) => a + softplus(-v), 0) / 3);
      loss.backward();
      f64(f.grad!).forEach((g, i) => close(g, -sigmoid(-fake[i]) / 3));
      const zero = tensor([0, 0], { dtype: 'float64' });
      close(ganGeneratorLoss(zero).item(), Math.LN2);
      close(ganDiscriminatorLoss(zero, zero).item(), 2 * Math.LN2);
    });
  });
});

let root: string;
let teacher: string;

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-dmd-gan-'));
  teacher = await trainTinyTeacher(root);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const bytes = (m: { stateDict(): Record<string, Tensor> }) => Object.entries(m.stateDict()).map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')]);

describe('the classifier on the fake score', () => {
  /** The teacher's network twice (a fake score with the head attached, and a generator), the schedule and the denoising loss. */
  function setup() {
    const t = loadModel(teacher);
    const c = t.meta.config;
    const copy = () => {
      const n = buildNetwork(t.meta.network, { generator: new Generator(0) }) as UNet;
      n.loadStateDict(t.net.stateDict());
      return n;
    };
    const fake = copy();
    const gNet = copy();
    t.net.dispose();
    const head = fake.attach('gan_head', new AddHeads([bottleneckChannels(fake)], { numClasses: null, generator: new Generator(7) }));
    const schedule = buildSchedule(c)!;
    const D = bottleneckClassifier(fake, head, schedule);
    const denoise = buildLoss(c, buildDenoiser(c, fake), fake);
    return { c, fake, gNet, head, schedule, D, denoise, dispose: () => (fake.dispose(), gNet.dispose()) };
  }

  test("reads the U-Net's middle features at c_in x_t and t(sigma); classifyNoised draws sigma, then the noise", () => {
    const s = setup();
    try {
      tidy(() => {
        const x = new Generator(1).randn([2, 1, 32, 32]);
        const labels = tensor([3, 10], { dtype: 'int64' });
        assert.equal(bottleneckChannels(s.fake), 16);
        const got = noGrad(() => classifyNoised(s.D, x, { sampleSigma: discreteSigma(s.schedule), generator: new Generator(5), labels }));
        const g = new Generator(5);
        const sigma = discreteSigma(s.schedule)(2, g, { dtype: 'float64' });
        const xt = x.add(g.randnLike(x).mul(sigma.reshape([2, 1, 1, 1]).to({ dtype: 'float32' })));
        const cIn = f64(sigma).map((v) => 1 / Math.sqrt(1 + v * v));
        const t = sigmaToT(s.schedule, sigma);
        assert.deepEqual(
          f64(t).map((v) => Math.abs(v - Math.round(v)) < 1e-6),
          [true, true],
          'sigma is one of the schedule sigmas',
        );
        const feats = noGrad(() => s.fake.features(xt.mul(tensor(cIn, { shape: [2, 1, 1, 1] })), t.to({ dtype: 'float32' }), labels));
        assert.deepEqual(feats[feats.length - 1].shape, [2, 16, 16, 16]);
        const want = noGrad(() => s.head.forward([feats[feats.length - 1]]));
        assert.deepEqual(got.shape, [2]);
        f64(got).forEach((v, i) => close(v, f64(want)[i], 1e-5));
      });
    } finally {
      s.dispose();
    }
  });

  test("the discriminator loss adds gradient to the head and the fake score's encoder and middle, none to its decoder", () => {
    const s = setup();
    try {
      const grads = (withGan: boolean) =>
        tidy(() => {
          const gen = new Generator(2);
          const x0 = gen.randn([2, 1, 32, 32]);
          const real = gen.randn([2, 1, 32, 32]).tanh();
          let loss = s.denoise(x0, new Generator(3), {}).loss;
          if (withGan) {
            const o = { sampleSigma: discreteSigma(s.schedule), generator: new Generator(4) };
            loss = loss.add(ganDiscriminatorLoss(classifyNoised(s.D, real, o), classifyNoised(s.D, x0, o)).mul(0.01));
          }
          loss.backward();
          const out = Object.fromEntries(s.fake.namedParameters().map(([n, p]) => [n, p.grad ? Buffer.from(p.grad.bytes()).toString('base64') : null]));
          s.fake.zeroGrad();
          return out;
        });
      const [off, on] = [grads(false), grads(true)];
      const names = Object.keys(on);
      const head = names.filter((n) => n.startsWith('gan_head.'));
      assert.deepEqual(head, ['gan_head.conv0.weight', 'gan_head.conv0.bias', 'gan_head.out0.weight', 'gan_head.out0.bias']);
      for (const n of head) {
        assert.equal(off[n], null, `${n}: no gradient without the GAN loss`);
        assert.notEqual(on[n], null, `${n}: a gradient with it`);
      }
      const mid = names.filter((n) => n.startsWith('mid.'));
      assert.notEqual(on['conv_in.weight'], off['conv_in.weight'], 'the encoder learns from the head');
      // The middle too: its blocks' output convolutions (in this barely trained teacher they are still
      // zero, as initialized, so the layers before them get no gradient from either loss).
      const midOut = mid.filter((n) => n.includes('.conv2.'));
      assert.equal(midOut.length, 4);
      for (const n of midOut) assert.notEqual(on[n], off[n], n);
      const decoder = names.filter((n) => n.startsWith('dec.') || n.startsWith('out_'));
      assert.ok(decoder.length > 0);
      for (const n of decoder) assert.equal(on[n], off[n], `${n}: the head does not read the decoder`);
    } finally {
      s.dispose();
    }
  });

  test('the generator loss reaches the generator through the classifier (and not when its sample is detached)', () => {
    const s = setup();
    try {
      const G = buildDenoiser(s.c, s.gNet);
      const sigmaMax = s.schedule.sigmas[s.schedule.T - 1];
      const run = (detach: boolean) =>
        tidy(() => {
          const x0 = generateOneStep(G, new Generator(8).randn([2, 1, 32, 32]), sigmaMax);
          ganGeneratorLoss(classifyNoised(s.D, detach ? x0.detach() : x0, { sampleSigma: discreteSigma(s.schedule), generator: new Generator(9) })).backward();
          const norm = s.gNet.parameters().reduce((a, p) => a + (p.grad ? p.grad.square().sum().item() : 0), 0);
          s.gNet.zeroGrad();
          s.fake.zeroGrad();
          return norm;
        });
      assert.ok(run(false) > 0, 'gradient in the generator');
      assert.equal(run(true), 0);
    } finally {
      s.dispose();
    }
  });
});

describe('dmd2 with the GAN head', () => {
  const optionsOf = (out: string, extra: Partial<DistillOptions> = {}) =>
    resolveDistillOptions({ method: 'dmd2', teacher, out, batchSize: 2, dmdSteps: 4, fakeUpdates: 2, checkpointEvery: 0, threads: 1, ...extra });
  const create = (o: DistillOptions, resume = false) => DmdTask.create({ plan: planStages(o)[0], rounds: 1, options: o, teacherDir: teacher, out: o.out }, { log: null, resume });

  test('the head is part of the fake score (its optimizer and file); it trains; the run differs from one without it', () => {
    const off = create(optionsOf(path.join(root, 'off')));
    const on = create(optionsOf(path.join(root, 'on'), { ganWeight: 3e-3 }));
    try {
      assert.equal(off.ganHead, null);
      assert.ok(!Object.keys(off.fake.stateDict()).some((k) => k.startsWith('gan_head.')), 'off: the fake score is the teacher network alone');
      const head = on.ganHead!;
      const fakePart = on.parts.find((p) => p.module === on.fake)!;
      for (const p of head.parameters()) assert.ok(fakePart.optimizer.params.includes(p), "the head's parameters are the fake-score optimizer's");
      const [g0, h0] = [bytes(on.net), bytes(head)];
      const g0off = bytes(off.net);
      on.trainStep();
      off.trainStep();
      assert.notDeepEqual(bytes(head), h0, 'the head trains');
      // At step 1 the fake score equals the teacher, so the DMD gradient is 0: without the head G stays, with it G moves.
      assert.equal(off.history.generator[0], 0);
      assert.deepEqual(bytes(off.net), g0off);
      assert.notDeepEqual(bytes(on.net), g0, "the GAN term's gradient reaches the generator");
      assert.ok(on.history.generator[0] > 0);
      const fakeOnly = (t: DmdTask) => bytes(t.fake).filter(([k]) => !k.startsWith('gan_head.'));
      assert.notDeepEqual(fakeOnly(on), fakeOnly(off), 'the fake score takes another update');
      assert.notDeepEqual(on.history['fake score'], off.history['fake score']);
    } finally {
      off.dispose();
      on.dispose();
    }
  });

  test('a checkpoint round trip keeps the head and its optimizer state', () => {
    const o = optionsOf(path.join(root, 'trip'), { ganWeight: 3e-3, ganDiscWeight: 0.05 });
    const a = create(o);
    a.trainStep();
    a.checkpoint();
    const b = create(o, true);
    try {
      const meta = readCheckpointMeta(o.out);
      assert.ok(meta.files.fake && meta.files['fake-optimizer']);
      assert.deepEqual(bytes(b.ganHead!), bytes(a.ganHead!));
      assert.deepEqual(bytes(b.fake), bytes(a.fake));
      const opt = (t: DmdTask) =>
        Object.entries(t.parts.find((p) => p.module === t.fake)!.optimizer.stateDict().tensors)
          .map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')])
          .sort();
      assert.deepEqual(opt(b), opt(a));
      assert.ok(
        opt(a).some(([k]) => k.includes('gan_head')),
        "the optimizer state names the head's parameters",
      );
      assert.equal(a.trainStep(), b.trainStep(), 'and the next step is the same');
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  test('a dmd2 stage with the GAN head resumes bit for bit (generator, fake score with its head, both optimizers, the data stream)', async () => {
    const dir = path.join(root, 'resume');
    await assertResumeBitExact(optionsOf(dir, { ganWeight: 3e-3 }), teacher, dir, { create: (s, run) => DmdTask.create(s, run), nets: (t) => [t.net, t.fake] });
    const file = (d: string, key: 'fake' | 'fake-optimizer') => fs.readFileSync(path.join(d, readCheckpointMeta(d).files[key]!.file)).toString('base64');
    for (const key of ['fake', 'fake-optimizer'] as const) assert.equal(file(path.join(dir, 'rb'), key), file(path.join(dir, 'ra'), key), key);
  });

  test('the options: dmd has no head, weights are >= 0 (the fake side > 0), the fake side needs the head on', () => {
    const base = { teacher, out: path.join(root, 'x') };
    assert.throws(() => resolveDistillOptions({ ...base, method: 'dmd', pairs: 'p', ganWeight: 0.1 }), /ganWeight: the GAN head is DMD2's .* dmd has none: expected 0, got 0\.1/);
    assert.throws(() => resolveDistillOptions({ ...base, method: 'dmd', pairs: 'p', ganDiscWeight: 0.1 }), /ganDiscWeight: .*dmd has none: expected null, got 0\.1/);
    assert.throws(() => resolveDistillOptions({ ...base, method: 'dmd2', ganWeight: -1 }), /ganWeight: expected a number >= 0 \(0: no GAN head\), got -1/);
    assert.throws(() => resolveDistillOptions({ ...base, method: 'dmd2', ganWeight: 1e-3, ganDiscWeight: -0.5 }), /ganDiscWeight: expected a number > 0 or null, got -0\.5/);
    assert.throws(() => resolveDistillOptions({ ...base, method: 'dmd2', ganDiscWeight: 0.1 }), /ganDiscWeight: .*only with ganWeight > 0: expected null, got 0\.1/);
    assert.equal(resolveDistillOptions({ ...base, method: 'dmd2' }).ganWeight, 0, 'off by default');
  });
});

describe('diffuse distill dmd2 --gan-weight', () => {
  test("runs; the progress line and diffuse info show every phase's loss by name; flags are checked", async () => {
    const out = path.join(root, 'cli');
    const r = await runQuick(
      root,
      'distill',
      'dmd2',
      '--teacher',
      teacher,
      '--out',
      out,
      '--gan-weight',
      '3e-3',
      '--fake-updates',
      '2',
      '--batch-size',
      '2',
      '--checkpoint-every',
      '0',
      '--threads',
      '1',
      '--dmd-steps',
      '2',
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /GAN loss of a head on the fake score's bottleneck/);
    assert.match(r.err, /generator=\S+ fake-score=\S+ lr=/);
    assert.doesNotMatch(r.err, / loss=/);
    const info = await runQuick(root, 'info', path.join(out, 'dmd2'));
    assert.equal(info.code, 0, info.err);
    assert.match(info.out, /\nloss +generator: first 100 steps [\d.]+, .*\(2 steps\)\n +fake score: first 100 steps [\d.]+, .*\(2 steps\)\n/);
    const json = JSON.parse((await runQuick(root, 'info', path.join(out, 'dmd2'), '--json')).out) as { state: { phaseLosses: Record<string, string>; phases: string[] } };
    assert.deepEqual(json.state.phaseLosses, { 'fake score': '<2 float32>' });
    assert.deepEqual(json.state.phases, ['generator', 'fake score']);
    const bad = async (args: string[], re: RegExp) => {
      const b = await runQuick(root, 'distill', ...args, '--teacher', teacher, '--out', path.join(root, 'bad'));
      assert.equal(b.code, 2, b.err);
      assert.match(b.err, re);
    };
    await bad(['dmd2', '--gan-weight', '-0.1'], /ganWeight: expected a number >= 0 \(0: no GAN head\), got -0\.1/);
    await bad(['dmd2', '--gan-disc-weight', '0.1'], /ganDiscWeight: .*only with ganWeight > 0/);
    await bad(['dmd2', '--gan-weight', '0.01', '--gan-disc-weight', '-1'], /ganDiscWeight: expected a number > 0 or null, got -1/);
    await bad(['progressive', '--gan-weight', '0.01'], /--gan-weight is for dmd2 \(not progressive\)/);
  });
});
