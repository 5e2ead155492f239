// Evaluating emoji models in emoji-cnn-v1's space (issue 13): featureNetFor picks the net by
// the model's data; 16 and 32 px images are upsampled to 64 before they are measured (a
// flat color is the same image at every size, so its features must agree exactly); and
// `diffuse eval` on a tiny 16 px emoji model measures it against the emoji training split.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { arange, setNumThreads, tensor, tidy } from '../src/engine';
import { EMOJI_FEATURE_NET_NAME, extractFeatures, FEATURE_NET_NAME, featureNetFor } from '../src/eval/feature-net';
import { runQuick } from './cli-run';

setNumThreads(1);

let root: string;
const saved = process.env.DIFFUSE_CACHE_DIR;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-eval-emoji-'));
  process.env.DIFFUSE_CACHE_DIR = path.join(root, 'cache');
});
after(() => {
  if (saved === undefined) delete process.env.DIFFUSE_CACHE_DIR;
  else process.env.DIFFUSE_CACHE_DIR = saved;
  fs.rmSync(root, { recursive: true, force: true });
});

test('featureNetFor: emoji-cnn-v1 for every emoji data name, fmnist-cnn-v1 otherwise', () => {
  for (const [data, name] of [
    ['emoji', EMOJI_FEATURE_NET_NAME],
    ['emoji:google', EMOJI_FEATURE_NET_NAME],
    ['emoji:twitter', EMOJI_FEATURE_NET_NAME],
    ['fashion-mnist', FEATURE_NET_NAME],
  ]) {
    const fnet = featureNetFor(data);
    assert.equal(fnet.name, name, data);
    fnet.net.dispose();
  }
});

test('16 and 32 px images are upsampled to 64: a flat color gives the features of its 64 px version exactly', () => {
  const fnet = featureNetFor('emoji');
  tidy(() => {
    const colors = tensor([0.3, -0.2, 0.6, -0.5, 0.1, 0.9]).reshape([2, 3, 1, 1]); // two flat colors in [-1, 1]
    const rgb = (size: number) => colors.expand([2, 3, size, size]).contiguous(); // [2, 3, s, s]
    const f64 = extractFeatures(fnet, rgb(64));
    for (const s of [16, 32]) {
      const f = extractFeatures(fnet, rgb(s));
      assert.deepEqual(f.shape, [2, 128]);
      assert.ok(f.sub(f64).abs().max().item() < 1e-5, `${s} px: features differ from the 64 px ones`);
    }
    // ... and the comparison can fail: stripes on the same colors give other features.
    const stripes = arange(64).remainder(2).mul(0.4).reshape([1, 1, 1, 64]); // [1, 1, 1, 64]
    const f8 = extractFeatures(fnet, rgb(64).add(stripes));
    assert.ok(f8.sub(f64).abs().max().item() > 1e-3);
  });
  fnet.net.dispose();
});

test('diffuse eval on a 16 px emoji model: emoji-cnn-v1 against the emoji:google training split', async () => {
  // prettier-ignore
  const tiny = ['--batch-size', '8', '--model-channels', '8', '--groups', '4', '--channel-mult', '1,2', '--attention-resolutions', 'none',
    '--no-mid-attention', '--warmup-steps', '2', '--sample-every', '0', '--checkpoint-every', '0', '--threads', '1'];
  const run = path.join(root, 'run');
  let r = await runQuick(root, 'train', '--data', 'emoji:google', '--image-size', '16', '--steps', '2', ...tiny, '--out', run);
  assert.equal(r.code, 0, r.err);
  r = await runQuick(root, 'eval', run, '--n', '20', '--steps', '2', '--out', path.join(root, 'eval'));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /features emoji-cnn-v1, reference emoji:google train \(\d{4}\)/);
  const report = fs.readdirSync(path.join(root, 'eval')).filter((f) => f.endsWith('.json'));
  assert.ok(report.length > 0, 'a JSON report');
  const json = JSON.parse(fs.readFileSync(path.join(root, 'eval', report[0]), 'utf8')) as { space?: string };
  assert.equal(json.space, EMOJI_FEATURE_NET_NAME);
});

test('diffuse eval --baseline test|noise --data emoji:twitter: the floor lies far below the ceiling; --n beyond the split and bad --data are named', async () => {
  const out = path.join(root, 'baseline');
  const metrics = async (b: string) => {
    const r = await runQuick(root, 'eval', '--baseline', b, '--data', 'emoji:twitter', '--n', '300', '--threads', '1', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`baseline ${b}: 300 images against emoji:twitter train \\(\\d{4}\\) in emoji-cnn-v1`));
    const file = path.join(out, `baseline-${b}_emoji-twitter_n300_seed0.json`);
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { metrics: Record<string, { value: number } | number> }).metrics;
  };
  const value = (m: { value: number } | number) => (typeof m === 'number' ? m : m.value);
  const test = await metrics('test');
  const noise = await metrics('noise');
  assert.ok(value(noise.fd) > 10 * value(test.fd), `fd: test ${value(test.fd)}, noise ${value(noise.fd)}`);
  assert.ok(value(test.accuracy) > 0.7, `accuracy of the test split ${value(test.accuracy)}`);
  for (const [args, re] of [
    [['--n', '800'], /--n 800: the emoji:twitter test split has \d{3} images/],
    [['--data', 'emoji:apple'], /--data: expected 'fashion-mnist', 'emoji', 'emoji:google', 'emoji:twitter', got "emoji:apple"/],
  ] as [string[], RegExp][]) {
    const r = await runQuick(root, 'eval', '--baseline', 'test', '--data', 'emoji:twitter', ...args, '--out', out);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, re);
  }
});
