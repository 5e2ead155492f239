// The CNN classifier / feature net: its forward pass, log p(y | x, sigma) and the gradient
// in x against a PyTorch twin (scripts/fixtures/classifier.py); features are the
// penultimate layer; a 28 x 28 image and its padded 32 x 32 version agree exactly; a tiny
// training run lowers the loss without leaking tensors; save/load round-trips and catches
// corruption; extractFeatures is batched and flat in memory; an interrupted training run,
// resumed from its checkpoint, ends bit for bit where an uninterrupted one does (in the
// library, and through the CLI with a real Ctrl-C); and the SHIPPED nets reach their
// recorded accuracies on the Fashion-MNIST test split.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, F, fromBytes, Generator, grad, gradcheck, loadSafetensors, memory, noGrad, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { Classifier, classifierLogProb } from '../src/models/classifier';
import {
  CLASSIFIER_CHECKPOINT_FILE,
  classifierLoss,
  classifierSigmaSampler,
  ClassifierTrainer,
  evaluateClassifier,
  loadClassifier,
  readClassifierCheckpoint,
  saveClassifier,
  shippedClassifierDir,
  trainClassifier,
} from '../src/training/classifier';
import { extractFeatures, FEATURE_NET_NAME, featureNetDir, loadFeatureNet } from '../src/eval/feature-net';
import { loadFashionMNIST } from '../src/data/fashion-mnist';
import { main } from '../src/cli/main';
import { encodeFloats } from '../src/training/checkpoint';
import { runQuick } from './cli-run';

setNumThreads(1);

const TINY = { width: 8, groups: 4, featureDim: 16, embedDim: 8 };
const maxAbsDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());

/** A synthetic 4-class image set: class k is a grating at angle 45k degrees (random phase, noise); uint8 [n, 1, 28, 28]. */
function gratings(n: number, seed = 0): { images: Tensor; labels: Tensor; classNames: string[] } {
  const g = new Generator(seed);
  return tidy(() => {
    const labels = g.randint(0, 4, [n]);
    const lab = labels.data() as BigInt64Array;
    const u = g.rand([n * 785]).data() as Float32Array;
    const img = new Uint8Array(n * 784);
    for (let i = 0; i < n; i++) {
      const th = (Math.PI / 4) * Number(lab[i]);
      const phase = 2 * Math.PI * u[i * 785 + 784];
      for (let p = 0; p < 784; p++) {
        const [r, c] = [Math.floor(p / 28), p % 28];
        const v = 127 + 80 * Math.cos((2 * Math.PI * (c * Math.cos(th) + r * Math.sin(th))) / 6 + phase) + 40 * (u[i * 785 + p] - 0.5);
        img[i * 784 + p] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
    return { images: fromBytes(img, 'uint8', [n, 1, 28, 28]), labels, classNames: ['0', '45', '90', '135'] };
  });
}

describe('Classifier network', () => {
  test('shapes: logits [B, 10], features [B, 128]; noise-conditional nets need sigma ([B] or 0-d)', () => {
    const net = new Classifier({}, { generator: new Generator(0) });
    const noisy = new Classifier({ ...TINY, noiseConditional: true }, { generator: new Generator(1) });
    tidy(() => {
      const x = new Generator(2).randn([3, 1, 28, 28]);
      assert.deepEqual(net.forward(x).shape, [3, 10]);
      assert.deepEqual(net.features(x).shape, [3, 128]);
      assert.deepEqual(noisy.forward(x, tensor([0.1, 1, 10])).shape, [3, 10]);
      assert.deepEqual(noisy.features(x, tensor(2)).shape, [3, 16]);
      assert.throws(() => noisy.forward(x), /noise-conditional: pass sigma/);
      assert.throws(() => net.forward(x, tensor([1, 1, 1])), /not noise-conditional/);
      assert.throws(() => net.forward(x.narrow(2, 0, 27)), /27x28 cannot be center-cropped to 28x28/);
      assert.throws(() => new Classifier({ width: 10, groups: 4 }), /groups \(4\) must divide width, got width 10/);
      assert.throws(() => new Classifier({ widht: 3 } as never), /unknown config field\(s\) widht/);
    });
    net.dispose();
    noisy.dispose();
  });

  test('matches the PyTorch twin: features, logits, log p(y | x, sigma) and its gradient in x (float64)', () => {
    const file = path.join(__dirname, '..', '..', 'test', 'fixtures', 'classifier.safetensors');
    const { tensors } = loadSafetensors(file);
    const net = new Classifier({ ...TINY, noiseConditional: true }).to({ dtype: 'float64' });
    net.loadStateDict(Object.fromEntries(Object.entries(tensors).filter(([k]) => !k.startsWith('in.') && !k.startsWith('out.'))));
    const { 'in.x': x0, 'in.sigma': sigma, 'in.labels': labels } = tensors;
    // 1e-7, not 1e-12: the sinusoidal embedding of c_noise is computed in float32 (as the U-Net's).
    tidy(() => {
      const x = x0.clone().requiresGrad_();
      assert.ok(maxAbsDiff(net.features(x, sigma), tensors['out.features']) < 1e-7);
      assert.ok(maxAbsDiff(net.forward(x, sigma), tensors['out.logits']) < 1e-7);
      const logp = classifierLogProb(net)(x, sigma, labels);
      assert.deepEqual(logp.shape, [3]);
      assert.ok(maxAbsDiff(logp, tensors['out.logp']) < 1e-7);
      const [gx] = grad(logp.sum(), x);
      assert.ok(maxAbsDiff(gx!, tensors['out.grad_x']) < 1e-7, 'grad_x log p matches torch.autograd.grad');
    });
    dispose(tensors);
    net.dispose();
  });

  test('log p(y | x, sigma) is differentiable in x: gradcheck against finite differences on a tiny float64 net', () => {
    const net = new Classifier({ ...TINY, imageSize: 8, noiseConditional: true }, { generator: new Generator(3) }).to({ dtype: 'float64' });
    const logp = classifierLogProb(net);
    tidy(() => {
      const g = new Generator(4);
      const x = g.randn([2, 1, 8, 8], { dtype: 'float64' });
      const sigma = tensor([0.3, 2], { dtype: 'float64' });
      const labels = tensor([1, 7], { dtype: 'int64' });
      const r = gradcheck((xx) => logp(xx, sigma, labels), [x]);
      assert.ok(r.ok, `max error ${r.maxError}`);
      assert.throws(() => logp(x, sigma, tensor([1, 10], { dtype: 'int64' })), /labels must be in \[0, 9\], got values in \[1, 10\]/);
    });
    const clean = new Classifier(TINY);
    assert.throws(() => classifierLogProb(clean), /must be noise-conditional/);
    clean.dispose(); // (left to the garbage collector, its 16 tensors made a later test's leak count flaky)
    net.dispose();
  });

  test('features are the penultimate layer: logits = head(features)', () => {
    const net = new Classifier({ ...TINY, noiseConditional: true }, { generator: new Generator(5) });
    tidy(() => {
      const x = new Generator(6).randn([4, 1, 28, 28]);
      const s = tensor([0.1, 0.5, 3, 40]);
      const f = net.features(x, s);
      assert.equal(maxAbsDiff(net.forward(x, s), F.linear(f, net.head.weight, net.head.bias)), 0);
    });
    net.dispose();
  });

  test('a 28 x 28 image and its 32 x 32 version padded with -1 give identical features and logits', () => {
    const net = new Classifier({}, { generator: new Generator(7) });
    tidy(() => {
      const x28 = new Generator(8).rand([5, 1, 28, 28]).mul(2).sub(1);
      const x32 = x28.pad([2, 2, 2, 2], 'constant', -1);
      assert.equal(maxAbsDiff(net.features(x28), net.features(x32)), 0);
      assert.equal(maxAbsDiff(net.forward(x28), net.forward(x32)), 0);
      // Convolution kernels may differ by batch size in the last bits.
      assert.ok(maxAbsDiff(extractFeatures(net, x28, { batchSize: 2 }), net.features(x28)) < 1e-5, 'extractFeatures in batches = one pass');
    });
    net.dispose();
  });
});

describe('training and the saved format', () => {
  test('a tiny training run lowers the loss, learns the task, and leaks no tensors', () => {
    const data = gratings(320);
    const test = gratings(200, 1);
    const before = memory().tensors;
    for (const noise of ['none', 'ddpm'] as const) {
      const { net, losses } = trainClassifier({ noise, steps: noise === 'none' ? 40 : 80, batchSize: 32, lr: 3e-3, seed: 1, config: { ...TINY, numClasses: 4 }, data, log: null });
      const head = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
      const tail = losses.slice(-5).reduce((a, b) => a + b) / 5;
      const acc = evaluateClassifier(net, test, noise === 'none' ? {} : { sigma: 0.1 });
      // Most DDPM sigmas (t uniform) drown the gratings: the noisy loss cannot halve.
      assert.ok(tail < (noise === 'none' ? 0.5 : 0.95) * head, `${noise}: loss ${head.toFixed(3)} -> ${tail.toFixed(3)}`);
      assert.ok(acc > (noise === 'none' ? 0.9 : 0.5), `${noise}: held-out accuracy ${acc} (chance 0.25)`);
      net.dispose();
    }
    assert.equal(memory().tensors, before, 'training frees everything but the returned net');
    dispose([data.images, data.labels, test.images, test.labels]);
  });

  test('the noisy loss sees x0 + sigma n with DDPM sigmas in [0.01, 157]', () => {
    const s = classifierSigmaSampler('ddpm')!;
    tidy(() => {
      const sig = s(4000, new Generator(0));
      assert.ok(Math.abs(sig.min().item() - 0.01) < 1e-3 && sig.max().item() > 150 && sig.max().item() < 158);
    });
    assert.equal(classifierSigmaSampler('none'), null);
    const net = new Classifier({ ...TINY, noiseConditional: true }, { generator: new Generator(9) });
    tidy(() => {
      const x0 = new Generator(10).randn([6, 1, 28, 28]);
      const labels = tensor([0, 1, 2, 3, 4, 5], { dtype: 'int64' });
      // The same generator state draws the same sigmas and noise: the loss is reproducible.
      const a = classifierLoss(net, x0, labels, s, new Generator(11)).item();
      const b = classifierLoss(net, x0, labels, s, new Generator(11)).item();
      assert.equal(a, b);
      assert.ok(Number.isFinite(a) && a > 0);
    });
    net.dispose();
  });

  test('saveClassifier / loadClassifier round-trip; a corrupt weights file is named', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-cls-'));
    const net = new Classifier({ ...TINY, noiseConditional: true }, { generator: new Generator(12) });
    const meta = saveClassifier(dir, net, {
      name: 'test-net',
      classNames: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'],
      testAccuracy: 0.5,
      accuracyBySigma: { '1': 0.4 },
      training: { noise: 'ddpm', steps: 1, batchSize: 1, lr: 1e-3, seed: 0, seconds: 0, finalLoss: 2.3, command: 'test' },
    });
    assert.equal(meta.numParameters, net.numParameters());
    const { meta: m2, net: back } = loadClassifier(dir);
    assert.equal(m2.name, 'test-net');
    assert.equal(back.training, false, 'loaded in eval mode');
    tidy(() => {
      const x = new Generator(13).randn([2, 1, 32, 32]);
      const s = tensor([0.5, 5]);
      assert.equal(maxAbsDiff(net.forward(x, s), back.forward(x, s)), 0);
    });
    back.dispose();
    net.dispose();
    const wfile = path.join(dir, 'weights.safetensors');
    const bytes = fs.readFileSync(wfile);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(wfile, bytes);
    assert.throws(() => loadClassifier(dir), /weights\.safetensors does not match the size\/SHA-256/);
    assert.throws(() => loadFeatureNet(dir), /does not match/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('extractFeatures: uint8 or float input, batched, memory flat across calls', () => {
    const net = new Classifier(TINY, { generator: new Generator(14) });
    const { images, labels } = gratings(50, 2);
    const f = extractFeatures(net, images, { batchSize: 16 });
    assert.deepEqual(f.shape, [50, 16]);
    tidy(() => {
      const ref = noGrad(() => net.features(images.float().div(127.5).sub(1)));
      assert.ok(maxAbsDiff(f, ref) < 1e-6);
    });
    const before = memory();
    for (let i = 0; i < 5; i++) extractFeatures(net, images, { batchSize: 7 }).dispose();
    assert.equal(memory().tensors, before.tensors);
    assert.equal(memory().bytes, before.bytes);
    assert.throws(() => extractFeatures(net, images, { batchSize: 0 }), /batchSize must be a positive integer, got 0/);
    dispose([f, images, labels]);
    net.dispose();
  });

  test('diffuse train-classifier: usage errors name the flag and the value (exit 2)', async () => {
    const err: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = (s: string) => (err.push(String(s)), true);
    try {
      assert.equal(await main(['train-classifier', '--noise', 'gaussian']), 2);
      assert.equal(await main(['train-classifier', '--steps', '-3']), 2);
      assert.equal(await main(['train-classifier', '--lr', 'fast']), 2);
      assert.equal(await main(['train-classifier', '--lr', '0']), 2);
    } finally {
      process.stderr.write = write;
    }
    const text = err.join('');
    assert.match(text, /--noise: expected 'none' or 'ddpm', got "gaussian"/);
    assert.match(text, /--steps: expected an integer in \[1, 10000000\], got -3/);
    assert.match(text, /--lr: expected a number > 0, got "fast"/);
    assert.match(text, /--lr: expected a number > 0, got 0/);
  });
});

describe('checkpoints, Ctrl-C and --resume', () => {
  let root: string;
  before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-cls-resume-'))));
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  /** name -> base64 of the bytes, for bit-for-bit comparisons. */
  const bytesOf = (tensors: Record<string, Tensor>) => Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')]));
  const adamBytes = (t: ClassifierTrainer) => {
    const s = t.optimizer.stateDict();
    const b = bytesOf(s.tensors);
    dispose(s.tensors);
    return b;
  };

  test('stopped at step 5 (checkpoints every 3), resumed from step 5 or from the step-3 checkpoint: the losses, weights and Adam state of an uninterrupted run, bit for bit', async () => {
    const data = gratings(64, 3); // 4 batches of 16 per epoch: 9 steps cross two epoch boundaries
    const opts = { noise: 'ddpm' as const, steps: 9, batchSize: 16, lr: 3e-3, seed: 2, config: { ...TINY, numClasses: 4 }, data, log: null };
    const live = memory().tensors;
    const a = ClassifierTrainer.create(opts);
    const ra = a.runSync();
    assert.equal(ra.status, 'done');
    assert.ok(ra.losses.length === 9 && ra.losses.every(Number.isFinite));

    const dir = path.join(root, 'stopped');
    const crash = path.join(root, 'crashed');
    const b: ClassifierTrainer = ClassifierTrainer.create({
      ...opts,
      out: dir,
      checkpointEvery: 3,
      onStep: (step) => {
        if (step === 4) fs.cpSync(dir, crash, { recursive: true }); // the folder as a crash during step 5 would leave it
        if (step === 5) b.requestStop();
      },
    });
    const rb = await b.run();
    b.dispose();
    assert.deepEqual([rb.status, rb.step], ['interrupted', 5]);
    assert.equal(readClassifierCheckpoint(crash).step, 3);
    assert.equal(readClassifierCheckpoint(dir).step, 5);
    assert.deepEqual(fs.readdirSync(dir).sort(), [CLASSIFIER_CHECKPOINT_FILE, 'classifier-model-00000005.safetensors', 'classifier-optimizer-00000005.safetensors'], 'the step-3 files are gone');

    for (const [from, step] of [
      [dir, 5],
      [crash, 3],
    ] as const) {
      const c = ClassifierTrainer.resume(from, { data, log: null });
      assert.equal(c.step, step);
      const rc = await c.run();
      assert.equal(rc.status, 'done');
      assert.deepEqual(rc.losses, ra.losses, `from step ${step}: the same loss at every step`);
      assert.deepEqual(bytesOf(c.net.stateDict()), bytesOf(a.net.stateDict()), `from step ${step}: the same weights`);
      assert.deepEqual(adamBytes(c), adamBytes(a), `from step ${step}: the same Adam state`);
      assert.equal(readClassifierCheckpoint(from).step, 9, 'the end is checkpointed too');
      c.dispose();
    }
    a.dispose();
    assert.equal(memory().tensors, live, 'trainers free everything');
    dispose([data.images, data.labels]);
  });

  test('resume refuses what would not continue the same run, naming it', () => {
    const data = gratings(32, 4);
    const dir = path.join(root, 'refuse');
    const t = ClassifierTrainer.create({ steps: 4, batchSize: 8, config: { ...TINY, numClasses: 4 }, data, log: null, out: dir });
    t.trainStep();
    t.trainStep();
    t.checkpoint();
    t.dispose();
    const other = gratings(16, 5);
    const live = memory().tensors;
    assert.throws(() => ClassifierTrainer.resume(dir, { log: null }), /was trained on data passed in \(32 images\); pass the same data again/);
    assert.throws(() => ClassifierTrainer.resume(dir, { data: other, log: null }), /the data has 16 images, the checkpoint in .* was trained on 32/);
    assert.throws(() => ClassifierTrainer.resume(dir, { data, steps: 1, log: null }), /steps \(1\) is below the checkpoint's step \(2\)/);
    const json = path.join(dir, CLASSIFIER_CHECKPOINT_FILE);
    const meta = JSON.parse(fs.readFileSync(json, 'utf8'));
    fs.writeFileSync(json, JSON.stringify({ ...meta, state: { ...meta.state, losses: encodeFloats([2.3]) } }));
    assert.throws(() => ClassifierTrainer.resume(dir, { data, log: null }), /classifier-checkpoint.json: has 1 losses for 2 steps/);
    fs.writeFileSync(json, JSON.stringify(meta));
    const model = path.join(dir, meta.files.model.file);
    fs.truncateSync(model, 100);
    assert.throws(() => ClassifierTrainer.resume(dir, { data, log: null }), /classifier-model-00000002.safetensors: has 100 bytes but classifier-checkpoint.json records/);
    assert.equal(memory().tensors, live, 'a refused resume frees what it built');
    dispose([data.images, data.labels, other.images, other.labels]);
  });

  test('diffuse train-classifier --resume and --checkpoint-every: usage errors name the flag and the value (exit 2)', async () => {
    const data = gratings(32, 6);
    const dir = path.join(root, 'cli-run');
    const t = ClassifierTrainer.create({ steps: 10, batchSize: 8, config: { ...TINY, numClasses: 4 }, data, log: null, out: dir });
    t.trainStep();
    t.checkpoint();
    t.dispose();
    dispose([data.images, data.labels]);
    fs.writeFileSync(path.join(root, 'typo.json'), JSON.stringify({ stepz: 3 }));
    fs.writeFileSync(path.join(root, 'zero-lr.json'), JSON.stringify({ steps: 3, lr: 0 }));
    for (const [args, re] of [
      [['--resume', dir, '--lr', '0.1'], /--lr: "0.1" cannot change when resuming the run in .*cli-run: its lr is 0.002 \(only --steps, --checkpoint-every, --out, --name, --threads can change\)/],
      [['--resume', dir, '--noise', 'ddpm'], /--noise: "ddpm" cannot change when resuming the run in .*cli-run: its noise is "none"/],
      [['--resume', dir, '--batch-size', '9'], /--batch-size: "9" cannot change when resuming the run in .*cli-run: its batchSize is 8/],
      [['--resume', dir, '--steps', '0'], /--steps: expected an integer in \[1, 10000000\], got 0/],
      [['--out', dir], /--out .*cli-run: already holds an unfinished run \(classifier-checkpoint.json\); continue it with --resume .*cli-run, or choose another --out/],
      [['--checkpoint-every', '-1'], /--checkpoint-every: expected an integer in \[0, 10000000\], got -1/],
      [['--resume'], /--resume needs a value/],
      [['--config', 'typo.json'], /typo.json: stepz: unknown option \(did you mean steps\?\)/],
      [['--config', 'zero-lr.json'], /zero-lr.json: lr: expected a number > 0, got 0/],
      [['--config', 'zero-lr.json', '--resume', dir], /--config and --resume do not go together/],
      [['--config', 'missing.json'], /missing.json: file not found/],
    ] as [string[], RegExp][]) {
      const r = await runQuick(root, 'train-classifier', ...args, '--threads', '1');
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.err}`);
      assert.match(r.err, re);
    }
    const r = await runQuick(root, 'train-classifier', '--resume', 'nowhere', '--threads', '1');
    assert.equal(r.code, 1);
    assert.match(r.err, /nowhere\/classifier-checkpoint.json: not found: no such checkpoint folder/);
    const help = await runQuick(root, 'train-classifier', '--help');
    assert.equal(help.code, 0);
    assert.match(
      help.out,
      /Ctrl-C finishes the step, writes the checkpoint and exits\n\(130\)[\s\S]*--checkpoint-every N +steps between checkpoints \(default 200[\s\S]*--resume DIR +continue the run/,
    );
  });

  test('Ctrl-C writes a checkpoint and exits 130; --resume ends with the classifier an uninterrupted run writes (same weights)', async () => {
    const common = ['--steps', '200', '--batch-size', '2', '--checkpoint-every', '0', '--threads', '1'];
    const out = path.join(root, 'sigint');
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'src', 'cli', 'main.js'), 'train-classifier', ...common, '--out', out], {
      env: { ...process.env, DIFFUSE_NUM_THREADS: '1' },
      cwd: root,
    });
    let err = '';
    let sent = false;
    child.stderr.on('data', (d) => {
      err += d;
      if (!sent && / 20\/200 /.test(err)) {
        // the progress line of step 20 (printed every 10%): Ctrl-C mid-run
        sent = true;
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 130, `exit ${code} (did it finish before the Ctrl-C?): ${err}`);
    const step = readClassifierCheckpoint(out).step;
    assert.ok(step >= 20 && step < 200, `stopped at step ${step}`);
    assert.match(err, new RegExp(`Ctrl-C: stopping after step \\d+, writing a checkpoint[\\s\\S]*interrupted at step ${step} of 200[\\s\\S]*resume with: diffuse train-classifier --resume ${out}`));
    assert.ok(!fs.existsSync(path.join(out, 'classifier.json')), 'no classifier before training completes');

    const resumed = await runQuick(root, 'train-classifier', '--resume', out, '--threads', '1');
    assert.equal(resumed.code, 0, resumed.err);
    assert.deepEqual(fs.readdirSync(out).sort(), ['classifier.json', 'weights.safetensors'], 'the checkpoint is gone once the classifier is written');
    const straight = await runQuick(root, 'train-classifier', ...common, '--out', 'straight');
    assert.equal(straight.code, 0, straight.err);
    const [m1, m2] = [out, path.join(root, 'straight')].map((d) => JSON.parse(fs.readFileSync(path.join(d, 'classifier.json'), 'utf8')));
    assert.equal(m1.weights.sha256, m2.weights.sha256, 'the same weights, bit for bit');
    assert.equal(m1.training.finalLoss, m2.training.finalLoss);
    assert.equal(m1.testAccuracy, m2.testAccuracy);
    assert.match(m1.training.command, new RegExp(`--out ${out}; resumed at step ${step}: diffuse train-classifier --resume ${out}`));
    const again = await runQuick(root, 'train-classifier', '--resume', out, '--threads', '1');
    assert.equal(again.code, 1);
    assert.match(again.err, /holds no train-classifier checkpoint .*a finished run keeps none, only classifier.json/);
  });
});

describe('the shipped nets', () => {
  const featDir = featureNetDir();
  const clsDir = shippedClassifierDir();

  test(`the feature net (${FEATURE_NET_NAME}) reaches its recorded test accuracy on all 10,000 test images`, () => {
    const fnet = loadFeatureNet();
    assert.equal(fnet.name, FEATURE_NET_NAME);
    assert.equal(fnet.dim, 128);
    assert.ok(fs.statSync(path.join(featDir, 'weights.safetensors')).size < 1_000_000);
    const test = loadFashionMNIST({ split: 'test', pad32: true }); // the padded format: the crop is exercised too
    const acc = evaluateClassifier(fnet.net, test);
    // Thread count and kernels may move a borderline image: allow 5 of 10,000.
    assert.ok(acc >= fnet.meta.testAccuracy - 5e-4, `accuracy ${acc}, recorded ${fnet.meta.testAccuracy}`);
    assert.ok(fnet.meta.testAccuracy >= 0.88, `recorded accuracy ${fnet.meta.testAccuracy}`);
    dispose([test.images, test.labels]);
    fnet.net.dispose();
  });

  test('the noise-conditional classifier loads and beats chance at sigma = 1 (1,000 test images)', () => {
    const { meta, net } = loadClassifier(clsDir);
    assert.equal(net.config.noiseConditional, true);
    const full = loadFashionMNIST({ split: 'test', pad32: true });
    const sub = tidy(() => ({ images: full.images.narrow(0, 0, 1000).clone(), labels: full.labels.narrow(0, 0, 1000).clone(), classNames: full.classNames }));
    dispose([full.images, full.labels]);
    const acc = evaluateClassifier(net, sub, { sigma: 1 });
    assert.ok(acc > 0.5, `accuracy at sigma 1: ${acc} (chance 0.1)`);
    assert.ok(Math.abs(acc - meta.accuracyBySigma!['1']) < 0.05, `accuracy ${acc} on 1,000 images vs ${meta.accuracyBySigma!['1']} recorded on 10,000`);
    dispose([sub.images, sub.labels]);
    net.dispose();
  });
});
