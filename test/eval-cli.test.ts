// diffuse eval and the guidance flags of diffuse sample, end to end: the 2-D path on a tiny
// toy model (energy, sw2, the exact NLL once per run), sweeps writing their JSON report and
// plots, the image path on the shipped model in the shipped feature space (the test split
// is far closer to the training split than noise is), batching that does not change the
// samples, and usage errors that name the flag.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { memory, setNumThreads, tensor, tidy } from '../src/engine';
import { GaussianMixture } from '../src/data/mixture';
import { Denoiser } from '../src/core/denoiser';
import { fashionReference, generateInBatches, quantize } from '../src/eval/evaluate';
import { loadFeatureNet } from '../src/eval/feature-net';
import { resolveTrainConfig } from '../src/training/config';
import { defaultReportDir } from '../src/cli/eval';
import { shippedModelDir } from '../src/cli/sample';
import { runQuick } from './cli-run';

setNumThreads(1);
let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-eval-'));
  process.env.DIFFUSE_CACHE_DIR = path.join(root, 'cache'); // the reference cache starts empty and stays out of ~/.cache
});
after(() => fs.rmSync(root, { recursive: true, force: true }));
const quick = (...args: string[]) => runQuick(root, ...args);

const shipped = path.join(__dirname, '..', '..', 'models', 'fashion-mnist', 'checkpoint.json');

describe('generateInBatches', () => {
  test('the batch size changes memory, not the samples; quantize rounds to 8 bits', () => {
    const gmm = GaussianMixture.ring(4, { radius: 1, std: 0.2 });
    const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
    const meta = { config: { ...resolveTrainConfig({ data: '8gaussians', model: { type: 'mlp' }, objective: 'edm' }), classConditional: false }, sampleShape: [2] };
    const before = memory().tensors;
    const spec = { n: 10, seed: 3, steps: 4, labels: null, sampler: 'euler-ancestral', grid: 'karras' };
    const a = generateInBatches(D, meta, { ...spec, batchSize: 3 });
    const b = generateInBatches(D, meta, { ...spec, batchSize: 10 });
    assert.deepEqual(Array.from(a.toFloat64Array()), Array.from(b.toFloat64Array()));
    a.dispose();
    b.dispose();
    assert.equal(memory().tensors, before);
    const q = tidy(() => Array.from(quantize(tensor([-1, 1, 0.5, -2, 3])).toFloat64Array()));
    assert.deepEqual(q, [0, 255, 191, 0, 255]); // (x + 1) 127.5, rounded, clamped
  });
});

describe('diffuse eval on a 2-D model', () => {
  let toy: string;
  before(async () => {
    toy = path.join(root, 'toy');
    const r = await quick(
      'train',
      '--data',
      '8gaussians',
      '--model',
      'mlp',
      '--hidden',
      '32',
      '--depth',
      '2',
      '--batch-size',
      '64',
      '--steps',
      '30',
      '--warmup-steps',
      '2',
      '--sample-every',
      '0',
      '--checkpoint-every',
      '0',
      '--threads',
      '1',
      '--out',
      toy,
    );
    assert.equal(r.code, 0, r.err);
  });

  test('a steps sweep: one row per setting, the NLL computed once, a JSON report and plots', async () => {
    const r = await quick('eval', toy, '--sampler', 'heun', '--grid', 'karras', '--steps', '2,4', '--n', '200', '--threads', '1');
    assert.equal(r.code, 0, r.err);
    const json = /wrote (\S+\.json)/.exec(r.out)![1];
    assert.equal(path.dirname(json), path.join(toy, 'eval'), "a user's run keeps its reports in its folder");
    const rows = JSON.parse(fs.readFileSync(json, 'utf8')) as { steps: number; nfe: number; sampler: string; seed: number; n: number; space: string; metrics: Record<string, { value: number }> }[];
    assert.deepEqual(
      rows.map((x) => [x.steps, x.nfe]),
      [
        [2, 3],
        [4, 7],
      ],
    ); // heun: 2N - 1
    for (const x of rows) {
      assert.equal(x.sampler, 'heun');
      assert.equal(x.n, 200);
      assert.equal(x.seed, 0);
      assert.equal(x.space, 'data');
      for (const m of ['energy', 'sw2', 'nll']) assert.ok(Number.isFinite(x.metrics[m].value), `${m} finite`);
    }
    assert.equal(rows[0].metrics.nll.value, rows[1].metrics.nll.value, "the NLL is the model's, whatever the sampler");
    for (const m of ['energy', 'sw2', 'nll']) assert.ok(fs.existsSync(json.replace(/\.json$/, `_${m}.png`)), `${m} plot`);
  });

  test('usage errors name the flag', async () => {
    for (const [args, re] of [
      [['--steps', '0'], /--steps: expected integers/],
      [['--steps', '2,x'], /--steps: expected integers/],
      [['--sampler', 'eulr'], /--sampler: unknown sampler "eulr" \(did you mean euler\?\)/],
      [['--guidance', '2'], /guidance needs class labels/],
      [['--baseline', 'train'], /--baseline: expected 'test' or 'noise'/],
      [['--n', '1'], /--n: expected an integer in \[2,/],
      [['-n', '1'], /--n: expected an integer in \[2,/],
      [['--batch-size', '0'], /--batch-size: expected an integer in \[1, 1000000\], got "0"/],
      [['--batch-size', '2', '--batch', '2'], /give --batch-size or --batch \(its old name\), not both/],
    ] as [string[], RegExp][]) {
      const r = await quick('eval', toy, ...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
    }
  });
});

describe('diffuse eval on the shipped model', () => {
  test('the test split is far closer to the training split than noise is (fd, kid, recall)', async () => {
    const t = await quick('eval', '--baseline', 'test', '--n', '500', '--threads', '1');
    const z = await quick('eval', '--baseline', 'noise', '--n', '500', '--threads', '1');
    assert.equal(t.code, 0, t.err);
    assert.equal(z.code, 0, z.err);
    assert.match(t.out, /features computed, cached in \S+eval-reference/);
    assert.match(z.out, /from the cache/);
    const read = (out: string) => JSON.parse(fs.readFileSync(path.join(root, /wrote (\S+\.json)/.exec(out)![1]), 'utf8')).metrics as Record<string, { value: number }>;
    const [mt, mz] = [read(t.out), read(z.out)];
    assert.ok(mz.fd.value > 20 * mt.fd.value, `fd: noise ${mz.fd.value} vs test ${mt.fd.value}`);
    assert.ok(mz.kid.value > 20 * Math.max(mt.kid.value, 1e-4), `kid: noise ${mz.kid.value} vs test ${mt.kid.value}`);
    // Precision alone does not reject noise here: noise images land inside a corner of the real
    // manifold of this classifier's feature space (docs/evaluation.md); recall does reject it.
    assert.ok(mt.precision.value > 0.8 && mt.recall.value > 0.8, `test split: precision ${mt.precision.value}, recall ${mt.recall.value}`);
    assert.ok(mz.recall.value < 0.05, `noise recall ${mz.recall.value}`);
    assert.ok(mt.accuracy.value > 0.85, `the feature net classifies the test split: ${mt.accuracy.value}`);
  });

  test('the reference features are cached: read back exactly, recomputed when damaged or turned off', () => {
    const fnet = loadFeatureNet();
    const cache = path.join(root, 'ref-cache');
    const opts = { split: 'test' as const, subset: 300, seed: 5, cache };
    const a = fashionReference(fnet, opts);
    const b = fashionReference(fnet, opts);
    const c = fashionReference(fnet, { ...opts, cache: false });
    try {
      assert.equal(a.source, 'computed');
      assert.equal(b.source, 'cache');
      assert.equal(b.cacheFile, a.cacheFile);
      assert.equal(c.source, 'computed');
      assert.equal(c.cacheFile, undefined);
      for (const r of [b, c]) {
        assert.deepEqual(Array.from(r.stats.mu), Array.from(a.stats.mu));
        assert.deepEqual(Array.from(r.stats.sigma), Array.from(a.stats.sigma));
        assert.equal(r.stats.n, 10_000);
        assert.equal(r.stats.space, 'fmnist-cnn-v1');
        assert.deepEqual(r.feats.shape, [300, fnet.dim]);
        assert.deepEqual(Array.from(r.feats.toFloat64Array()), Array.from(a.feats.toFloat64Array()));
      }
      // Another seed is another file; a damaged file is recomputed and rewritten.
      const d = fashionReference(fnet, { ...opts, seed: 6 });
      assert.notEqual(d.cacheFile, a.cacheFile);
      d.dispose();
      fs.writeFileSync(a.cacheFile!, 'not a safetensors file');
      const e = fashionReference(fnet, opts);
      assert.equal(e.source, 'computed');
      assert.deepEqual(Array.from(e.feats.toFloat64Array()), Array.from(a.feats.toFloat64Array()));
      e.dispose();
      const f = fashionReference(fnet, opts);
      assert.equal(f.source, 'cache');
      f.dispose();
    } finally {
      for (const r of [a, b, c]) r.dispose();
      fnet.net.dispose();
    }
  });

  test('reports for a shipped model go under the working directory (runs/eval/NAME), never into models/', async () => {
    assert.equal(defaultReportDir(shippedModelDir()), path.join('runs', 'eval', 'fashion-mnist'));
    assert.equal(defaultReportDir(path.join(root, 'my-run')), path.join(root, 'my-run', 'eval'));
    const inPackage = path.join(path.dirname(shipped), 'eval');
    const listing = () => (fs.existsSync(inPackage) ? fs.readdirSync(inPackage).sort() : []);
    const before = listing();
    const r = await quick('eval', '-n', '20', '--batch-size', '7', '--steps', '1', '--sampler', 'euler', '--threads', '1');
    assert.equal(r.code, 0, r.err);
    const json = /wrote (\S+\.json)/.exec(r.out)![1];
    assert.equal(path.dirname(json), path.join('runs', 'eval', 'fashion-mnist'));
    assert.ok(fs.existsSync(path.join(root, json)), `${json} in the working directory`);
    assert.deepEqual(listing(), before, 'nothing written into models/fashion-mnist');
    assert.equal(JSON.parse(fs.readFileSync(path.join(root, json), 'utf8')).n, 20);
  });

  test('a guided run records its guidance and scores the requested classes', async () => {
    const out = path.join(root, 'ev');
    const r = await quick('eval', '--n', '20', '--batch', '10', '--steps', '3', '--sampler', 'dpmpp-2m', '--guidance', '1,2', '--threads', '1', '--out', out);
    assert.equal(r.code, 0, r.err);
    const rows = JSON.parse(fs.readFileSync(/wrote (\S+\.json)/.exec(r.out)![1], 'utf8')) as {
      guidance: number;
      guidanceType: string;
      nfe: number;
      space: string;
      metrics: Record<string, { value: number }>;
    }[];
    assert.deepEqual(
      rows.map((x) => [x.guidance, x.guidanceType, x.nfe]),
      [
        [1, 'cfg', 3], // w = 1 is the conditional model: one evaluation per step
        [2, 'cfg', 6], // batched CFG: the conditional and unconditional rows, 2 per step
      ],
    );
    for (const x of rows) {
      assert.equal(x.space, 'fmnist-cnn-v1');
      for (const m of ['fd', 'kid', 'precision', 'recall', 'accuracy']) assert.ok(Number.isFinite(x.metrics[m].value), m);
      assert.ok(x.metrics.accuracy.value >= 0 && x.metrics.accuracy.value <= 1);
    }
  });
});

describe('diffuse sample --guidance', () => {
  test('cfg runs and says so; wrong combinations are usage errors naming the flag', async () => {
    const r = await quick('sample', '--n', '2', '--steps', '2', '--guidance', '2', '--threads', '1', '--out', 'g.png');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /cfg w = 2, 4 denoiser evaluations/); // batched CFG: 2 network evaluations per step
    for (const [args, re] of [
      [['--guidance-type', 'auto'], /--guidance-type needs --guidance W/],
      [['--guidance', '2', '--guidance-type', 'auto'], /needs --guide-checkpoint DIR/],
      [['--guidance', '2', '--guidance-type', 'magic'], /--guidance-type: expected 'cfg' or 'classifier' or 'auto'/],
      [['--guidance', '2', '--class', 'none'], /--class none \(unconditional\) has none to steer toward/],
      [['--guidance', '1,2'], /--guidance: expected one number/],
      [['--guidance', '2', '--guidance-interval', '3,1'], /--guidance-interval: need LO < HI/],
      [['--guidance', '2', '--guidance-rescale', '0.5', '--guidance-type', 'classifier'], /--guidance-rescale applies to --guidance-type cfg/],
    ] as [string[], RegExp][]) {
      const e = await quick('sample', '--n', '1', '--steps', '1', ...args);
      assert.equal(e.code, 2, `${args.join(' ')}: ${e.err}`);
      assert.match(e.err, re);
    }
  });
});

describe('diffuse eval --nll on the shipped model', () => {
  const model = path.dirname(shipped);
  test('ODE bits/dim of 2 test images (one RK4 step: the plumbing, not the number): a table and a JSON report', async () => {
    const out = path.join(root, 'nll');
    const r = await quick('eval', model, '--nll', 'ode', '--n', '2', '--ode-steps', '1', '--probes', '2', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /method\s+bits\/dim/);
    assert.match(r.out, /ode\s+-?\d/);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'nll-ode_n2_seed0.json'), 'utf8'));
    assert.equal(report.kind, 'nll');
    assert.equal(report.dims, 1024);
    assert.equal(report.conditioning, 'none');
    assert.equal(report.ode.trace, 'hutchinson');
    assert.ok(Number.isFinite(report.ode.bitsPerDim.value) && report.ode.bitsPerDim.stderr > 0 && report.ode.traceStderr > 0);
    assert.equal(report.vlb, undefined);
  });

  test('usage errors name the flag and the value', async () => {
    for (const [args, re] of [
      [['--nll', 'elbo'], /--nll: expected 'vlb' or 'ode' or 'both', got "elbo"/],
      [['--nll', 'ode', '--trace', 'exakt'], /--trace: expected 'hutchinson' or 'exact', got "exakt"/],
      [['--nll', 'ode', '--trace', 'exact'], /--trace exact: 1024 dimensions/],
      [['--nll', 'ode', '--class', 'Bag'], /--class: expected 'none' or 'label', got "Bag"/],
      [['--nll', 'vlb', '--sampler', 'euler'], /--sampler does not apply to --nll/],
      [['--nll', 'ode', '--probes', '0'], /--probes: expected an integer/],
      [['--nll', 'ode', '--n', '10001'], /--n: expected an integer in \[2, 10000\]/],
    ] as [string[], RegExp][]) {
      const r = await quick('eval', model, ...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
    }
  });
});
