// The classifier generalized to color emoji (issue 13): the dataset sets channels, classes,
// image size and the space-to-depth stem; the Fashion-MNIST defaults are untouched; a tiny
// RGB 64 px run with flips lowers the loss and resumes bit for bit; the CLI checks --data
// and --image-size; and the SHIPPED emoji feature net (models/emoji-features) reaches its
// measured accuracy on the emoji test split (it fails, never skips, when the net is missing).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { arange, dispose, Generator, memory, setNumThreads, tidy } from '../src/engine';
import { Classifier } from '../src/models/classifier';
import { classifierDataConfig, ClassifierTrainer, evaluateClassifier, loadClassifier, loadClassifierData, readClassifierCheckpoint, resolveClassifierRunOptions } from '../src/training/classifier';
import { extractFeatures, loadFeatureNet } from '../src/eval/feature-net';
import { EMOJI_CATEGORIES } from '../src/data/emoji';
import { ImageDataset } from '../src/data/loader';
import { shippedDir } from '../src/util/shipped';
import { runQuick } from './cli-run';

setNumThreads(1);

const TINY = { width: 8, groups: 4, featureDim: 16 };

/** n RGB 64 x 64 uint8 images in 3 classes: class k has channel k brightened by 60 over a noisy gray. */
function colorImages(n: number, seed = 0): ImageDataset {
  return tidy(() => {
    const g = new Generator(seed);
    const labels = g.randint(0, 3, [n]); // [n]
    const boost = arange(3)
      .reshape([1, 3])
      .eq(labels.reshape([n, 1]))
      .float()
      .mul(60)
      .reshape([n, 3, 1, 1]); // [n, 3, 1, 1]: 60 on channel `label`
    const images = g.randn([n, 3, 64, 64]).mul(25).add(110).add(boost).clamp(0, 255).to({ dtype: 'uint8' });
    return { images, labels, classNames: ['red', 'green', 'blue'] };
  });
}

describe('the classifier on emoji', () => {
  test('the dataset sets channels, classes, image size and stem; Fashion-MNIST keeps the fmnist-cnn-v1 defaults', () => {
    assert.deepEqual(classifierDataConfig('emoji', 64), { inChannels: 3, numClasses: 9, imageSize: 64, stem: 4 });
    assert.deepEqual(classifierDataConfig('emoji:google', 32), { inChannels: 3, numClasses: 9, imageSize: 32, stem: 2 });
    assert.deepEqual(classifierDataConfig('fashion-mnist', 28), {});
    const fm = resolveClassifierRunOptions({});
    assert.deepEqual([fm.dataset, fm.imageSize, fm.flip, fm.config.stem, fm.config.inChannels], ['fashion-mnist', 28, false, 2, 1]);
    const em = resolveClassifierRunOptions({ dataset: 'emoji' });
    assert.deepEqual([em.imageSize, em.flip, em.config.numClasses], [64, true, 9]);
    assert.throws(() => resolveClassifierRunOptions({ dataset: 'emoji', imageSize: 48 }), /imageSize must be 16, 32 or 64 for emoji .*got 48/);
    assert.throws(() => resolveClassifierRunOptions({ dataset: 'fashion-mnist', imageSize: 64 }), /imageSize must be 28 for fashion-mnist, got 64/);
    assert.throws(() => resolveClassifierRunOptions({ dataset: 'mnist' as never }), /trainClassifier: dataset.*'fashion-mnist'.*got "mnist"/);
    assert.throws(() => new Classifier({ imageSize: 60, stem: 4 }), /imageSize must be a multiple of 2 stem = 8 .*got imageSize 60/);
    // The default net's parameter count is the shipped fmnist-cnn-v1's (189,418): the stem changed nothing there.
    const fmnist = new Classifier();
    assert.equal(fmnist.numParameters(), 189_418);
    fmnist.dispose();
  });

  test('stem 4 at 64 px: [B, 3, 64, 64] -> 16 x 16 maps -> 5 x 5 -> logits [B, 9], features [B, 128]', () => {
    const net = new Classifier(classifierDataConfig('emoji', 64), { generator: new Generator(0) });
    // conv 48->32, 32->64, 64->64 (+ GN), fc 64*5*5 -> 128, head 128 -> 9
    const expected = 48 * 32 * 9 + 32 + 64 + (32 * 64 * 9 + 64 + 128) + (64 * 64 * 9 + 64 + 128) + (64 * 25 * 128 + 128) + (128 * 9 + 9);
    assert.equal(net.numParameters(), expected);
    tidy(() => {
      const x = new Generator(1).randn([2, 3, 64, 64]);
      assert.deepEqual(net.forward(x).shape, [2, 9]);
      assert.deepEqual(net.features(x).shape, [2, 128]);
      assert.throws(() => net.forward(new Generator(1).randn([2, 1, 64, 64])), /x must have shape \[B, 3, H, W\], got \[2, 1, 64, 64\]/);
    });
    net.dispose();
  });

  test('a tiny RGB 64 px run with flips lowers the loss, learns, and resumes bit for bit', async () => {
    const data = colorImages(96);
    const held = colorImages(60, 1);
    const before = memory().tensors;
    const opts = { dataset: 'emoji' as const, steps: 24, batchSize: 16, lr: 3e-3, seed: 3, config: TINY, data, log: null };
    const full = ClassifierTrainer.create(opts);
    assert.equal(full.options.flip, true);
    const { losses } = full.runSync();
    const net = full.releaseNet();
    const head = losses.slice(0, 4).reduce((a, b) => a + b) / 4;
    const tail = losses.slice(-4).reduce((a, b) => a + b) / 4;
    assert.ok(head > 1.5, `first losses ${head} (ln 9 = 2.20 at the start)`);
    assert.ok(tail < 0.5 * head, `loss ${head.toFixed(3)} -> ${tail.toFixed(3)}`);
    const acc = evaluateClassifier(net, held);
    assert.ok(acc > 0.9, `held-out accuracy ${acc} (chance 1/3)`);

    // Stopped at step 10 with a checkpoint, then resumed: the same losses and weights, bit for bit.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cls-emoji-'));
    const first = ClassifierTrainer.create({ ...opts, out: dir, checkpointEvery: 0, onStep: (k) => k === 10 && first.requestStop() });
    assert.equal((await first.run()).status, 'interrupted');
    first.dispose();
    const meta = readClassifierCheckpoint(dir);
    assert.deepEqual([meta.options.dataset, meta.options.imageSize, meta.options.flip, meta.data.source], ['emoji', 64, true, 'custom']);
    const again = ClassifierTrainer.resume(dir, { data, log: null });
    const r = await again.run();
    assert.deepEqual(r.losses, losses);
    const resumed = again.releaseNet();
    const a = net.stateDict();
    const b = resumed.stateDict();
    for (const k of Object.keys(a))
      assert.equal(
        tidy(() => a[k].sub(b[k]).abs().max().item()),
        0,
        `parameter ${k} differs after resume`,
      );
    net.dispose();
    resumed.dispose();
    assert.equal(memory().tensors, before, 'training and resuming free everything');
    dispose([data.images, data.labels, held.images, held.labels]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('diffuse train-classifier: --data and --image-size are checked and named', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cls-emoji-cli-'));
    for (const [args, msg] of [
      [['--data', 'emoji', '--image-size', '48'], /--image-size 48: imageSize must be 16, 32 or 64 for emoji/],
      [['--data', 'mnist'], /--data: expected 'fashion-mnist' or 'emoji' or 'emoji:google' or 'emoji:twitter', got "mnist"/],
      [['--image-size', '32'], /--image-size 32: imageSize must be 28 for fashion-mnist/],
    ] as const) {
      const r = await runQuick(dir, 'train-classifier', ...args, '--out', path.join(dir, 'x'));
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.err}`);
      assert.match(r.err, msg);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('the shipped emoji feature net', () => {
  test('emoji-cnn-v1 loads and reaches its measured accuracy on the emoji test split (704 images, 64 px)', () => {
    const dir = shippedDir('emoji-features');
    assert.ok(fs.existsSync(path.join(dir, 'classifier.json')), `${dir}/classifier.json is missing: the emoji feature net is shipped with the repository`);
    assert.ok(fs.statSync(path.join(dir, 'weights.safetensors')).size < 3_000_000);
    const fnet = loadFeatureNet(dir, { expectName: 'emoji-cnn-v1' });
    assert.deepEqual(fnet.meta.classNames, [...EMOJI_CATEGORIES]);
    const test = loadClassifierData('emoji', 'test', 64);
    assert.equal(test.images.dim(0), 704);
    const acc = evaluateClassifier(fnet.net, test);
    // Measured when it was made (models/emoji-features/README.md); thread count and kernels may move a borderline image: allow 2 of 704.
    assert.ok(acc >= fnet.meta.testAccuracy - 3e-3, `accuracy ${acc}, recorded ${fnet.meta.testAccuracy}`);
    assert.ok(fnet.meta.testAccuracy >= MIN_ACCURACY, `recorded accuracy ${fnet.meta.testAccuracy}, expected >= ${MIN_ACCURACY}`);
    const f = extractFeatures(fnet, test.images.narrow(0, 0, 8));
    assert.deepEqual(f.shape, [8, 128]);
    dispose([f, test.images, test.labels]);
    fnet.net.dispose();
    const { net } = loadClassifier(dir);
    assert.equal(net.config.stem, 4);
    net.dispose();
  });
});

/** The shipped net's floor: under its measured test accuracy, 82.53% (models/emoji-features/README.md). */
const MIN_ACCURACY = 0.8;
