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
import { Autoencoder } from '../src/models/autoencoder';
import { decodeImage } from '../src/data/image-codec';
import { denormalizeLatents, LatentCodec, latentNormalization, measureLatents, normalizeLatents } from '../src/resolution/latent';
import { AutoencoderTrainer, loadAutoencoder, openLatentCodec, saveAutoencoder } from '../src/training/autoencoder';
import { ConfigError, resolveTrainConfig, TrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';
import { loadModel, readCheckpointMeta } from '../src/training/checkpoint';
import { deriveSeed, generateSamples, loadTrainData, SEED_STREAMS } from '../src/training/build';
import { teacherClip } from '../src/distillation/task';
import { epochSeed, ImageDataset } from '../src/data/loader';
import { microAugment } from '../src/training/micro';
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

describe('exporting the autoencoder', () => {
  test('diffuse export casts its weights to float16 (half the file), keeps its statistics, and decodes as the float32 one does', async () => {
    const r = await runQuick(root, 'export', 'ae', 'ae16');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote ae16: autoencoder.safetensors \(.*, float16\) and autoencoder.json, from the autoencoder ae/);
    const a = loadAutoencoder(aeDir);
    const b = loadAutoencoder(path.join(root, 'ae16'));
    try {
      assert.ok(b.meta.weights.bytes < 0.6 * a.meta.weights.bytes, `${b.meta.weights.bytes} bytes against ${a.meta.weights.bytes}`);
      assert.deepEqual(b.meta.latentStats, a.meta.latentStats);
      assert.equal(b.meta.scaleFactor, a.meta.scaleFactor);
      assert.deepEqual(b.meta.exportedFrom, { dtype: 'float16' });
      assert.equal(a.meta.exportedFrom, undefined);
      const err = tidy(() => {
        const z = new Generator(3).randn([2, 4, 4, 4]);
        return a.net.decode(z).sub(b.net.decode(z)).abs().max().item();
      });
      assert.ok(err > 0 && err < 0.02, `float16 weights decode within 0.02 of float32 (max error ${err})`);
    } finally {
      a.net.dispose();
      b.net.dispose();
    }
    const bad = await runQuick(root, 'export', 'ae', 'ae-x', '--weights', 'model');
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /--weights is for diffusion checkpoints; ae is an autoencoder/);
  });
});

describe('SDXL micro-conditioning on latents', () => {
  test("the crops are made on step k's pixels and the images they change are encoded afresh; the others keep their stored posterior", () => {
    const live = memory().tensors;
    const config = latentConfig({ cropZoom: 1.6, cropProb: 0.5, microCond: true });
    const codec = openLatentCodec(aeDir, 'scalar');
    const data = loadTrainData(config, { latent: codec });
    const plainCodec = openLatentCodec(aeDir, 'scalar');
    const plain = loadTrainData(latentConfig(), { latent: plainCodec });
    const pixels = loadTrainData(latentConfig({ latent: null }));
    const check = (step: number) =>
      tidy(() => {
        const b = data.batchAt(step);
        assert.deepEqual(b.micro!.shape, [8, 4]);
        // The same pixels (the loader of the same data and seed), cropped as microAugment does with the (seed, k) generator, all encoded; then step k's posterior sample.
        const a = microAugment(pixels.batchAt(step).x, { ...config, generator: new Generator(epochSeed(deriveSeed(config.seed, SEED_STREAMS.latentCrops), step)) });
        assert.deepEqual([...b.micro!.toFloat64Array()], [...a.micro.toFloat64Array()], 'each sample carries its (h, w, top, left) in pixels');
        const want = codec.sample(codec.encodePosteriors(a.x), new Generator(epochSeed(deriveSeed(config.seed, SEED_STREAMS.latent), step)));
        const err = b.x.sub(want).abs().max().item();
        assert.ok(err < 1e-4, `step ${step}: the latents of the cropped images (max error ${err})`);
        const p = plain.batchAt(step).x;
        const px = pixels.batchAt(step).x;
        let kept = 0;
        for (let i = 0; i < 8; i++) {
          const whole = bytes(a.x.narrow(0, i, 1).contiguous()) === bytes(px.narrow(0, i, 1).contiguous()); // a crop at (0, 0) changes the image too
          const same = bytes(b.x.narrow(0, i, 1).contiguous()) === bytes(p.narrow(0, i, 1).contiguous());
          assert.equal(same, whole, `sample ${i}: ${whole ? 'untouched: the stored posterior' : 'cropped: encoded afresh'}`);
          kept += whole ? 1 : 0;
        }
        return kept;
      });
    const kept = [0, 1, 2, 3].map(check);
    assert.ok(
      kept.some((k) => k > 0 && k < 8),
      `some samples cropped and some not over 4 steps (uncropped per step: ${kept})`,
    );
    data.dispose();
    plain.dispose();
    pixels.dispose();
    codec.dispose();
    plainCodec.dispose();
    assert.equal(memory().tensors, live);
  });

  test('a micro-conditioned latent run takes the crops from its data, resumes bit for bit, and samples with --micro', async () => {
    const out = path.join(root, 'run-micro');
    const over = { cropZoom: 1.6, microCond: true, out };
    const a = Trainer.create(latentConfig({ ...over, out: path.join(root, 'run-micro-a') }), { log: null });
    const ra = await a.run();
    a.dispose();
    const b = Trainer.create(latentConfig({ ...over, steps: 2 }), { log: null });
    await b.run();
    b.dispose();
    const c = Trainer.create(latentConfig(over), { resume: out, log: null });
    const rc = await c.run();
    c.dispose();
    assert.deepEqual(rc.losses, ra.losses, 'the losses of an uninterrupted run');
    const control = Trainer.create(latentConfig({ cropZoom: 1.6, out: path.join(root, 'run-micro-control') }), { log: null });
    const rControl = await control.run();
    control.dispose();
    assert.notDeepEqual(rControl.losses, ra.losses, 'the network is told the crops');
    for (const ask of ['16,16,0,0', '16,16,4,4']) {
      const s = await runQuick(root, 'sample', 'run-micro', '-n', '2', '--steps', '2', '--micro', ask, '--out', `m-${ask}.png`, '--threads', '1');
      assert.equal(s.code, 0, s.err);
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
    // The export names its autoencoder relative to itself, so the two folders move together (models/emoji-latent and ../emoji-ae-f4).
    assert.equal(JSON.parse(text).latent.autoencoder, '../ae');
    assert.equal(JSON.parse(text).config.latent, '../ae');
    for (const d of ['ae', 'exported']) fs.cpSync(path.join(root, d), path.join(root, 'moved', d), { recursive: true });
    const sm = await runQuick(root, 'sample', 'moved/exported', '-n', '2', '--steps', '2', '--sampler', 'euler', '--out', 'moved.png', '--threads', '1');
    assert.equal(sm.code, 0, sm.err);
    assert.ok(fs.readFileSync(path.join(root, 'moved.png')).equals(fs.readFileSync(path.join(root, 'e.png'))), 'the moved pair samples the same images');
    assert.equal(readCheckpointMeta(path.join(root, 'moved', 'exported')).latent!.autoencoder, path.join(root, 'moved', 'ae'));
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

describe('distilling a latent model', () => {
  /** diffuse distill lcm of the tiny latent run, 2 steps of batch 2 on a 3-point skipping grid. */
  const LCM = ['distill', 'lcm', '--teacher', 'run', '--consistency-steps', '2', '--skip', '100', '--batch-size', '2', '--checkpoint-every', '0', '--threads', '1'];
  test("diffuse distill lcm on a latent teacher: a student of its latents with the teacher's latent record; sample and the yardstick decode it", async () => {
    const r = await runQuick(root, ...LCM, '--out', 'lcm', '--student-steps', '2');
    assert.equal(r.code, 0, r.err);
    const dir = path.join(root, 'lcm', 'lcm');
    const meta = readCheckpointMeta(dir);
    const teacher = readCheckpointMeta(run);
    assert.deepEqual(meta.sampleShape, [4, 4, 4]);
    assert.deepEqual(meta.latent, teacher.latent, "the student decodes with its teacher's autoencoder");
    assert.equal(meta.config.latent, teacher.config.latent);
    assert.equal(meta.distillation!.method, 'lcm');
    const png = decodeImage(fs.readFileSync(path.join(dir, 'samples.png')), 'preview');
    assert.ok(png.width >= 9 * 16 && png.height >= 2 * 16, `the preview shows decoded 16 px images (${png.width} x ${png.height})`);
    const s = await runQuick(root, 'sample', 'lcm/lcm', '-n', '3', '--guidance', '2', '--out-dir', 'lcm-imgs', '--threads', '1');
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /latents \[4,4,4\] decoded by .*ae\), 2 steps.*sampler consistency/);
    const img = decodeImage(fs.readFileSync(path.join(root, 'lcm-imgs', '000000.png')), 'sample');
    assert.deepEqual([img.width, img.height], [16, 16]);
    const ys = ['distill', 'yardstick', 'lcm/lcm', '--teacher', 'run', '--n', '4', '--reference-steps', '2', '--student-steps', '1,2', '--guidance', '2'];
    const y = await runQuick(root, ...ys, '--solvers', 'ddim:trailing', '--batch-size', '4', '--threads', '1', '--no-cache', '--out', 'ys');
    assert.equal(y.code, 0, y.err);
    assert.match(y.out, /features emoji-cnn-v1/);
    const yj = JSON.parse(fs.readFileSync(path.join(root, 'ys', 'yardstick.json'), 'utf8')) as {
      reference: { metrics: { fd: { value: number } } };
      students: { nfe: number; metrics: { fd: { value: number } } }[];
    };
    assert.deepEqual(
      yj.students.map((row) => row.nfe),
      [1, 2],
    );
    assert.ok(
      [yj.reference, ...yj.students].every((row) => Number.isFinite(row.metrics.fd.value)),
      'decoded samples measured in the emoji feature space',
    );
  });

  test('LCM-LoRA on a latent teacher: the adapter makes the latent model a decoded few-step sampler', async () => {
    const r = await runQuick(root, ...LCM, '--out', 'lcm-lora', '--lora-rank', '2', '--guidance', '2');
    assert.equal(r.code, 0, r.err);
    const s = await runQuick(root, 'sample', 'run', '--lora', 'lcm-lora/lcm/lora', '-n', '2', '--steps', '2', '--out-dir', 'lora-imgs', '--threads', '1');
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /\+ LoRA lcm-lora\/lcm\/lora x 1, latents \[4,4,4\] decoded by .*ae\), 2 steps.*sampler consistency/);
    const img = decodeImage(fs.readFileSync(path.join(root, 'lora-imgs', '000001.png')), 'sample');
    assert.deepEqual([img.width, img.height], [16, 16]);
  });

  test("the teacher's x0 is clipped to [-1, 1] for pixels only (latents are unbounded); dmd refuses a latent teacher by name", async () => {
    const teacher = readCheckpointMeta(run);
    assert.equal(teacherClip(teacher), null);
    assert.deepEqual(teacherClip({ sampleShape: [3, 16, 16] }), [-1, 1]);
    assert.equal(teacherClip({ sampleShape: [2] }), null);
    const d = await runQuick(root, 'distill', 'dmd2', '--teacher', 'run', '--out', 'dmd2', '--threads', '1');
    assert.equal(d.code, 2, d.err);
    assert.match(d.err, /teacher: run: a latent diffusion model; dmd2 here distils pixel teachers/);
  });
});
