// bench/unet.ts, the U-Net training-step benchmark against PyTorch, without timing anything:
// - the emoji64 preset is the network `diffuse train` builds from the flags it names (the CLI
//   parses them, the trainer derives the network), and the PyTorch twin that bench/unet_peer.py
//   builds from the same config (scripts/fixtures/nn.py) has the same parameter names and shapes;
// - its precomputed steps: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps on DDPM's schedule (known
//   values), labels dropped to the null class at the trainer's rate, step k independent of K.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { dispose, Generator, memory, setNumThreads, Tensor, tidy } from '../src/engine';
import { EMOJI_CATEGORIES } from '../src/data';
import { UNet } from '../src/models';
import { resolveTrainConfig } from '../src/training/config';
import { materializeConfig, networkSpec } from '../src/training/build';
import { ddpmBatches, PRESETS } from '../bench/unet';
import { PYTHON, ROOT } from './nn-fixture';

setNumThreads(1);

const FLAGS = ['--data', 'emoji', '--image-size', '64', '--channels', 'rgb', '--class-conditional', 'true', '--model-channels', '16', '--channel-mult', '1,2,4,4', '--attention-resolutions', '8'];

test('emoji64: the network diffuse train builds from the flags the preset names, 9 classes + null, the PyTorch twin has the same parameters', () => {
  const p = PRESETS.emoji64();
  assert.ok(p.model.includes(FLAGS.join(' ')), `the preset names its flags: ${p.model}`);
  // The CLI's own parse of those flags, then the trainer's derivation of the network.
  const printed = execFileSync(process.execPath, [path.join(ROOT, 'dist/src/cli/main.js'), 'train', ...FLAGS, '--print-config'], { encoding: 'utf8' });
  const data = { kind: 'images' as const, shape: [3, 64, 64], classNames: EMOJI_CATEGORIES.slice() };
  const full = materializeConfig(resolveTrainConfig(JSON.parse(printed)), data);
  const spec = networkSpec(full, data);
  assert.deepEqual(p.config, spec.config);
  assert.equal(p.labelDropout, full.labelDropout);
  assert.equal(p.batch, 32);
  const net = new UNet(p.config);
  const c = net.config;
  assert.deepEqual([c.inChannels, c.imageSize, c.numClasses, net.nullClass], [3, 64, 9, 9]);
  const ours = Object.fromEntries(Object.entries(net.stateDict()).map(([k, t]) => [k, t.shape]));
  const n = net.numParameters();
  net.dispose();
  // What the peer builds: scripts/fixtures/nn.py's UNet from the config stored with the weights.
  const py = [
    'import json, sys',
    `sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'scripts/fixtures'))})`,
    'from nn import UNet',
    'net = UNet(json.loads(sys.argv[1]))',
    'print(json.dumps({k: list(v.shape) for k, v in net.state_dict().items()}))',
  ].join('\n');
  const theirs = JSON.parse(execFileSync(PYTHON, ['-c', py, JSON.stringify(c)], { encoding: 'utf8' }));
  assert.deepEqual(ours, theirs);
  const count = Object.values(theirs as Record<string, number[]>).reduce((s, shape) => s + shape.reduce((a, b) => a * b, 1), 0);
  assert.equal(n, count);
  assert.equal(n, 1_129_795);
});

test('fmnist32 stays the default benchmark: UNET_BENCH_2M, batch 64, unconditional', () => {
  const p = PRESETS.fmnist32();
  const net = new UNet(p.config);
  assert.deepEqual([net.config.inChannels, net.config.imageSize, net.config.numClasses, p.batch], [1, 32, null, 64]);
  assert.equal(net.numParameters(), 1_742_881);
  net.dispose();
});

test('ddpmBatches: x_t on DDPM linear betas, labels dropped to the null class at the given rate, step k independent of K', () => {
  const before = memory().tensors;
  const [B, K, classes, drop] = [16, 50, 9, 0.1];
  const g0 = new Generator(3);
  const fixed = tidy(() => ({ x0: g0.rand([B, 3, 4, 4]).mul(2).sub(1), labels: g0.randint(0, classes, [B]) }));
  const s = ddpmBatches(fixed, K, new Generator(5), drop, classes);
  assert.deepEqual(
    [s.xt.shape, s.eps.shape, s.t.shape, s.labels?.shape],
    [
      [K, B, 3, 4, 4],
      [K, B, 3, 4, 4],
      [K, B],
      [K, B],
    ],
  );
  // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, Eq. 4); abar_0 = 1 - 1e-4, abar_999 = 4.0358e-5 (DDPM's linear betas).
  const abar = (t: number) => {
    let a = 1;
    for (let i = 0; i <= t; i++) a *= 1 - (1e-4 + ((0.02 - 1e-4) * i) / 999);
    return a;
  };
  assert.ok(Math.abs(abar(0) - 0.9999) < 1e-12 && Math.abs(abar(999) - 4.0358e-5) < 1e-8, `abar_999 = ${abar(999)}`);
  const t = s.t.toFloat64Array();
  const x0 = fixed.x0.toFloat64Array();
  const xt = s.xt.toFloat64Array();
  const eps = s.eps.toFloat64Array();
  const per = 3 * 4 * 4;
  let err = 0;
  for (let i = 0; i < K * B; i++) {
    const a = abar(t[i]);
    for (let j = 0; j < per; j++) {
      const want = Math.sqrt(a) * x0[(i % B) * per + j] + Math.sqrt(1 - a) * eps[i * per + j];
      err = Math.max(err, Math.abs(xt[i * per + j] - want));
    }
  }
  assert.ok(err < 1e-5, `x_t off by ${err}`);
  assert.ok(new Set(t).size > 100, 'timesteps spread over 0..999');
  // Labels: each the image's label or the null class (9); about 10% null (800 draws: 80 +- 8.5).
  const labels = Array.from(s.labels!.toFloat64Array());
  const orig = Array.from(fixed.labels.toFloat64Array());
  labels.forEach((l, i) => assert.ok(l === orig[i % B] || l === classes, `label ${l} at ${i}`));
  const nulls = labels.filter((l) => l === classes).length;
  assert.ok(nulls >= 50 && nulls <= 110, `${nulls} of ${K * B} labels dropped, expected about ${drop * K * B}`);
  // Step k is drawn before step k + 1: the first 3 steps are the same when K is 3.
  const same = (pair: () => [Tensor, Tensor]) => tidy(() => pair()[0].sub(pair()[1]).abs().max().item()) === 0;
  const short = ddpmBatches(fixed, 3, new Generator(5), drop, classes);
  for (const k of ['eps', 't', 'labels'] as const)
    assert.ok(
      same(() => [short[k]!, s[k]!.narrow(0, 0, 3)]),
      `${k}: the first steps depend on K`,
    );
  // x_t is arithmetic on those draws (vectorized over K, so the last bit may differ).
  const dx = tidy(() =>
    short.xt
      .sub(s.xt.narrow(0, 0, 3))
      .abs()
      .max()
      .item(),
  );
  assert.ok(dx < 1e-6, `xt: the first steps differ by ${dx}`);
  // Unconditional (fmnist32): no labels and no dropout draws, so its steps are what they were before labels existed.
  const none = ddpmBatches({ x0: fixed.x0, labels: null }, 3, new Generator(5), drop, null);
  assert.equal(none.labels, undefined);
  assert.ok(same(() => [none.t.select(0, 0), short.t.select(0, 0)]) && !same(() => [none.t, short.t]), 'only step 0 shares its draws');
  dispose([s, short, none, fixed]);
  assert.equal(memory().tensors, before, 'every tensor freed');
});
