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
import { runQuick } from './cli-run';

setNumThreads(1);
const MODELS = path.resolve(__dirname, '../../models');
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-shipped-latent-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('models/emoji-ae-f4: a float16 KL-f4 autoencoder with its scale factor that reconstructs test emoji above 22 dB PSNR', () => {
  const dir = path.join(MODELS, 'emoji-ae-f4');
  assert.ok(fs.existsSync(path.join(dir, 'autoencoder.json')), `the shipped autoencoder is missing: ${dir}`);
  const { meta, net } = loadAutoencoder(dir);
  try {
    assert.equal(meta.config.factor, 4);
    assert.deepEqual(meta.latentShape, [4, 16, 16]);
    assert.deepEqual(meta.exportedFrom, { dtype: 'float16' });
    assert.ok(Math.abs(meta.scaleFactor! - 0.3081) < 1e-3, `scale factor ${meta.scaleFactor}`);
    const test = loadEmoji({ split: 'test', size: 64 });
    try {
      // Measured on all 704 test images: 26.1 dB (docs/BENCHMARKS.md).
      const psnr = tidy(() => {
        const x = test.images.narrow(0, 0, 16).float().div(127.5).sub(1);
        const mse = net.decode(net.encode(x).mean).clamp(-1, 1).sub(x).div(2).square().mean().item();
        return 10 * Math.log10(1 / mse);
      });
      assert.ok(psnr > 22, `PSNR ${psnr.toFixed(2)} dB on 16 test images`);
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
