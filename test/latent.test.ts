// Latent diffusion (issue 15, part 2): a tiny autoencoder trained for two steps here, then the
// codec (shapes, the normalization against its definition), `train --latent` for a few steps and
// its bit-exact resume, sampling from the latent run with every registered sampler and with CFG
// (images of the right shape in [-1, 1]), the checkpoint round trip (export, info, a replaced
// autoencoder), and the configurations that are refused, each naming its option and value.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, Generator, memory, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { ImageDataset } from '../src/data/loader';
import { Autoencoder } from '../src/models/autoencoder';
import { decodeImage } from '../src/data/image-codec';
import { denormalizeLatents, LatentCodec, latentNormalization, measureLatents, normalizeLatents } from '../src/resolution/latent';
import { AutoencoderTrainer, loadAutoencoder, openLatentCodec, saveAutoencoder } from '../src/training/autoencoder';
import { ConfigError, resolveTrainConfig, TrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';
import { loadModel, readCheckpointMeta } from '../src/training/checkpoint';
import { generateSamples } from '../src/training/build';
import { SAMPLERS } from '../src/sampling';
import { classifierFreeGuidance } from '../src/guidance/cfg';
import { prepareGuidance } from '../src/guidance/load';
import { runQuick } from './cli-run';

setNumThreads(1);

/** n RGB uint8 images of side 16: smooth color blobs on white (the autoencoder's training data). */
function blobs(n: number, seed = 0): ImageDataset {
  const s = 16;
  return tidy(() => {
    const g = new Generator(seed);
    const yy = tensor(Array.from({ length: s }, (_, i) => i)).reshape([1, 1, s, 1]);
    const xx = tensor(Array.from({ length: s }, (_, i) => i)).reshape([1, 1, 1, s]);
    const cy = g.rand([n, 1, 1, 1]).mul(8).add(4);
    const cx = g.rand([n, 1, 1, 1]).mul(8).add(4);
    const mask = yy.sub(cy).square().add(xx.sub(cx).square()).div(-16).exp(); // [n, 1, s, s]
    const color = g.rand([n, 3, 1, 1]).mul(255);
    const images = mask.mul(color).add(mask.rsub(1).mul(255)).round().clamp(0, 255).to({ dtype: 'uint8' });
    return { images, labels: g.randint(0, 2, [n]), classNames: ['a', 'b'] };
  });
}

const bytes = (t: Tensor) => Buffer.from(t.bytes()).toString('base64');
const inRange = (x: Tensor) => tidy(() => x.abs().max().item()) <= 1;

let root: string;
let aeDir: string;
let run: string;

/** A latent run's config: emoji at 16 px (32 of them), latents [4, 4, 4]; attention at the 2 x 2 level of the latent U-Net. */
function latentConfig(over: Record<string, unknown> = {}): TrainConfig {
  return resolveTrainConfig({
    data: 'emoji',
    imageSize: 16,
    dataLimit: 32,
    flip: true,
    latent: aeDir,
    model: { type: 'unet', attentionResolutions: [2] },
    batchSize: 8,
    steps: 4,
    warmupSteps: 0,
    lrSchedule: 'constant', // a run stopped at step 2 then resumed sees the learning rates of one that ran on
    checkpointEvery: 2,
    sampleEvery: 0,
    sampleCount: 4,
    sampleSteps: 2,
    threads: 1,
    out: path.join(root, 'run'),
    ...over,
  });
}

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-latent-'));
  aeDir = path.join(root, 'ae');
  run = path.join(root, 'run');
  const data = blobs(24);
  const t = AutoencoderTrainer.create({ steps: 2, batchSize: 8, imageSize: 16, config: { channels: 8, groups: 4 } }, { data, log: null });
  try {
    t.runSync();
    saveAutoencoder(aeDir, t.net, { imageSize: 16, training: {}, latentStats: t.measureLatents() });
  } finally {
    t.dispose();
    dispose([data.images, data.labels]);
  }
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

describe('the codec', () => {
  test('encode/decode shapes; a sample is the normalized reparameterization; decoded images lie in [-1, 1]', () => {
    const codec = openLatentCodec(aeDir, 'scalar');
    const data = blobs(6, 1);
    try {
      const stored = loadAutoencoder(aeDir);
      stored.net.dispose();
      const r = codec.record;
      assert.equal(r.autoencoder, path.resolve(aeDir));
      assert.equal(r.sha256, stored.meta.weights.sha256);
      assert.deepEqual([r.factor, r.imageSize, r.latentShape], [4, 16, [4, 4, 4]]);
      assert.deepEqual(r.shift, [0, 0, 0, 0]);
      assert.deepEqual(r.scale, new Array(4).fill(stored.meta.scaleFactor));
      const before = memory().tensors;
      const moments = codec.encodePosteriors(data.images, { batchSize: 4 });
      tidy(() => {
        assert.deepEqual(moments.shape, [6, 8, 4, 4]);
        const z = codec.sample(moments, new Generator(3));
        assert.deepEqual(z.shape, [6, 4, 4, 4]);
        const { mean, logvar } = codec.net.encode(data.images.float().div(127.5).sub(1));
        const direct = mean.add(logvar.mul(0.5).exp().mul(new Generator(3).randnLike(mean))).mul(stored.meta.scaleFactor!);
        assert.ok(z.sub(direct).abs().max().item() < 1e-5, 'z = (mean + exp(logvar / 2) eps) x scale factor');
        const x = codec.decode(z);
        assert.deepEqual(x.shape, [6, 3, 16, 16]);
        assert.ok(inRange(x));
        assert.ok(denormalizeLatents(normalizeLatents(mean, r), r).sub(mean).abs().max().item() < 1e-5, 'denormalize inverts normalize');
      });
      moments.dispose();
      assert.equal(memory().tensors, before, 'the codec frees its temporaries');
    } finally {
      codec.dispose();
      dispose([data.images, data.labels]);
    }
  });

  test("'channel' normalization (EDM2's): the measured samples come out with mean 0 and std 1 in every channel; 'scalar' gives std 1 overall", () => {
    const data = blobs(10, 2);
    const { net } = loadAutoencoder(aeDir);
    try {
      const stats = measureLatents(net, data.images, { seed: 5, batchSize: 3 });
      const channel = latentNormalization(stats, 'channel');
      assert.deepEqual(channel.shift, stats.mean);
      assert.deepEqual(
        channel.scale,
        stats.std.map((s) => 1 / s),
      );
      const codec = new LatentCodec(net, { ...channel, autoencoder: aeDir, sha256: '', factor: 4, imageSize: 16, latentShape: [4, 4, 4] });
      tidy(() => {
        const moments = codec.encodePosteriors(data.images);
        const z = codec.sample(moments, new Generator(5)); // the draws measureLatents made
        const perChannel = z.transpose(0, 1).flatten(1);
        for (const m of perChannel.mean(1).toFloat64Array()) assert.ok(Math.abs(m) < 1e-5, `channel mean ${m}`);
        for (const s of perChannel.std(1).toFloat64Array()) assert.ok(Math.abs(s - 1) < 1e-5, `channel std ${s}`);
        const scalar = latentNormalization(stats, 'scalar');
        const [mean, logvar] = moments.chunk(2, 1);
        const zs = normalizeLatents(mean.add(logvar.mul(0.5).exp().mul(new Generator(5).randnLike(mean))), scalar);
        assert.ok(Math.abs(zs.std().item() - 1) < 1e-5);
      });
      assert.throws(() => latentNormalization(stats, 'other' as 'scalar'), /norm must be 'scalar' or 'channel', got "other"/);
    } finally {
      net.dispose();
      dispose([data.images, data.labels]);
    }
  });
});

describe('train --latent', () => {
  test('trains on latents [4, S/f, S/f], records its autoencoder, previews decoded images, and resumes bit for bit', async () => {
    const live = memory().tensors;
    const a = Trainer.create(latentConfig({ sampleEvery: 4 }), { log: null });
    assert.deepEqual(a.data.shape, [4, 4, 4]);
    assert.match(a.describe(), /latents \[4,4,4\] of the KL-f4 autoencoder .*ae \(scalar normalization\)/);
    const ra = await a.run();
    const emaA = a.emaStateDict();
    const wa = Object.fromEntries(Object.entries(emaA).map(([k, v]) => [k, bytes(v)]));
    a.dispose();
    assert.ok(ra.losses.length === 4 && ra.losses.every(Number.isFinite));
    const meta = readCheckpointMeta(run);
    assert.deepEqual(meta.sampleShape, [4, 4, 4]);
    assert.equal(meta.config.latent, path.resolve(aeDir));
    assert.equal(meta.latent!.autoencoder, path.resolve(aeDir));
    assert.equal(meta.latent!.norm, 'scalar');
    const png = decodeImage(fs.readFileSync(path.join(run, 'samples-000004.png')), 'preview');
    assert.ok(png.width >= 4 * 16 * 2 && png.height >= 16 * 2, `a preview of decoded 16 px images (${png.width} x ${png.height})`);

    const out = path.join(root, 'run-b');
    const b = Trainer.create(latentConfig({ steps: 2, out }), { log: null });
    await b.run();
    b.dispose();
    const c = Trainer.create(latentConfig({ out }), { resume: out, log: null });
    const rc = await c.run();
    assert.deepEqual(rc.losses, ra.losses, 'the losses of an uninterrupted run');
    const wc = Object.fromEntries(Object.entries(c.emaStateDict()).map(([k, v]) => [k, bytes(v)]));
    c.dispose();
    assert.deepEqual(wc, wa, 'the EMA weights of an uninterrupted run');
    assert.equal(memory().tensors, live, 'trainers free the codec and the cached posteriors');
  });

  test('per-channel normalization is recorded; a changed autoencoder stops a resume', async () => {
    const out = path.join(root, 'run-channel');
    const t = Trainer.create(latentConfig({ latentNorm: 'channel', steps: 2, out }), { log: null });
    await t.run();
    const stats = loadAutoencoder(aeDir);
    stats.net.dispose();
    t.dispose();
    const rec = readCheckpointMeta(out).latent!;
    assert.equal(rec.norm, 'channel');
    assert.deepEqual(rec.shift, stats.meta.latentStats!.mean);
    // The same folder with other statistics is not the autoencoder the run was trained with.
    const j = path.join(aeDir, 'autoencoder.json');
    const saved = fs.readFileSync(j, 'utf8');
    try {
      const m = JSON.parse(saved);
      m.latentStats.mean[0] += 0.5;
      fs.writeFileSync(j, JSON.stringify(m));
      assert.throws(
        () => Trainer.create(latentConfig({ latentNorm: 'channel', out }), { resume: out, log: null }),
        (e: Error) => e instanceof ConfigError && /resume: the autoencoder in .*ae \(its weights or its stored latent statistics\) is not the one/.test(e.message),
      );
    } finally {
      fs.writeFileSync(j, saved);
    }
  });
});

describe('sampling a latent model', () => {
  test('every registered sampler, and classifier-free guidance, gives decoded images [n, 3, 16, 16] in [-1, 1]', () => {
    const m = loadModel(run, { latent: true });
    try {
      assert.ok(m.latent, 'the codec comes with the model');
      const decode = (z: Tensor) => m.latent!.decode(z);
      const opts = { shape: m.meta.sampleShape, n: 2, seed: 1, steps: 2, labels: [0, 3], decode };
      for (const sampler of Object.keys(SAMPLERS)) {
        const x = generateSamples(m.denoiser, m.meta.config, { ...opts, sampler });
        assert.deepEqual(x.shape, [2, 3, 16, 16], sampler);
        assert.ok(inRange(x), `${sampler}: images in [-1, 1]`);
        x.dispose();
      }
      const guided = classifierFreeGuidance(m.denoiser, { scale: 3, nullClass: m.meta.classNames!.length });
      const g = generateSamples(guided, m.meta.config, { ...opts, sampler: 'dpmpp-2m' });
      assert.deepEqual(g.shape, [2, 3, 16, 16]);
      assert.ok(inRange(g));
      g.dispose();
      // Autoguidance with a weaker latent model of the same space; a guide in another space (other normalization) is refused.
      const auto = prepareGuidance(m.denoiser, m.meta, { type: 'auto', guide: path.join(root, 'run-b') });
      const ag = generateSamples(auto.at(2).denoiser, m.meta.config, { ...opts, sampler: 'euler' });
      assert.deepEqual(ag.shape, [2, 3, 16, 16]);
      assert.ok(inRange(ag));
      ag.dispose();
      auto.dispose();
      assert.throws(() => prepareGuidance(m.denoiser, m.meta, { type: 'auto', guide: path.join(root, 'run-channel') }), /not in the same space as the model/);
      assert.throws(() => prepareGuidance(m.denoiser, m.meta, { type: 'classifier' }), /classifier reads noisy pixels, but this latent model denoises latents/);
      assert.throws(() => generateSamples(m.denoiser, m.meta.config, { ...opts, decode: undefined }), /a latent model .* samples latents: pass decode/);
      assert.throws(() => generateSamples(m.denoiser, m.meta.config, { ...opts, clip: true }), /a latent model samples unbounded latents/);
    } finally {
      m.net.dispose();
      m.latent?.dispose();
    }
    assert.throws(() => loadModel(run), /is a latent diffusion model .*: this command does not decode latents yet/);
  });

  test('diffuse sample (with --guidance), export and info read the latent run; a replaced autoencoder is named', async () => {
    const s = await runQuick(root, 'sample', 'run', '-n', '3', '--steps', '2', '--guidance', '2', '--out-dir', 'imgs', '--threads', '1');
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /latents \[4,4,4\] decoded by .*ae\), 2 steps.*cfg w = 2/);
    const img = decodeImage(fs.readFileSync(path.join(root, 'imgs', '000000.png')), 'sample');
    assert.deepEqual([img.width, img.height], [16, 16]);
    const e = await runQuick(root, 'export', 'run', 'exported');
    assert.equal(e.code, 0, e.err);
    const exported = path.join(root, 'exported', 'checkpoint.json');
    assert.deepEqual(readCheckpointMeta(exported).latent, readCheckpointMeta(run).latent);
    // checkpoint.json's latent record is checked when read.
    const text = fs.readFileSync(exported, 'utf8');
    const broken = (edit: (j: Record<string, unknown> & { latent: Record<string, unknown> }) => void, re: RegExp) => {
      const j = JSON.parse(text);
      edit(j);
      fs.writeFileSync(exported, JSON.stringify(j));
      assert.throws(() => readCheckpointMeta(exported), re);
    };
    broken((j) => delete (j as Record<string, unknown>).latent, /its config trains on latents \(latent ".*ae"\) but it has no "latent" record/);
    broken((j) => (j.latent.norm = 'pixel'), /"latent.norm" must be 'scalar' or 'channel', got "pixel"/);
    broken((j) => (j.latent.scale = [1, 2]), /"latent.shift" and "latent.scale" must be 4 finite numbers each/);
    fs.writeFileSync(exported, text);
    const se = await runQuick(root, 'sample', 'exported', '-n', '2', '--steps', '2', '--sampler', 'euler', '--out', 'e.png', '--threads', '1');
    assert.equal(se.code, 0, se.err);
    const ev = await runQuick(root, 'eval', 'run', '--n', '4', '--steps', '2', '--no-cache', '--threads', '1');
    assert.equal(ev.code, 0, ev.err);
    assert.match(ev.out, /features emoji-cnn-v1/);
    const report = JSON.parse(fs.readFileSync(path.join(run, 'eval', 'ddpm_trailing_steps2_n4_seed0.json'), 'utf8'));
    assert.ok(Number.isFinite(report.metrics.fd.value), 'decoded samples measured like any emoji model');
    const info = await runQuick(root, 'info', 'run');
    assert.equal(info.code, 0, info.err);
    assert.match(info.out, /latent {6}latent diffusion: samples are latents \[4,4,4\] of the KL-f4 autoencoder .*ae, decoded to \[3, 16, 16\] images; normalized z x [\d.]+ \(scale factor/);
    // Replace the autoencoder by another one (other weights, same statistics): the run can no longer decode and says why.
    const files = ['autoencoder.json', 'autoencoder.safetensors'].map((f) => path.join(aeDir, f));
    const saved = files.map((f) => fs.readFileSync(f));
    const { meta, net } = loadAutoencoder(aeDir);
    net.dispose();
    const other = new Autoencoder(meta.config, { generator: new Generator(99) });
    try {
      saveAutoencoder(aeDir, other, { imageSize: 16, training: {}, latentStats: meta.latentStats });
      const bad = await runQuick(root, 'sample', 'run', '-n', '1', '--steps', '1');
      assert.notEqual(bad.code, 0);
      assert.match(bad.err, /run\/checkpoint.json: the autoencoder in .*ae is not the one this latent model was trained with \(its weights' SHA-256 differs\)/);
    } finally {
      other.dispose();
      files.forEach((f, i) => fs.writeFileSync(f, saved[i]));
    }
  });
});

describe('what latent does not go with', () => {
  test('config clashes, a missing or unmeasured autoencoder, another image size, point data: ConfigErrors that name the option and value', async () => {
    const err = (f: () => unknown, re: RegExp) => assert.throws(f, (e: Error) => e instanceof ConfigError && re.test(e.message), re.source);
    err(() => latentConfig({ lowRes: 8 }), /lowRes: does not go with latent \(".*ae"\): a super-resolution stage/);
    err(() => latentConfig({ nested: [8, 16] }), /nested: does not go with latent/);
    err(() => latentConfig({ multiscaleBase: 8 }), /multiscaleBase: does not go with latent/);
    err(() => latentConfig({ shiftBase: 8 }), /shiftBase: does not go with latent .*inputScale/);
    err(() => resolveTrainConfig({ latentNorm: 'channel' }), /latentNorm: normalizes the latents of a latent run \(got "channel"\): set latent too/);
    err(() => latentConfig({ latentNorm: 'pixel' }), /latentNorm: expected one of 'scalar', 'channel', got "pixel"|latentNorm: expected .*scalar.*channel.*got "pixel"/);
    const nowhere = path.join(root, 'nowhere');
    err(() => Trainer.create(latentConfig({ latent: nowhere }), { log: null }), /latent: loadAutoencoder: .*nowhere\/autoencoder.json not found/);
    err(() => Trainer.create(latentConfig({ imageSize: 32 }), { log: null }), /imageSize: must be the autoencoder's image size 16 .* got 32/);
    err(() => Trainer.create(latentConfig({ data: '8gaussians', model: 'mlp' }), { log: null }), /latent: encodes images, but 8gaussians is 2-D point data/);
    err(
      () => Trainer.create(latentConfig({ model: { type: 'unet' } }), { log: null }),
      /model: UNet: attentionResolutions has 8.*\(a latent model works at the latent side, 4 px = imageSize 16 \/ f\)/,
    );
    const old = path.join(root, 'ae-old');
    fs.cpSync(aeDir, old, { recursive: true });
    const j = path.join(old, 'autoencoder.json');
    const m = JSON.parse(fs.readFileSync(j, 'utf8'));
    delete m.scaleFactor;
    delete m.latentStats;
    fs.writeFileSync(j, JSON.stringify(m));
    err(() => Trainer.create(latentConfig({ latent: old }), { log: null }), /latent: .*records no latent scale factor .*diffuse train-autoencoder --resume/);
    const live = memory().tensors;
    err(() => Trainer.create(latentConfig({ imageSize: 32 }), { log: null }), /imageSize/);
    assert.equal(memory().tensors, live, 'a refused run frees the autoencoder and the data');
    const cli = await runQuick(root, 'train', '--latent', 'nowhere', '--data', 'emoji', '--image-size', '16', '--out', 'x');
    assert.notEqual(cli.code, 0);
    assert.match(cli.err, /latent: loadAutoencoder: .*nowhere\/autoencoder.json not found/);
  });
});
