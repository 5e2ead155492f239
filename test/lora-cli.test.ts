// LoRA from the command line on a tiny U-Net over 256 Fashion-MNIST images: train a base,
// fine-tune it with `diffuse train --init BASE --lora-rank 2` (only the adapters move; the
// adapter folder holds PEFT's keys), resume exactly, sample the base with `--lora`, which
// gives the LoRA run's own samples, and `--lora-scale 0`, which gives the base's.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, loadSafetensors } from '../src/engine';
import { readCheckpointMeta } from '../src/training/checkpoint';
import { loraMetadata } from '../src/nn/lora';
import { decodeImage } from '../src/data/image-codec';
import { runQuick } from './cli-run';

let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-lora-cli-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const quick = (...args: string[]) => runQuick(root, ...args);

// prettier-ignore
const TINY = [
  '--data-limit', '256', '--batch-size', '8', '--model-channels', '8', '--groups', '4', '--channel-mult', '1,2', '--attention-resolutions', '16',
  '--no-mid-attention', '--warmup-steps', '2', '--sample-every', '0', '--sample-count', '10', '--sample-steps', '4', '--threads', '1',
];
const LORA = ['--init', 'base', '--lora-rank', '2', '--lora-alpha', '4', '--lora-targets', 'qkv,proj_out,conv2', '--lr', '0.01', '--threads', '1'];

/** The tensors of a checkpoint part (float32 bytes by name). */
function part(dir: string, name: 'ema' | 'model'): Record<string, Buffer> {
  const meta = readCheckpointMeta(path.join(root, dir));
  const { tensors } = loadSafetensors(path.join(root, dir, meta.files[name]!.file));
  const out = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, Buffer.from(t.bytes())]));
  Object.values(tensors).forEach((t) => t.dispose());
  return out;
}

describe('diffuse train --init --lora-rank, sample --lora', () => {
  test('base run, then a LoRA fine-tune: only the adapters move, the adapter folder has PEFT keys', async () => {
    let r = await quick('train', ...TINY, '--steps', '4', '--out', 'base');
    assert.equal(r.code, 0, r.err);
    r = await quick('train', ...LORA, '--steps', '3');
    assert.equal(r.code, 2);
    assert.match(r.err, /--init base: give --out for the fine-tuned run/);
    r = await quick('train', '--init', 'base', '--lora-rank', '2', '--lora-targets', 'nope', '--steps', '2', '--out', 'bad');
    assert.notEqual(r.code, 0);
    assert.match(r.err, /loraTargets: applyLora: targets \["nope"\] match no Linear or Conv2d layer/);
    r = await quick('train', ...LORA, '--steps', '6', '--checkpoint-every', '3', '--out', 'lora');
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /LoRA r 2, alpha 4 on qkv,proj_out,conv2: [\d,]+ trained\), from base/);
    const meta = readCheckpointMeta(path.join(root, 'lora'));
    assert.equal(meta.config.loraRank, 2);
    assert.equal(meta.config.init, 'base');
    // The frozen base: every base weight of the LoRA run equals the base run's EMA weight, bit for bit.
    const init = part('base', 'ema');
    const weights = part('lora', 'model');
    const loraKeys = Object.keys(weights).filter((k) => /\.lora_[AB]\.weight$/.test(k));
    for (const [k, b] of Object.entries(init)) assert.ok(weights[k].equals(b), `${k} is frozen`);
    assert.deepEqual(Object.keys(weights).sort(), [...Object.keys(init), ...loraKeys].sort());
    // The adapter folder: only the adapters, PEFT's keys, and the config.
    const adapter = loadSafetensors(path.join(root, 'lora/lora/adapter_model.safetensors'));
    const layers = loraKeys.filter((k) => k.endsWith('lora_A.weight')).map((k) => k.slice(0, -'.lora_A.weight'.length));
    assert.ok(layers.length > 0 && layers.every((l) => /(qkv|proj_out|conv2)$/.test(l)), layers.join(', '));
    assert.deepEqual(Object.keys(adapter.tensors).sort(), layers.flatMap((l) => [`base_model.model.${l}.lora_A.weight`, `base_model.model.${l}.lora_B.weight`]).sort());
    const B = adapter.tensors[`base_model.model.${layers[0]}.lora_B.weight`];
    assert.ok(B.abs().max().item() > 0, 'B trained away from zero');
    Object.values(adapter.tensors).forEach((t) => t.dispose());
    const config = JSON.parse(fs.readFileSync(path.join(root, 'lora/lora/adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual([config.peft_type, config.r, config.lora_alpha, [...(config.target_modules as string[])].sort()], ['LORA', 2, 4, layers]);
  });

  test('a LoRA run resumed from its step-3 checkpoint takes the same steps: the same losses and adapters, bit for bit', async () => {
    let r = await quick('train', ...LORA, '--steps', '3', '--out', 'half');
    assert.equal(r.code, 0, r.err);
    r = await quick('train', '--resume', 'half', '--steps', '6');
    assert.equal(r.code, 0, r.err);
    const [a, b] = ['lora', 'half'].map((d) => readCheckpointMeta(path.join(root, d)));
    assert.equal(b.step, 6);
    assert.equal(b.state!.losses, a.state!.losses);
    for (const p of ['model', 'ema'] as const) {
      const [x, y] = [part('lora', p), part('half', p)];
      for (const k of Object.keys(x)) assert.ok(x[k].equals(y[k]), `${p} ${k}`);
    }
    const [fa, fb] = ['lora', 'half'].map((d) => fs.readFileSync(path.join(root, d, 'lora/adapter_model.safetensors')));
    assert.ok(fa.equals(fb), 'the same adapter file');
  });

  test("sample BASE --lora ADAPTER draws the LoRA run's images, --lora-scale 0 the base's; export merges the adapters", async () => {
    const S = ['-n', '4', '--steps', '4', '--threads', '1'];
    let r = await quick('sample', 'base', ...S, '--lora', 'lora/lora', '--out', 'with.png');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\+ LoRA lora\/lora x 1\)/);
    r = await quick('sample', 'lora', ...S, '--out', 'run.png');
    assert.equal(r.code, 0, r.err);
    r = await quick('sample', 'base', ...S, '--out', 'base.png');
    assert.equal(r.code, 0, r.err);
    r = await quick('sample', 'base', ...S, '--lora', 'lora/lora', '--lora-scale', '0', '--out', 'zero.png');
    assert.equal(r.code, 0, r.err);
    const png = (f: string) => fs.readFileSync(path.join(root, f));
    assert.ok(png('with.png').equals(png('run.png')), 'base + adapter = the LoRA run');
    assert.ok(png('zero.png').equals(png('base.png')), 'scale 0 = the base');
    assert.ok(!png('with.png').equals(png('base.png')), 'the adapter changes the samples');
    // export merges: an adapter given with --lora, and a LoRA run's own adapters; the exports are plain networks.
    r = await quick('export', 'base', 'merged', '--dtype', 'float32', '--lora', 'lora/lora');
    assert.equal(r.code, 0, r.err);
    r = await quick('export', 'lora', 'run-export', '--dtype', 'float32');
    assert.equal(r.code, 0, r.err);
    for (const dir of ['merged', 'run-export']) {
      assert.ok(!Object.keys(part(dir, 'ema')).some((k) => k.includes('lora_')), `${dir} holds no adapters`);
      r = await quick('sample', dir, ...S, '--out', `${dir}.png`);
      assert.equal(r.code, 0, r.err);
      assert.ok(png(`${dir}.png`).equals(png('run.png')), `${dir} samples as the LoRA run`);
    }
    // export ADAPTER_DIR: the adapter alone, cast to float16 with its metadata; it samples as the float32 one up to rounding.
    r = await quick('export', 'lora/lora', 'adapter16');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote adapter16: adapter_model.safetensors \(.*, float16\), from the adapter lora\/lora/);
    const weights = (f: string) => loadSafetensors(path.join(root, f, 'adapter_model.safetensors')).tensors;
    const [w16, w32] = [weights('adapter16'), weights('lora/lora')];
    assert.deepEqual(Object.keys(w16).sort(), Object.keys(w32).sort());
    for (const [k, t] of Object.entries(w16)) {
      assert.equal(t.dtype, 'float16', k);
      assert.ok(t.float().sub(w32[k]).abs().max().item() <= 1e-3 * Math.max(1e-3, w32[k].abs().max().item()), `${k}: the float32 weights rounded`);
    }
    dispose([...Object.values(w16), ...Object.values(w32)]);
    assert.deepEqual(loraMetadata(path.join(root, 'adapter16')), loraMetadata(path.join(root, 'lora/lora')));
    assert.ok(fs.readFileSync(path.join(root, 'adapter16', 'adapter_config.json')).equals(fs.readFileSync(path.join(root, 'lora/lora', 'adapter_config.json'))));
    r = await quick('sample', 'base', ...S, '--lora', 'adapter16', '--out', 'with16.png');
    assert.equal(r.code, 0, r.err);
    const pixels = (f: string) => decodeImage(png(f), f).rgba;
    const [a16, a32] = [pixels('with16.png'), pixels('with.png')];
    assert.ok(
      a16.every((v, i) => Math.abs(v - a32[i]) <= 2),
      'the float16 adapter samples as the float32 one (within 2 of 255)',
    );
    r = await quick('export', 'lora/lora', 'adapter-bad', '--weights', 'model');
    assert.equal(r.code, 2);
    assert.match(r.err, /--weights is for diffusion checkpoints; lora\/lora is a LoRA adapter/);
    r = await quick('sample', 'base', ...S, '--lora-scale', '2');
    assert.equal(r.code, 2);
    assert.match(r.err, /--lora-scale needs --lora/);
    r = await quick('sample', 'base', ...S, '--lora', 'nowhere');
    assert.equal(r.code, 2);
    assert.match(r.err, /--lora nowhere: loadLora: nowhere does not exist/);
  });
});
