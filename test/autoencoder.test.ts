// The KL autoencoder of latent diffusion (issue 15): encode/decode shapes at f = 4 and 8, the KL
// term against its closed form, PSNR/SSIM against hand values, the adaptive GAN weight against
// its formula, a tiny overfit that lowers the loss, the discriminator's delayed start, checkpoint
// round trips and bit-exact resume, the CLI end to end, and that no training loss can reach the
// frozen evaluator network.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, Generator, memory, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { Autoencoder, klDivergence, resolveAutoencoderConfig, sampleLatent } from '../src/models/autoencoder';
import { msSSIM, psnr, ssim } from '../src/eval/ssim';
import { evaluateAutoencoder } from '../src/eval/autoencoder';
import { ImageDataset } from '../src/data/loader';
import {
  adaptiveWeight,
  AUTOENCODER_CHECKPOINT_FILE,
  AutoencoderTrainer,
  hingeDiscriminatorLoss,
  loadAutoencoder,
  PatchDiscriminator,
  readAutoencoderCheckpoint,
  saveAutoencoder,
} from '../src/training/autoencoder';
import { runQuick } from './cli-run';

setNumThreads(1);

/** A tiny autoencoder for the training tests (8 base channels, GroupNorm of 4 groups). */
const TINY = { channels: 8, groups: 4 };

/** n RGB uint8 images of side s: smooth color blobs on white, a few distinct kinds (easy to overfit). */
function blobs(n: number, s = 16, seed = 0): ImageDataset {
  return tidy(() => {
    const g = new Generator(seed);
    const yy = tensor(Array.from({ length: s }, (_, i) => i)).reshape([1, 1, s, 1]);
    const xx = tensor(Array.from({ length: s }, (_, i) => i)).reshape([1, 1, 1, s]);
    const cy = g
      .rand([n, 1, 1, 1])
      .mul(s / 2)
      .add(s / 4);
    const cx = g
      .rand([n, 1, 1, 1])
      .mul(s / 2)
      .add(s / 4);
    const r2 = yy.sub(cy).square().add(xx.sub(cx).square()); // [n, 1, s, s]
    const mask = r2.div(-(s * s) / 16).exp(); // a Gaussian blob
    const color = g.rand([n, 3, 1, 1]).mul(255);
    const images = mask.mul(color).add(mask.rsub(1).mul(255)).round().clamp(0, 255).to({ dtype: 'uint8' });
    return { images, labels: g.randint(0, 2, [n]), classNames: ['a', 'b'] };
  });
}

const bytesOf = (tensors: Record<string, Tensor>) => Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')]));
const optBytes = (t: AutoencoderTrainer) =>
  t.parts.map((p) => {
    const s = p.optimizer.stateDict();
    const b = bytesOf(s.tensors);
    dispose(s.tensors);
    return b;
  });

describe('the autoencoder network', () => {
  test('encode/decode shapes at f = 4 and f = 8, sizes within the CPU budget, input checks', () => {
    for (const [factor, side, lat] of [
      [4, 64, 16],
      [8, 64, 8],
      [4, 32, 8],
      [8, 32, 4],
    ] as const) {
      const ae = new Autoencoder({ factor });
      tidy(() => {
        const x = new Generator(1).randn([2, 3, side, side]);
        const { mean, logvar } = ae.encode(x);
        assert.deepEqual(mean.shape, [2, 4, lat, lat], `f${factor} at ${side} px`);
        assert.deepEqual(logvar.shape, [2, 4, lat, lat]);
        assert.deepEqual(ae.decode(mean).shape, [2, 3, side, side]);
        const r = ae.forward(x, new Generator(2));
        assert.deepEqual(r.reconstruction.shape, [2, 3, side, side]);
      });
      const n = ae.numParameters();
      assert.ok(n > 300_000 && n < 1_100_000, `f${factor}: ${n} parameters`);
      ae.dispose();
    }
    assert.deepEqual(resolveAutoencoderConfig({ factor: 8 }).channelMult, [1, 2, 4, 4]);
    assert.throws(() => new Autoencoder({ factor: 2 as 4 }), /factor must be 4 or 8, got 2/);
    assert.throws(() => new Autoencoder({ factor: 4, channelMult: [1, 2] }), /channelMult must list 3 multipliers for factor 4/);
    assert.throws(() => new Autoencoder({ chanels: 8 } as never), /unknown config field\(s\) chanels/);
    const ae = new Autoencoder({ ...TINY });
    tidy(() => {
      assert.throws(() => ae.encode(new Generator(0).randn([1, 1, 16, 16])), /x must have shape \[B, 3, H, W\], got \[1, 1, 16, 16\]/);
      assert.throws(() => ae.encode(new Generator(0).randn([1, 3, 18, 18])), /multiples of the factor 4, got \[1, 3, 18, 18\]/);
      assert.throws(() => ae.decode(new Generator(0).randn([1, 3, 4, 4])), /z must have shape \[B, 4, h, w\]/);
    });
    ae.dispose();
  });

  test('KL(N(mean, exp(logvar)) || N(0, I)) is the closed form 1/2 sum(mean^2 + var - 1 - logvar), per sample', () => {
    tidy(() => {
      const m = [0.5, -1, 0, 2];
      const lv = [0, Math.log(2), -1, 0.3];
      const mean = tensor([m, [0, 0, 0, 0]]).reshape([2, 1, 2, 2]);
      const logvar = tensor([lv, [0, 0, 0, 0]]).reshape([2, 1, 2, 2]);
      const hand = 0.5 * m.reduce((s, mi, i) => s + mi * mi + Math.exp(lv[i]) - 1 - lv[i], 0);
      const kl = klDivergence(mean, logvar).toArray() as number[];
      assert.ok(Math.abs(kl[0] - hand) < 1e-5, `${kl[0]} vs ${hand}`);
      assert.equal(kl[1], 0, 'the prior itself: KL 0');
      // The reparameterized sample has the posterior's moments.
      const big = sampleLatent(tensor(1.5).expand([1, 1, 200, 200]), tensor(Math.log(0.25)).expand([1, 1, 200, 200]), new Generator(3));
      assert.ok(Math.abs(big.mean().item() - 1.5) < 0.01 && Math.abs(big.std().item() - 0.5) < 0.01);
    });
  });
});

describe('PSNR and SSIM', () => {
  test('identical images: PSNR Infinity, SSIM 1; a constant shift: the hand values', () => {
    tidy(() => {
      const x = new Generator(0).rand([2, 3, 16, 16]).mul(2).sub(1);
      assert.deepEqual(psnr(x, x).toArray(), [Infinity, Infinity]);
      for (const v of ssim(x, x).toArray() as number[]) assert.ok(Math.abs(v - 1) < 1e-6);
      // Constant images a and a + c in [-1, 1] (L = 2): MSE = c^2; SSIM = (2 a (a + c) + C1) / (a^2 + (a + c)^2 + C1), the contrast term is 1.
      const [a, c] = [0.2, 0.3];
      const A = tensor(a).expand([1, 3, 16, 16]).contiguous();
      const B = A.add(c);
      const C1 = (0.01 * 2) ** 2;
      assert.ok(Math.abs(psnr(A, B, { dataRange: 2 }).item() - 10 * Math.log10(4 / (c * c))) < 1e-4);
      const hand = (2 * a * (a + c) + C1) / (a * a + (a + c) ** 2 + C1);
      assert.ok(Math.abs(ssim(A, B).item() - hand) < 1e-5, `${ssim(A, B).item()} vs ${hand}`);
      // Scale invariance of the definition: the images times 127.5 with L = 255 (a shift would change the luminance term).
      assert.ok(Math.abs(ssim(A.mul(127.5), B.mul(127.5), { dataRange: 255 }).item() - hand) < 1e-5);
      // Multi-scale: every scale of a constant image gives the same value, so the mean is it too.
      const A64 = tensor(a).expand([1, 3, 64, 64]).contiguous();
      assert.ok(Math.abs(msSSIM(A64, A64.add(c)).item() - hand) < 1e-5);
      // A shift of a textured image in [0, 1] by 0.5: the contrast-structure term stays 1, each window's
      // luminance term (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1) with mu near 0.5 is near 0.8.
      const t = new Generator(1).rand([2, 3, 32, 32]);
      const s = ssim(t, t.add(0.5)).toArray() as number[];
      const mid = (2 * 0.5 * 1 + C1) / (0.25 + 1 + C1);
      assert.ok(
        s.every((v) => Math.abs(v - mid) < 0.02),
        `${s} vs ${mid}`,
      );
      assert.throws(() => ssim(x, x.narrow(0, 0, 1)), /same shape/);
      assert.throws(() => ssim(x.narrow(2, 0, 8).narrow(3, 0, 8), x.narrow(2, 0, 8).narrow(3, 0, 8)), /8 x 8 are smaller than the 11 x 11 window/);
    });
  });

  test('evaluateAutoencoder: PSNR and SSIM of its reconstructions as ssim.ts computes them, latent statistics of the posterior samples', () => {
    const data = blobs(12);
    const ae = new Autoencoder(TINY, { generator: new Generator(5) }).eval();
    const r = evaluateAutoencoder(ae, data.images, { batchSize: 5 });
    tidy(() => {
      const [a, b] = [data.images.float(), r.reconstructions.float()];
      assert.ok(Math.abs(r.psnr - psnr(a, b, { dataRange: 255 }).mean().item()) < 1e-4);
      assert.ok(Math.abs(r.ssim - ssim(a, b, { dataRange: 255 }).mean().item()) < 1e-5);
      assert.equal(r.n, 12);
      assert.deepEqual(r.reconstructions.shape, [12, 3, 16, 16]);
      assert.equal(r.latent.mean.length, 4);
      assert.ok(Math.abs(r.latent.scaleFactor * r.latent.globalStd - 1) < 1e-12);
    });
    r.reconstructions.dispose();
    ae.dispose();
    dispose([data.images, data.labels]);
  });
});

describe('the latent scale factor (latent diffusion, part 2)', () => {
  test('measured over the training data: 1 / std of posterior samples, as a direct computation gives it; per-channel mean and std; stored in autoencoder.json', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-ae-scale-'));
    const data = blobs(20);
    const t = AutoencoderTrainer.create({ steps: 2, batchSize: 4, imageSize: 16, config: TINY, seed: 3 }, { data, log: null });
    try {
      t.runSync();
      const stats = t.measureLatents({ seed: 7 });
      assert.equal(t.net.training, true, 'the net goes back to training mode');
      // The reference's way, written out: posterior samples of every training image, their std over every element.
      tidy(() => {
        t.net.eval();
        const x = data.images.float().div(127.5).sub(1);
        const { mean, logvar } = t.net.encode(x);
        const z = mean.add(logvar.mul(0.5).exp().mul(new Generator(7).randnLike(mean))); // [20, 4, 4, 4]
        const n = z.size;
        const mu = z.sum().item() / n;
        const std = Math.sqrt(z.sub(mu).square().sum().item() / (n - 1));
        assert.ok(Math.abs(stats.globalStd - std) < 1e-5, `${stats.globalStd} vs ${std}`);
        assert.ok(Math.abs(stats.scaleFactor - 1 / std) < 1e-4);
        const c1 = z.select(1, 1);
        assert.ok(Math.abs(stats.mean[1] - c1.mean().item()) < 1e-5);
        assert.ok(Math.abs(stats.std[1] - c1.std().item()) < 1e-5);
        t.net.train();
      });
      assert.equal(stats.n, 20);
      assert.equal(stats.seed, 7);
      assert.equal(stats.data, 'the training data passed in');
      const meta = saveAutoencoder(root, t.net, { imageSize: 16, training: {}, latentStats: stats });
      const stored = JSON.parse(fs.readFileSync(path.join(root, 'autoencoder.json'), 'utf8'));
      assert.equal(stored.scaleFactor, stats.scaleFactor);
      assert.deepEqual(stored.latentStats, JSON.parse(JSON.stringify(stats)));
      assert.equal(meta.scaleFactor, stats.scaleFactor);
    } finally {
      t.dispose();
      dispose([data.images, data.labels]);
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the loss and the discriminator', () => {
  test('the adaptive weight is ||grad_L rec|| / (||grad_L g|| + 1e-4): the hand value for linear losses', () => {
    tidy(() => {
      const w = tensor([1, 2, 3]).requiresGrad_();
      const rec = w.mul(tensor([3, 0, 4])).sum(); // gradient (3, 0, 4): norm 5
      const g = w.mul(tensor([0, 1, 0])).sum(); // gradient (0, 1, 0): norm 1
      assert.ok(Math.abs(adaptiveWeight(rec, g, w) - 5 / (1 + 1e-4)) < 1e-6);
      assert.equal(hingeDiscriminatorLoss(tensor([2, 0.5]), tensor([-2, 0])).item(), 0.5 * (0.25 + 0.5)); // real: relu(1 - D) = (0, 0.5), fake: relu(1 + D) = (0, 1)
    });
    const d = new PatchDiscriminator(3, { width: 8, layers: 2, groups: 4 });
    tidy(() => assert.deepEqual(d.forward(new Generator(0).randn([2, 3, 64, 64])).shape, [2, 1, 14, 14]));
    d.dispose();
  });

  test('a tiny overfit lowers the loss; before discStart the discriminator changes nothing, after it the losses differ and it learns', () => {
    const data = blobs(8);
    const live = memory().tensors;
    const base = { steps: 40, batchSize: 8, lr: 2e-3, warmupSteps: 0, seed: 1, flip: false, imageSize: 16, config: TINY };
    const plain = AutoencoderTrainer.create(base, { data, log: null });
    const { losses } = plain.runSync();
    const mean = (xs: number[]) => xs.reduce((s, v) => s + v, 0) / xs.length;
    assert.ok(mean(losses.slice(-5)) < 0.6 * mean(losses.slice(0, 5)), `loss ${mean(losses.slice(0, 5))} -> ${mean(losses.slice(-5))}`);
    plain.dispose();

    const opts = { ...base, steps: 6, discWeight: 0.5, discStart: 3 };
    const gan = AutoencoderTrainer.create(opts, { data, log: null });
    const d0 = bytesOf(gan.disc!.stateDict());
    for (let k = 0; k < 3; k++) gan.trainStep();
    assert.deepEqual(bytesOf(gan.disc!.stateDict()), d0, 'no discriminator update before discStart');
    assert.deepEqual(gan.losses, losses.slice(0, 3), 'before discStart the autoencoder loss is the plain one');
    gan.trainStep();
    assert.ok(gan.lastAdaptiveWeight > 0, 'the GAN term counts from discStart');
    assert.notEqual(gan.losses[3], losses[3]);
    assert.notDeepEqual(bytesOf(gan.disc!.stateDict()), d0, 'the discriminator learns from discStart');
    assert.equal(gan.history.discriminator.length, 4);
    gan.dispose();
    assert.equal(memory().tensors, live, 'trainers free everything');
    dispose([data.images, data.labels]);
  });
});

describe('checkpoints and resume', () => {
  let root: string;
  before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-ae-'))));
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test('stopped at step 4 (checkpoints every 3) and resumed, with the discriminator on: the losses, weights and both Adam states of an uninterrupted run, bit for bit', async () => {
    const data = blobs(24); // 3 batches per epoch: 7 steps cross two epoch boundaries
    const opts = { steps: 7, batchSize: 8, lr: 1e-3, seed: 4, imageSize: 16, config: TINY, discWeight: 0.5, discStart: 2 };
    const live = memory().tensors;
    const a = AutoencoderTrainer.create(opts, { data, log: null });
    const ra = a.runSync();
    assert.ok(ra.losses.length === 7 && ra.losses.every(Number.isFinite));
    const dir = path.join(root, 'stopped');
    const b: AutoencoderTrainer = AutoencoderTrainer.create(
      { ...opts, checkpointEvery: 3 },
      {
        data,
        log: null,
        out: dir,
        onStep: (s) => {
          if (s === 4) b.requestStop();
        },
      },
    );
    const rb = await b.run();
    b.dispose();
    assert.deepEqual([rb.status, rb.step, readAutoencoderCheckpoint(dir).step], ['interrupted', 4, 4]);
    const c = AutoencoderTrainer.resume(dir, { data, log: null });
    assert.equal(c.step, 4);
    const rc = await c.run();
    assert.deepEqual(rc.losses, ra.losses, 'the same loss at every step');
    assert.deepEqual(c.history.discriminator, a.history.discriminator, 'the same discriminator losses');
    assert.deepEqual(bytesOf(c.net.stateDict()), bytesOf(a.net.stateDict()), 'the same autoencoder weights');
    assert.deepEqual(bytesOf(c.disc!.stateDict()), bytesOf(a.disc!.stateDict()), 'the same discriminator weights');
    assert.deepEqual(optBytes(c), optBytes(a), 'the same Adam states');
    assert.throws(() => AutoencoderTrainer.resume(dir, { log: null }), /was trained on data passed in \(24 images\); pass the same data again/);
    assert.throws(() => AutoencoderTrainer.resume(dir, { data, steps: 2, log: null }), /steps \(2\) is below the checkpoint's step \(7\)/);

    // The saved autoencoder decodes as the trained one.
    saveAutoencoder(path.join(root, 'saved'), c.net, { imageSize: 16, training: { note: 'test' } });
    const { meta, net } = loadAutoencoder(path.join(root, 'saved'));
    assert.deepEqual(meta.latentShape, [4, 4, 4]);
    assert.deepEqual(bytesOf(net.stateDict()), bytesOf(c.net.stateDict()));
    net.dispose();
    fs.appendFileSync(path.join(root, 'saved', 'autoencoder.safetensors'), 'x');
    assert.throws(() => loadAutoencoder(path.join(root, 'saved')), /does not match the size\/SHA-256/);
    a.dispose();
    c.dispose();
    assert.equal(memory().tensors, live, 'trainers free everything');
    dispose([data.images, data.labels]);
  });

  test('diffuse train-autoencoder and eval-autoencoder on the emoji at 16 px: files, numbers, resume and usage errors', async () => {
    const cwd = path.join(root, 'cli');
    fs.mkdirSync(cwd);
    const r = await runQuick(cwd, 'train-autoencoder', '--image-size', '16', '--steps', '2', '--batch-size', '4', '--out', 'ae', '--threads', '1');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote ae\/autoencoder.json \(KL-f4, \d+ parameters/);
    for (const f of ['autoencoder.json', 'autoencoder.safetensors', AUTOENCODER_CHECKPOINT_FILE, 'loss.png']) assert.ok(fs.existsSync(path.join(cwd, 'ae', f)), f);
    const stored = JSON.parse(fs.readFileSync(path.join(cwd, 'ae', 'autoencoder.json'), 'utf8'));
    assert.equal(stored.latentStats.data, 'emoji train split');
    assert.ok(stored.latentStats.n > 1000 && stored.latentStats.std.length === 4 && stored.scaleFactor === 1 / stored.latentStats.globalStd);
    assert.match(r.out, new RegExp(`latent scale factor 1 / std\\(z\\) = ${stored.scaleFactor.toFixed(4)} over ${stored.latentStats.n} training images`));
    const more = await runQuick(cwd, 'train-autoencoder', '--resume', 'ae', '--steps', '3', '--threads', '1');
    assert.equal(more.code, 0, more.err);
    assert.equal(readAutoencoderCheckpoint(path.join(cwd, 'ae')).step, 3);
    // A folder written before the factor was stored gets it from a resume that takes no step.
    const json = path.join(cwd, 'ae', 'autoencoder.json');
    const old = JSON.parse(fs.readFileSync(json, 'utf8'));
    delete old.scaleFactor;
    delete old.latentStats;
    fs.writeFileSync(json, JSON.stringify(old));
    const again = await runQuick(cwd, 'train-autoencoder', '--resume', 'ae', '--threads', '1');
    assert.equal(again.code, 0, again.err);
    assert.equal(readAutoencoderCheckpoint(path.join(cwd, 'ae')).step, 3);
    assert.equal(typeof JSON.parse(fs.readFileSync(json, 'utf8')).scaleFactor, 'number');
    const e = await runQuick(cwd, 'eval-autoencoder', 'ae', '--n', '16', '--show', '8', '--fd', 'false');
    assert.equal(e.code, 0, e.err);
    assert.match(e.out, /16 emoji test images at 16 px, KL-f4:\n {2}PSNR [\d.]+ dB, SSIM -?[\d.]+\n {2}latent mean per channel \[.*\], std \[.*\]/);
    assert.match(e.out, /scale factor 1 \/ std = [\d.]+ on this split; stored \(train split, what train --latent uses\): [\d.]+\n/);
    const small = await runQuick(cwd, 'eval-autoencoder', 'ae', '--n', '8', '--fd', 'false'); // fewer images than the default --show 32
    assert.equal(small.code, 0, small.err);
    const report = JSON.parse(fs.readFileSync(path.join(cwd, 'ae', 'eval.json'), 'utf8'));
    assert.equal(report.n, 8);
    assert.ok(report.psnr > 0 && report.ssim <= 1 && report.latent.std.length === 4 && report.reconstructionFD === null);
    assert.ok(fs.existsSync(path.join(cwd, 'ae', 'reconstructions.png')));
    for (const [args, re] of [
      [['train-autoencoder', '--factor', '6'], /--factor: expected 4 or 8, got 6/],
      [['train-autoencoder', '--image-size', '48'], /--image-size: expected 16, 32 or 64, got 48/],
      [['train-autoencoder', '--kl-weight', '-1'], /--kl-weight: expected a number >= 0, got -1/],
      [['train-autoencoder', '--out', 'ae'], /--out ae: already holds a run/],
      [['train-autoencoder', '--resume', 'ae', '--factor', '8'], /--factor: "8" cannot change when resuming the run in ae: its factor is 4/],
      [['eval-autoencoder', 'nowhere'], /nowhere\/autoencoder.json not found/],
    ] as const) {
      const u = await runQuick(cwd, ...args);
      assert.notEqual(u.code, 0);
      assert.match(u.err, re);
    }
  });
});

describe('the frozen evaluator stays out of training', () => {
  test('no module the autoencoder training imports reaches the evaluator network or its FD code, and training runs with them disabled', () => {
    // The compiled import graph of the training task, followed file by file.
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const m of fs.readFileSync(file, 'utf8').matchAll(/require\("(\.[^"]+)"\)/g)) visit(require.resolve(path.resolve(path.dirname(file), m[1])));
    };
    visit(require.resolve('../src/training/autoencoder'));
    const evalFiles = [...seen].map((f) => path.relative(path.join(__dirname, '..', 'src'), f)).filter((f) => f.startsWith('eval'));
    assert.deepEqual(evalFiles, [path.join('eval', 'ssim.js')], 'only the SSIM formulas of src/eval/');
    // And at run time: the evaluator's entry points throw; a tiny run still trains.

    const fnet = require('../src/eval/feature-net') as Record<string, unknown>;
    const saved = { ...fnet };
    for (const k of ['loadFeatureNet', 'extractFeatures', 'featureNetFor']) fnet[k] = () => assert.fail(`training called the evaluator's ${k}`);
    try {
      const data = blobs(8);
      const t = AutoencoderTrainer.create({ steps: 2, batchSize: 4, imageSize: 16, config: TINY, discWeight: 0.5, discStart: 0 }, { data, log: null });
      assert.equal(t.runSync().status, 'done');
      t.dispose();
      dispose([data.images, data.labels]);
    } finally {
      Object.assign(fnet, saved);
    }
  });
});
