// Checkpoints: what is written, that the previous checkpoint survives an interrupted
// write, that every kind of damage (missing, truncated, corrupt, inconsistent, invalid
// JSON, wrong format or version, bad config) is an error naming the file at fault, and
// the half-precision export.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, setNumThreads, tidy } from '../src/engine';
import { resolveTrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';
import { CheckpointError, exportCheckpoint, loadCheckpoint, loadModel, readCheckpointMeta } from '../src/training/checkpoint';

setNumThreads(1);

const TOY = {
  data: '8gaussians',
  model: { type: 'mlp', hidden: 32, depth: 2 },
  batchSize: 32,
  steps: 10,
  warmupSteps: 2,
  sigmaData: 1,
  sampleEvery: 0,
  checkpointEvery: 0,
  sampleCount: 8,
  sampleSteps: 4,
};
let root: string;
let src: string;

/** A fresh copy of the reference checkpoint to damage. */
function copy(name: string): string {
  const dst = path.join(root, name);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}
const meta = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8'));
const fileOf = (dir: string, part: string) => path.join(dir, meta(dir).files[part].file);

/** Asserts that loading fails with a CheckpointError whose message names `file` and matches `re`. */
function rejects(dir: string, file: string, re: RegExp): void {
  assert.throws(
    () => loadCheckpoint(dir),
    (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${String(e)}`);
      assert.equal(e.file, file);
      assert.ok(e.message.startsWith(file), `message names the file: ${e.message}`);
      assert.match(e.message, re);
      return true;
    },
  );
}

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-ckpt-'));
  src = path.join(root, 'run');
  const t = Trainer.create(resolveTrainConfig({ ...TOY, out: src }), { log: null });
  for (let i = 0; i < 3; i++) t.trainStep();
  t.checkpoint();
  t.dispose();
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

describe('writing', () => {
  test('checkpoint.json names the three tensor files with their sizes and hashes', () => {
    const m = meta(src);
    assert.equal(m.format, 'diffuse-checkpoint');
    assert.equal(m.step, 3);
    for (const part of ['model', 'ema', 'optimizer']) {
      const rec = m.files[part];
      assert.equal(rec.file, `${part}-00000003.safetensors`);
      assert.equal(fs.statSync(path.join(src, rec.file)).size, rec.bytes);
      assert.match(rec.sha256, /^[0-9a-f]{64}$/);
    }
    assert.equal(m.state.loader.step, 3);
    assert.deepEqual(Object.keys(m.state.generators).sort(), ['dropout', 'train']);
    const ck = loadCheckpoint(src);
    assert.deepEqual(Object.keys(ck.model!.tensors).sort(), Object.keys(ck.ema!.tensors).sort());
    assert.ok(Object.keys(ck.optimizer!.tensors).some((k) => k.endsWith('.exp_avg')));
    for (const p of ['model', 'ema', 'optimizer'] as const) dispose(ck[p]!.tensors);
  });

  test('a write that stops before the JSON leaves the previous checkpoint whole; the next commit removes stale files', async () => {
    const dir = copy('interrupted');
    fs.writeFileSync(path.join(dir, 'model-00000004.safetensors'), 'half-written'); // a crash after step 1 of the next write
    const ck = loadCheckpoint(dir);
    assert.equal(ck.meta.step, 3);
    for (const p of ['model', 'ema', 'optimizer'] as const) dispose(ck[p]!.tensors);
    const t = Trainer.create(resolveTrainConfig({ ...TOY, out: dir }), { resume: dir, log: null });
    t.trainStep();
    t.trainStep();
    t.checkpoint();
    t.dispose();
    assert.deepEqual(
      fs
        .readdirSync(dir)
        .filter((f) => f.endsWith('.safetensors'))
        .sort(),
      ['ema-00000005.safetensors', 'model-00000005.safetensors', 'optimizer-00000005.safetensors'],
    );
  });
});

describe('damage is an error naming the file', () => {
  test('no checkpoint.json', () => {
    const dir = path.join(root, 'empty');
    fs.mkdirSync(dir);
    rejects(dir, path.join(dir, 'checkpoint.json'), /not found: this folder holds no Diffuse checkpoint/);
    rejects(path.join(root, 'nowhere'), path.join(root, 'nowhere', 'checkpoint.json'), /no such checkpoint folder/);
  });
  test('checkpoint.json truncated (invalid JSON)', () => {
    const dir = copy('badjson');
    const f = path.join(dir, 'checkpoint.json');
    fs.writeFileSync(f, fs.readFileSync(f, 'utf8').slice(0, 100));
    rejects(dir, f, /is not valid JSON, the file is corrupt or truncated/);
  });
  test('not a Diffuse checkpoint, or a newer format', () => {
    const dir = copy('format');
    const f = path.join(dir, 'checkpoint.json');
    fs.writeFileSync(f, JSON.stringify({ hello: 1 }));
    rejects(dir, f, /is not a Diffuse checkpoint/);
    fs.writeFileSync(f, JSON.stringify({ ...meta(src), formatVersion: 99 }));
    rejects(dir, f, /format version 99.*written by a newer Diffuse/);
  });
  test('an invalid config or field in checkpoint.json', () => {
    const dir = copy('config');
    const f = path.join(dir, 'checkpoint.json');
    const m = meta(src);
    fs.writeFileSync(f, JSON.stringify({ ...m, config: { ...m.config, lr: 'fast' } }));
    rejects(dir, f, /invalid config: .*lr: expected a number >= 0, got "fast"/);
    fs.writeFileSync(f, JSON.stringify({ ...m, step: -1 }));
    rejects(dir, f, /"step" must be a non-negative integer, got -1/);
    fs.writeFileSync(f, JSON.stringify({ ...m, files: { ...m.files, model: { file: '../x', bytes: 1, sha256: 'a' } } }));
    rejects(dir, f, /"files.model" must be/);
  });
  test('a missing tensor file', () => {
    const dir = copy('missing');
    const f = fileOf(dir, 'model');
    fs.rmSync(f);
    rejects(dir, f, /not found \(checkpoint.json names it as the model file\)/);
  });
  test('a truncated tensor file', () => {
    const dir = copy('truncated');
    const f = fileOf(dir, 'ema');
    fs.truncateSync(f, 100);
    rejects(dir, f, /has 100 bytes but checkpoint.json records \d+: the file is truncated or was replaced/);
  });
  test('a corrupted byte', () => {
    const dir = copy('corrupt');
    const f = fileOf(dir, 'optimizer');
    const b = fs.readFileSync(f);
    b[b.length - 3] ^= 0xff;
    fs.writeFileSync(f, b);
    rejects(dir, f, /is corrupt: its SHA-256 does not match/);
  });
  test('a file that matches its record but is no safetensors file', () => {
    const dir = copy('notsafetensors');
    const f = fileOf(dir, 'model');
    fs.writeFileSync(f, 'this is not a safetensors file at all');
    const m = meta(dir);
    const bytes = fs.readFileSync(f);
    m.files.model = { file: path.basename(f), bytes: bytes.length, sha256: require('node:crypto').createHash('sha256').update(bytes).digest('hex') };
    fs.writeFileSync(path.join(dir, 'checkpoint.json'), JSON.stringify(m));
    rejects(dir, f, /invalid safetensors file/);
  });
  test('weights that do not fit the network', () => {
    const dir = copy('mismatch');
    const f = path.join(dir, 'checkpoint.json');
    const m = meta(src);
    fs.writeFileSync(f, JSON.stringify({ ...m, network: { ...m.network, config: { ...m.network.config, hidden: 16 } } }));
    assert.throws(
      () => loadModel(dir),
      (e: unknown) => e instanceof CheckpointError && e.file === fileOf(dir, 'ema') && /does not fit the network/.test(e.message),
    );
  });
});

describe('export', () => {
  test('float16 EMA weights, loadable for sampling, about half the size, not resumable', () => {
    const dst = path.join(root, 'export');
    const m = exportCheckpoint(src, dst, { dtype: 'float16' });
    assert.deepEqual(Object.keys(m.files), ['ema']);
    assert.equal(m.files.ema!.file, 'ema.safetensors');
    const full = meta(src).files.ema.bytes;
    assert.ok(m.files.ema!.bytes < 0.6 * full, `${m.files.ema!.bytes} vs ${full}`);
    const { net } = loadModel(dst);
    const ref = loadModel(src);
    const [a, b] = [net.stateDict(), ref.net.stateDict()];
    for (const k of Object.keys(a)) {
      const d = tidy(() => a[k].sub(b[k]).abs().max().item());
      assert.ok(d < 2e-3, `${k} differs by ${d}`);
      assert.equal(a[k].dtype, 'float32', 'weights come back as float32');
    }
    net.dispose();
    ref.net.dispose();
    assert.equal(readCheckpointMeta(dst).state!.generators && Object.keys(readCheckpointMeta(dst).state!.generators).length, 0);
    assert.throws(() => Trainer.create(resolveTrainConfig({ ...TOY, out: dst }), { resume: dst, log: null }), /has no optimizer file|export for sampling/);
  });
});
