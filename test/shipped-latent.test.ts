// The shipped autoencoder and latent emoji model (issue 15): models/emoji-ae-f4 (KL-f4, float16)
// reconstructs emoji test images, and models/emoji-latent, a U-Net on its [4, 16, 16] latents that
// names it by a relative path, samples decoded 64 px images of the asked category. Fails (never
// skips) when either is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, setNumThreads, tidy } from '../src/engine';
import { loadEmoji } from '../src/data/emoji';
import { loadAutoencoder } from '../src/training/autoencoder';
import { readCheckpointMeta } from '../src/training/checkpoint';
import { loraMetadata } from '../src/nn/lora';
import { ADAPTER_RECORD_KEY, DistillationRecord } from '../src/distillation/record';
import { runQuick } from './cli-run';
import { adapterAndControl, evalRows } from './shipped-eval';

setNumThreads(1);
const MODELS = path.resolve(__dirname, '../../models');
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-shipped-latent-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('models/emoji-ae-f4: a float16 KL-f4 autoencoder that reconstructs test emoji above 22 dB PSNR, and whose scale factor brings their latents to unit std', () => {
  const dir = path.join(MODELS, 'emoji-ae-f4');
  assert.ok(fs.existsSync(path.join(dir, 'autoencoder.json')), `the shipped autoencoder is missing: ${dir}`);
  const { meta, net } = loadAutoencoder(dir);
  try {
    assert.equal(meta.config.factor, 4);
    assert.deepEqual(meta.latentShape, [4, 16, 16]);
    assert.deepEqual(meta.exportedFrom, { dtype: 'float16' });
    const test = loadEmoji({ split: 'test', size: 64 });
    try {
      // Measured on all 704 test images: 26.1 dB (docs/BENCHMARKS.md).
      const { psnr, std } = tidy(() => {
        const x = test.images.narrow(0, 0, 16).float().div(127.5).sub(1);
        const z = net.encode(x).mean;
        const mse = net.decode(z).clamp(-1, 1).sub(x).div(2).square().mean().item();
        return { psnr: 10 * Math.log10(1 / mse), std: z.mul(meta.scaleFactor!).std().item() };
      });
      assert.ok(psnr > 22, `PSNR ${psnr.toFixed(2)} dB on 16 test images`);
      assert.ok(std > 0.8 && std < 1.25, `the stored scale factor brings test latents to about unit std (got ${std.toFixed(3)})`);
    } finally {
      dispose([test.images, test.labels, test.styles]);
    }
  } finally {
    net.dispose();
  }
});

test('models/emoji-latent: a latent U-Net on ../emoji-ae-f4 that diffuse sample decodes to 64 px images', async () => {
  const dir = path.join(MODELS, 'emoji-latent');
  assert.ok(fs.existsSync(path.join(dir, 'checkpoint.json')), `the shipped latent model is missing: ${dir}`);
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8'));
  assert.equal(raw.latent.autoencoder, '../emoji-ae-f4', 'named relative to the model, so the pair moves together');
  const meta = readCheckpointMeta(dir);
  assert.deepEqual(meta.sampleShape, [4, 16, 16]);
  assert.equal(meta.latent!.autoencoder, path.join(MODELS, 'emoji-ae-f4'));
  const out = path.join(root, 'grid.png');
  const r = await runQuick(root, 'sample', dir, '--n', '2', '--steps', '4', '--sampler', 'dpmpp-2m', '--grid', 'karras', '--class', 'Flags', '--threads', '1', '--out', out);
  assert.equal(r.code, 0, r.err);
  const png = fs.readFileSync(out);
  assert.ok(png.readUInt32BE(16) >= 2 * 64 && png.readUInt32BE(20) >= 64, `grid ${png.readUInt32BE(16)} x ${png.readUInt32BE(20)} holds two decoded 64 px images`);
});

test("models/emoji-lcm: a latent consistency model of emoji-latent (w embedded) that decodes with ../emoji-ae-f4 and in 1 step is far ahead of the teacher's 1-step solver", async () => {
  const dir = path.join(MODELS, 'emoji-lcm');
  assert.ok(fs.existsSync(path.join(dir, 'checkpoint.json')), `the shipped LCM student is missing: ${dir}`);
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8'));
  assert.equal(raw.latent.autoencoder, '../emoji-ae-f4');
  const meta = readCheckpointMeta(dir);
  assert.deepEqual(meta.sampleShape, [4, 16, 16]);
  assert.deepEqual(meta.latent, readCheckpointMeta(path.join(MODELS, 'emoji-latent')).latent, "the teacher's autoencoder and normalization");
  const rec = meta.distillation!;
  assert.equal(rec.method, 'lcm');
  assert.deepEqual(rec.guidance.embedded, [1, 5]);
  assert.deepEqual(rec.sampling, { sampler: 'consistency', grid: 'consistency', steps: 4 });
  const [student] = await evalRows(root, dir, path.join(root, 'lcm'), '--steps', '1', '--guidance', '1');
  const [teacher] = await evalRows(root, path.join(MODELS, 'emoji-latent'), path.join(root, 'teacher'), '--steps', '1', '--sampler', 'ddim', '--grid', 'trailing');
  // Measured at n = 500 (docs/BENCHMARKS.md, "LCM and LCM-LoRA"), w = 1: FD 95.7 in 1 step against the teacher's 240 (its 100-step DDPM: 88.4);
  // at n = 100: 116.6 against 256.8, class accuracy 0.61 against 0.29.
  assert.ok(student.metrics.fd.value < 0.6 * teacher.metrics.fd.value, `FD at 1 step: student ${student.metrics.fd.value}, teacher DDIM ${teacher.metrics.fd.value}`);
  assert.ok(student.metrics.accuracy.value > 0.45, `class accuracy at 1 step ${student.metrics.accuracy.value}`);
});

test('models/emoji-lcm-lora: an LCM-LoRA adapter of emoji-latent (float16, w = 2 baked in); merged, it samples decoded emoji in 1 step far better than the model without it', async () => {
  const adapter = path.join(MODELS, 'emoji-lcm-lora');
  assert.ok(fs.existsSync(path.join(adapter, 'adapter_model.safetensors')), `the shipped adapter is missing: ${adapter}`);
  const rec = JSON.parse(loraMetadata(adapter)[ADAPTER_RECORD_KEY]) as DistillationRecord;
  assert.equal(rec.method, 'lcm');
  assert.equal(rec.guidance.teacherScale, 2);
  const [[{ metrics: merged }], [{ metrics: control }]] = await adapterAndControl(root, path.join(MODELS, 'emoji-latent'), adapter, ['--steps', '1']);
  // Measured at n = 500 (docs/BENCHMARKS.md, "LCM and LCM-LoRA"): FD 85.5 at 1 step against 240 without the adapter.
  assert.ok(merged.fd.value < 0.6 * control.fd.value, `FD at 1 step: with the adapter ${merged.fd.value}, without ${control.fd.value}`);
  assert.ok(merged.accuracy.value > 0.45, `class accuracy at 1 step ${merged.accuracy.value}`);
});
