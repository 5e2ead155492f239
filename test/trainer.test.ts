// The trainer: a resumed run takes exactly the steps of an uninterrupted one (losses and
// weights bit for bit), on a 2-D toy and on a tiny class-conditional U-Net over a slice of
// Fashion-MNIST (label dropout, data loader); a NaN loss stops training with the step in
// the message and leaves the last checkpoint untouched; the loop does not leak tensors;
// and the config is checked at the edge.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { memory, noGrad, setNumThreads } from '../src/engine';
import { applyOverrides, ConfigError, resolveTrainConfig, TRAIN_DEFAULTS, TrainConfig } from '../src/training/config';
import { NonFiniteLossError, Trainer } from '../src/training/trainer';

setNumThreads(1);

const TOY = {
  data: '8gaussians',
  model: { type: 'mlp', hidden: 32, depth: 2 },
  batchSize: 32,
  steps: 24,
  warmupSteps: 4,
  sigmaData: 1,
  sampleEvery: 0,
  checkpointEvery: 0,
  sampleCount: 8,
  sampleSteps: 4,
};
const TINY_UNET = {
  dataLimit: 96,
  batchSize: 8,
  steps: 6,
  warmupSteps: 2,
  labelDropout: 0.5,
  model: { type: 'unet', modelChannels: 8, groups: 4, channelMult: [1, 2], attentionResolutions: [], midAttention: false, dropout: 0.1 },
  sampleEvery: 0,
  checkpointEvery: 0,
  sampleCount: 4,
  sampleSteps: 2,
};
const TINY_EDM2 = {
  ...TINY_UNET,
  steps: 4,
  warmupSteps: 1,
  lrRefSteps: 2,
  model: { type: 'edm2', modelChannels: 8, channelMult: [1, 2], numBlocks: 1, attnResolutions: [], channelsPerHead: 16, dropout: 0.1 },
};
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-trainer-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const weights = (t: Trainer) => Object.entries(t.net.stateDict()).map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')]);
const emaWeights = (t: Trainer) => t.ema!.averages.map((v) => Buffer.from(v.bytes()).toString('base64'));

/** N steps straight, and N/2 + checkpoint + resume (a new Trainer, as a new process would) + N/2. */
async function resumeMatches(partial: object, name: string): Promise<void> {
  const n = (partial as { steps: number }).steps;
  const a = Trainer.create(resolveTrainConfig({ ...partial, out: path.join(root, `${name}-a`) }), { log: null });
  for (let i = 0; i < n; i++) a.trainStep();
  const dir = path.join(root, `${name}-b`);
  const b = Trainer.create(resolveTrainConfig({ ...partial, out: dir }), { log: null });
  for (let i = 0; i < n / 2; i++) b.trainStep();
  b.checkpoint();
  b.dispose();
  const c = Trainer.create(resolveTrainConfig({ ...partial, out: dir }), { resume: dir, log: null });
  assert.equal(c.step, n / 2);
  const r = await c.run();
  assert.equal(r.status, 'done');
  assert.deepEqual(r.losses, a.losses, 'the same loss at every step');
  assert.ok(a.losses.every(Number.isFinite));
  assert.deepEqual(weights(c), weights(a), 'the same weights');
  assert.deepEqual(emaWeights(c), emaWeights(a), 'the same EMA');
  a.dispose();
  c.dispose();
}

describe('resume', () => {
  test('equals an uninterrupted run, step for step (2-D toy, MLP)', () => resumeMatches(TOY, 'toy'));
  test('equals an uninterrupted run, step for step (tiny conditional U-Net on Fashion-MNIST, label and network dropout)', () => resumeMatches(TINY_UNET, 'unet'));
  for (const [objective, weighting] of [
    ['x0', 'snr'],
    ['v', 'min-snr'],
    ['eps', 'min-snr'],
    ['edm', 'auto'],
  ])
    test(`equals an uninterrupted run for objective ${objective}, ${weighting} weighting (2-D toy, MLP)`, () => resumeMatches({ ...TOY, objective, weighting }, `toy-${objective}`));
  test('equals an uninterrupted run for model edm2 (objective edm2: u(sigma) restored; forced weight normalization; inv-sqrt lr)', () => resumeMatches(TINY_EDM2, 'edm2'));
  test('equals an uninterrupted run with a shifted schedule (U-Net: shiftBase 16 at 32 px, sigmoid betas)', () =>
    resumeMatches({ ...TINY_UNET, shiftBase: 16, betaSchedule: 'sigmoid' }, 'unet-shift'));
  test('equals an uninterrupted run with a shifted P_mean (edm2: shiftBase 64 at 32 px)', () => resumeMatches({ ...TINY_EDM2, shiftBase: 64 }, 'edm2-shift'));
  test('equals an uninterrupted run with input scaling (2-D toy, v, inputScale 0.5)', () => resumeMatches({ ...TOY, objective: 'v', inputScale: 0.5 }, 'toy-scale'));
  test('equals an uninterrupted run for a super-resolution stage (16 -> 32 px emoji, augmentation noise and blur drawn from the train generator)', () =>
    resumeMatches({ ...TINY_UNET, steps: 4, data: 'emoji:google', imageSize: 32, lowRes: 16, augMax: 0.5, augBlur: true }, 'sr'));
  test('a changed option is refused, naming it; steps may change', () => {
    const dir = path.join(root, 'toy-b');
    assert.throws(() => Trainer.create(resolveTrainConfig({ ...TOY, lr: 0.5, out: dir }), { resume: dir, log: null }), /differs from the checkpoint's in lr: 0.001 -> 0.5/);
    const t = Trainer.create(resolveTrainConfig({ ...TOY, steps: 30, out: dir }), { resume: dir, log: null });
    assert.equal(t.step, 24);
    t.dispose();
  });
});

describe('a NaN loss', () => {
  test('stops training, naming the step, and keeps the last good checkpoint untouched', async () => {
    const dir = path.join(root, 'nan');
    const t = Trainer.create(resolveTrainConfig({ ...TOY, steps: 20, checkpointEvery: 5, out: dir }), { log: null });
    for (let i = 0; i < 5; i++) t.trainStep();
    t.checkpoint();
    const json = fs.readFileSync(path.join(dir, 'checkpoint.json'));
    const files = fs.readdirSync(dir).sort();
    noGrad(() => t.net.parameters()[0].fill_(NaN)); // poison the weights
    await assert.rejects(t.run(), (e: unknown) => {
      assert.ok(e instanceof NonFiniteLossError);
      assert.equal(e.step, 6);
      assert.match(e.message, /training stopped at step 6: the loss is NaN \(not finite\)\. Nothing was written after step 5: the checkpoint in .* \(step 5\) is the last good one/);
      return true;
    });
    assert.deepEqual(fs.readFileSync(path.join(dir, 'checkpoint.json')), json, 'checkpoint.json untouched');
    assert.deepEqual(fs.readdirSync(dir).sort(), files, 'no new files');
    t.dispose();
  });
  test('a huge learning rate ends in a clear error, not in NaN weights on disk', async () => {
    const dir = path.join(root, 'lr');
    const t = Trainer.create(resolveTrainConfig({ ...TOY, lr: 1e30, warmupSteps: 0, gradClip: null, steps: 50, out: dir }), { log: null });
    await assert.rejects(t.run(), /training stopped at step \d+: the loss is (NaN|Infinity)/);
    assert.ok(!fs.existsSync(path.join(dir, 'checkpoint.json')));
    t.dispose();
  });
});

describe('the loop', () => {
  test('writes the run folder and does not leak tensors', async () => {
    const dir = path.join(root, 'folder');
    const t = Trainer.create(resolveTrainConfig({ ...TOY, steps: 12, sampleEvery: 4, checkpointEvery: 4, out: dir }), { log: null });
    t.trainStep();
    const live = memory().tensors;
    for (let i = 0; i < 3; i++) t.trainStep();
    assert.equal(memory().tensors, live, 'steps free their tensors');
    await t.run();
    t.dispose();
    assert.deepEqual(fs.readdirSync(dir).sort(), [
      'checkpoint.json',
      'ema-00000012.safetensors',
      'loss.png',
      'model-00000012.safetensors',
      'optimizer-00000012.safetensors',
      'samples-000008.png',
      'samples-000012.png',
    ]);
  });
  test('requestStop() ends the run early with a checkpoint, status interrupted', async () => {
    const dir = path.join(root, 'stop');
    const t = Trainer.create(resolveTrainConfig({ ...TOY, steps: 1000, out: dir }), { log: null });
    setTimeout(() => t.requestStop(), 50);
    const r = await t.run();
    t.dispose();
    assert.equal(r.status, 'interrupted');
    assert.ok(r.step > 0 && r.step < 1000);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8')).step, r.step);
  });
});

describe('config', () => {
  test('defaults are the documented embedded run', () => {
    const c = resolveTrainConfig({});
    assert.equal(c.data, 'fashion-mnist');
    assert.equal(c.objective, 'eps');
    assert.deepEqual(c, { ...TRAIN_DEFAULTS, model: { type: 'unet' } });
  });
  test('unknown keys, bad values and bad combinations name the key and the value', () => {
    const err = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof ConfigError && re.test(e.message));
    err(() => resolveTrainConfig({ stpes: 3 }, 'run.json'), /^run.json: stpes: unknown option \(did you mean steps\?\)/);
    err(() => resolveTrainConfig({ lr: -1 }, 'run.json'), /^run.json: lr: expected a number >= 0, got -1/);
    err(() => resolveTrainConfig({ objective: 'vp' }), /objective: expected 'eps' or 'x0' or 'v' or 'edm' or 'edm2' \('ddpm' = 'eps'\), got "vp"/);
    err(() => resolveTrainConfig({ model: { type: 'unet', hidden: 3 } }), /model.hidden: unknown unet option \(it is an option of the mlp model\)/);
    err(() => resolveTrainConfig({ model: { type: 'unet', numClasses: 3 } }), /model.numClasses: is set by the trainer from the data/);
    err(() => resolveTrainConfig({ emaDecay: 0.999, emaHalfLifeImages: 100 }), /give exactly one of emaHalfLifeImages and emaDecay/);
    assert.equal(resolveTrainConfig({ emaDecay: 0.999 }).emaHalfLifeImages, null, 'setting one clears the other');
    const base = resolveTrainConfig({});
    const over = (key: string, value: string) => applyOverrides(base, [{ key, value, source: `--${key}` }]);
    err(() => over('steps', '1.5'), /^--steps: expected an integer >= 1, got 1.5/);
    err(() => over('flip', 'maybe'), /^--flip: expected true or false, got "maybe"/);
    err(() => over('hidden', '64'), /^--hidden: is an option of the mlp model/);
    err(() => over('channelMult', '1,x'), /^--channelMult: expected a list of integers/);
    assert.deepEqual((over('channelMult', '1,2,4').model as { channelMult: number[] }).channelMult, [1, 2, 4]);
    assert.equal(over('gradClip', 'none').gradClip, null);
    const mlp: TrainConfig = applyOverrides(base, [
      { key: 'hidden', value: '64', source: '--hidden' },
      { key: 'model', value: 'mlp', source: '--model' },
    ]);
    assert.deepEqual(mlp.model, { type: 'mlp', hidden: 64 });
  });
  test('objectives, weightings and model edm2: defaults follow the model, and nonsense combinations name the key', () => {
    const err = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof ConfigError && re.test(e.message));
    assert.equal(resolveTrainConfig({ objective: 'ddpm' }).objective, 'eps', "'ddpm' is read as 'eps'");
    const e2 = resolveTrainConfig({ model: 'edm2' });
    assert.deepEqual([e2.objective, e2.lrSchedule, e2.lr], ['edm2', 'inv-sqrt', 1e-2], "edm2's training defaults");
    assert.equal(resolveTrainConfig({ model: 'edm2', objective: 'v', lr: 1e-3 }).lr, 1e-3, 'given values win');
    const base = resolveTrainConfig({});
    const over = (...kv: [string, string][]) =>
      applyOverrides(
        base,
        kv.map(([key, value]) => ({ key, value, source: `--${key}` })),
      );
    const m = over(['model', 'edm2'], ['objective', 'x0'], ['modelChannels', '24']);
    assert.deepEqual([m.objective, m.lrSchedule, m.lr, m.model], ['x0', 'inv-sqrt', 1e-2, { type: 'edm2', modelChannels: 24 }]);
    assert.equal(applyOverrides(m, [{ key: 'model', value: 'unet', source: '--model' }]).lrSchedule, 'cosine', 'back to the unet defaults');
    assert.equal(over(['model', 'edm2'], ['lr', '0.02']).lr, 0.02);
    err(() => over(['objective', 'edm'], ['weighting', 'snr']), /^--weighting: "snr" does not apply to objective edm, which has its own weighting/);
    err(() => over(['model', 'edm2'], ['weighting', 'min-snr']), /^--weighting: "min-snr" does not apply to objective edm2/);
    err(() => over(['weighting', 'snr'], ['minSnrGamma', '2']), /^--minSnrGamma: is 2, but gamma only applies to weighting min-snr/);
    err(() => over(['objective', 'edm2']), /^--objective: edm2 learns u\(sigma\) with the log-variance head of EDM2's network: use model edm2 \(the model is unet\)/);
    err(() => resolveTrainConfig({ weighting: 'snr', objective: 'edm' }, 'run.json'), /^run.json: weighting: "snr" does not apply to objective edm/);
    err(() => over(['numBlocks', '2']), /^--numBlocks: is an option of the edm2 model, but this config trains a unet/);
    err(() => resolveTrainConfig({ model: { type: 'edm2', labelDim: 3 } }), /model.labelDim: is set by the trainer from the data/);
    assert.throws(() => Trainer.create(resolveTrainConfig({ ...TOY, model: { type: 'edm2' }, out: path.join(root, 'x') })), /8gaussians is 2-D point data: use the mlp model/);
  });
  test('data and model must fit', () => {
    assert.throws(() => Trainer.create(resolveTrainConfig({ data: '8gaussians', out: path.join(root, 'x') })), /8gaussians is 2-D point data: use the mlp model/);
    assert.throws(() => Trainer.create(resolveTrainConfig({ ...TOY, classConditional: true, out: path.join(root, 'x') })), /classConditional: is true, but 8gaussians has no class labels/);
    assert.throws(
      () => Trainer.create(resolveTrainConfig({ data: 'cifar', out: path.join(root, 'x') })),
      /data: expected 'fashion-mnist', 'emoji', 'emoji:google', 'emoji:twitter', 'folder:PATH' or a toy/,
    );
  });
});
