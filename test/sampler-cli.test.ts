// Every sampler from a config and from the command line: the default path (DDPM ancestral,
// 100 trailing steps, x0 clipped) is bit-identical to the implementation it replaced and
// reproduces the shipped samples.png; the named grids; runSampler's option checks; every
// sampler through `diffuse sample` on the shipped model (NFE printed = info.evals(steps));
// usage errors naming the flag; `diffuse samplers` listing the registry; batched sampling
// (the same bits for any batch size, memory flat in n, NFE per sample) and --batch-size / -n.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { full, memory, noGrad, setNumThreads, tensor, Tensor, tidy, zeros, Generator } from '../src/engine';
import { Denoiser } from '../src/core/denoiser';
import { discreteVPDenoiser } from '../src/core/precond';
import { discreteVP, linearBetas, tToSigma } from '../src/core/schedules';
import { decodeImage } from '../src/data/image-codec';
import {
  clipDenoiser,
  discreteSigmas,
  evalsFormula,
  gridModel,
  gridNames,
  GRIDS,
  gridSigmas,
  karrasSigmas,
  randnLike,
  runSampler,
  sampleDDPM,
  samplerParamError,
  SAMPLERS,
  seededNoise,
} from '../src/sampling';
import { classifierFreeGuidance } from '../src/guidance';
import { GaussianMixture } from '../src/data/mixture';
import { countEvaluations } from '../src/sampling/generate';
import { buildDenoiser, buildNetwork, DenoiserNet, generateSamples, materializeConfig, networkSpec, samplingSigmas } from '../src/training/build';
import { resolveTrainConfig, TrainConfig } from '../src/training/config';
import { loadModel } from '../src/training/checkpoint';
import { imageGrid } from '../src/util/image';
import { runQuick } from './cli-run';

setNumThreads(1);

const same = (a: Tensor, b: Tensor) => assert.deepEqual(Array.from(a.toFloat64Array()), Array.from(b.toFloat64Array()));

/** A tiny class-conditional DDPM U-Net on 1 x 8 x 8 images (random weights). */
function tinyModel(objective: 'ddpm' | 'edm' = 'ddpm'): { config: TrainConfig; net: DenoiserNet; D: Denoiser } {
  const data = { kind: 'images' as const, shape: [1, 8, 8], classNames: ['a', 'b'] };
  const config = materializeConfig(resolveTrainConfig({ objective, model: { type: 'unet', modelChannels: 8, groups: 4, channelMult: [1, 2], attentionResolutions: [], midAttention: false } }), data);
  const net = buildNetwork(networkSpec(config, data), { generator: new Generator(3) });
  net.eval();
  return { config, net, D: buildDenoiser(config, net) };
}

/** generateSamples as it was before samplers and grids became options (the frozen reference). */
function previousGenerateSamples(
  D: Denoiser,
  config: TrainConfig,
  { shape, n, seed, steps = 100, labels, variance = 'beta' }: { shape: number[]; n: number; seed: number; steps?: number; labels: number[] | null; variance?: 'beta' | 'posterior' },
): Tensor {
  const sigmas = discreteSigmas(discreteVP(linearBetas(config.timesteps)), steps, { spacing: 'trailing' });
  const noise = seededNoise(seed, n);
  try {
    return noGrad(() =>
      tidy(() => {
        const xT = randnLike(noise, zeros([n, ...shape])).mul(sigmas.select(0, 0).item());
        const cond = labels ? { classLabels: tensor(labels, { dtype: 'int64' }) } : undefined;
        return sampleDDPM(D, xT, sigmas, { generator: noise, cond, clipDenoised: shape.length === 3 ? [-1, 1] : null, variance });
      }),
    );
  } finally {
    sigmas.dispose();
  }
}

describe('generateSamples: the default path is unchanged', () => {
  test('bit-identical to the previous implementation (tiny U-Net, both variances)', () => {
    const { config, net, D } = tinyModel();
    try {
      for (const variance of ['beta', 'posterior'] as const) {
        const opts = { shape: [1, 8, 8], n: 3, seed: 11, steps: 7, labels: [0, 1, 2], variance };
        const before = previousGenerateSamples(D, config, opts);
        const now = generateSamples(D, config, opts);
        const explicit = generateSamples(D, config, { ...opts, sampler: 'ddpm', grid: 'trailing', clip: true });
        same(now, before);
        same(explicit, before);
        const unclipped = generateSamples(D, config, { ...opts, clip: false });
        assert.notDeepEqual(Array.from(unclipped.toFloat64Array()), Array.from(before.toFloat64Array()), "clip: false must change a random network's samples");
        [before, now, explicit, unclipped].forEach((t) => t.dispose());
      }
    } finally {
      net.dispose();
    }
  });

  const shipped = path.join(__dirname, '..', '..', 'models', 'fashion-mnist');
  test('reproduces the first two cells of the shipped samples.png (diffuse sample --n 100 --scale 2)', () => {
    const { meta, net, denoiser } = loadModel(shipped);
    try {
      const x = generateSamples(denoiser, meta.config, { shape: meta.sampleShape, n: 2, seed: 0, labels: [0, 1] }); // images 0 and 1: seeds 0, 1; classes 0, 1
      const ours = imageGrid(x, { ncol: 2, scale: 2 });
      x.dispose();
      const grid = decodeImage(fs.readFileSync(path.join(shipped, 'samples.png')), 'samples.png');
      let [maxDiff, differ] = [0, 0];
      for (let y = 0; y < ours.height; y++)
        for (let xx = 0; xx < ours.width; xx++) {
          const d = Math.abs(ours.data[y * ours.width + xx] - grid.rgba[(y * grid.width + xx) * 4]);
          maxDiff = Math.max(maxDiff, d);
          differ += d > 0 ? 1 : 0;
        }
      // The grid was drawn with the default thread count; a different one may round a pixel the other way.
      assert.ok(maxDiff <= 1 && differ <= 0.01 * ours.width * ours.height, `max pixel difference ${maxDiff}, ${differ} pixels differ`);
    } finally {
      net.dispose();
    }
  });

  test('every sampler and grid runs from a config, frees its tensors, and is deterministic in the seed', () => {
    const { config, net, D } = tinyModel();
    try {
      const opts = { shape: [1, 8, 8], n: 2, seed: 4, steps: 3, labels: [0, 2] };
      const before = memory().tensors;
      for (const sampler of Object.keys(SAMPLERS)) {
        const a = generateSamples(D, config, { ...opts, sampler, grid: 'karras' });
        const b = generateSamples(D, config, { ...opts, sampler, grid: 'karras' });
        assert.deepEqual(a.shape, [2, 1, 8, 8]);
        assert.ok(tidy(() => a.abs().max().item()) <= 1 + 1e-6 || sampler !== 'ddpm', `${sampler}: clipped x0`);
        same(a, b);
        a.dispose();
        b.dispose();
      }
      for (const grid of Object.keys(GRIDS)) generateSamples(D, config, { ...opts, sampler: 'euler', grid }).dispose();
      assert.equal(memory().tensors, before, 'live tensors after sampling');
    } finally {
      net.dispose();
    }
  });
});

describe('named grids', () => {
  const ddpm = discreteVP(linearBetas());
  const edm = gridModel(null);
  const dm = gridModel(ddpm);

  test('every grid: N + 1 values, strictly decreasing, ending in 0, within its range', () => {
    for (const model of [dm, edm])
      for (const name of gridNames(model))
        for (const N of [1, 5, 20]) {
          const s = Array.from(gridSigmas(name, N, model).toFloat64Array());
          assert.equal(s.length, N + 1, name);
          assert.equal(s[N], 0);
          for (let i = 0; i + 1 < N; i++) assert.ok(s[i] > s[i + 1], `${name}: ${s}`);
          const [lo, hi] = name === 'vp' ? [0.0104, 153] : [model.sigmaMin * (1 - 1e-9), model.sigmaMax * (1 + 1e-9)];
          assert.ok(s[0] <= hi && s[N - 1] >= lo, `${name}, N = ${N}: ${s[0]} .. ${s[N - 1]} not in [${lo}, ${hi}]`);
        }
  });

  test('ranges: karras spans the model table sigma_0 .. sigma_{T-1} (DDPM) or 0.002 .. 80 (EDM); log-snr is exponential', () => {
    const k = Array.from(gridSigmas('karras', 10, dm).toFloat64Array());
    assert.ok(Math.abs(k[0] - ddpm.sigmas[999]) < 1e-12 * k[0]); // (a^(1/7))^7
    assert.ok(Math.abs(k[9] - ddpm.sigmas[0]) < 1e-15);
    assert.deepEqual(Array.from(gridSigmas('karras', 10, edm).toFloat64Array()), Array.from(karrasSigmas(10).toFloat64Array()));
    const e = gridSigmas('exponential', 7, dm).toFloat64Array();
    const l = gridSigmas('log-snr', 7, dm).toFloat64Array();
    e.forEach((v, i) => assert.ok(Math.abs(v - l[i]) <= 1e-12 * v, `${v} vs ${l[i]}`));
  });

  test('uniform-t on a DDPM model: at N = T it is the whole table; between steps, log-sigma interpolation', () => {
    const all = gridSigmas('uniform-t', 1000, dm).toFloat64Array();
    for (let i = 0; i < 1000; i++) assert.ok(Math.abs(all[i] - ddpm.sigmas[999 - i]) <= 1e-12 * ddpm.sigmas[999 - i], `step ${i}`);
    const two = gridSigmas('uniform-t', 3, dm).toFloat64Array(); // t = 999, 499.5, 0
    assert.ok(Math.abs(two[1] - Math.sqrt(ddpm.sigmas[499] * ddpm.sigmas[500])) < 1e-12 * two[1]);
    const edmT = Array.from(gridSigmas('uniform-t', 3, edm).toFloat64Array()); // EDM: sigma(t) = t, evenly spaced
    assert.ok(Math.abs(edmT[1] - (80 + 0.002) / 2) < 1e-9, `${edmT}`);
  });

  test('spacings need a discrete model; unknown names are listed', () => {
    assert.deepEqual(Array.from(gridSigmas('leading', 4, dm).toFloat64Array()), Array.from(discreteSigmas(ddpm, 4, { spacing: 'leading' }).toFloat64Array()));
    assert.throws(() => gridSigmas('trailing', 4, edm), /grid "trailing" is a timestep spacing: it needs a discrete-timestep \(ddpm\) model; for this one choose one of: karras, exponential/);
    assert.throws(() => gridSigmas('cosine', 4, dm), /unknown grid "cosine"; choose one of: karras, .*linspace/);
    assert.deepEqual(
      gridNames(edm),
      Object.keys(GRIDS).filter((g) => !GRIDS[g].discreteOnly),
    );
  });

  test('samplingSigmas: the config default grid (trailing for DDPM, karras for EDM), T bounds the spacing grids only', () => {
    const c = tinyModel();
    c.net.dispose();
    same(samplingSigmas(c.config, 10), discreteSigmas(ddpm, 10, { spacing: 'trailing' }));
    assert.throws(() => samplingSigmas(c.config, 1001), /sampling steps must be an integer in \[1, 1000\]/);
    assert.equal(samplingSigmas(c.config, 1001, 'karras').size, 1002);
    const e = tinyModel('edm');
    e.net.dispose();
    same(samplingSigmas(e.config, 10), karrasSigmas(10));
  });
});

describe('the discrete-VP denoiser between its table steps', () => {
  test('tells the network a fractional t (log-sigma interpolation), clamped to [0, T - 1] outside the table', () =>
    tidy(() => {
      const ddpm = discreteVP(linearBetas());
      const seen: number[] = [];
      const D = discreteVPDenoiser((xIn, t) => (seen.push(...t.toFloat64Array()), xIn.mul(0)), ddpm);
      const s = ddpm.sigmas;
      const sigma = tensor([Math.sqrt(s[10] * s[11]), s[10], s[0] / 2, s[999] * 2, Math.exp(0.25 * Math.log(s[500]) + 0.75 * Math.log(s[501]))], { dtype: 'float64' });
      D(zeros([5, 1]), sigma);
      const want = [10.5, 10, 0, 999, 500.75];
      seen.forEach((t, i) => assert.ok(Math.abs(t - want[i]) < 1e-4, `t = ${t}, want ${want[i]}`)); // float32 on the way in
      assert.ok(Math.abs(tToSigma(ddpm, tensor([10.5])).item() - sigma.toFloat64Array()[0]) < 1e-12);
    }));
});

describe('runSampler', () => {
  const D: Denoiser = (x) => x.mul(0.5);
  test('checks options against the sampler: eta, churn, variance', () => {
    assert.match(samplerParamError('euler', { eta: 1 })!.message, /sampler "euler" takes no eta; the samplers with eta: ddim, euler-ancestral, dpmpp-2m-sde, dpmpp-3m-sde/);
    assert.match(samplerParamError('ddim', { eta: 1.5 })!.message, /ddim's eta must be in \[0, 1\], got 1.5/);
    assert.equal(samplerParamError('dpmpp-2m-sde', { eta: 1.5 }), null);
    assert.match(samplerParamError('dpmpp-2m', { churn: { S_churn: 1 } })!.message, /takes no churn; the samplers with churn: euler, heun, heun-churn/);
    assert.match(samplerParamError('heun', { churn: { S_tmin: 5, S_tmax: 1 } })!.message, /need 0 <= S_tmin <= S_tmax/);
    assert.match(samplerParamError('ddim', { variance: 'beta' })!.message, /samplers with variance: ddpm/);
    assert.throws(() => runSampler('euler', D, zeros([1, 2]), karrasSigmas(2), { generator: new Generator(0), eta: 1 }), /runSampler: eta: sampler "euler" takes no eta/);
    assert.throws(() => runSampler('nope', D, zeros([1, 2]), karrasSigmas(2), { generator: new Generator(0) }), /unknown sampler "nope"/);
  });

  test('options reach the sampler; heun-churn keeps its defaults for the fields not given', () =>
    tidy(() => {
      const xT = full([2, 3], 10);
      const run = (name: string, o: object) => runSampler(name, D, xT, karrasSigmas(4, { sigmaMax: 10 }), { generator: new Generator(5), ...o });
      same(run('heun-churn', { churn: { S_noise: 1.003 } }), run('heun', { churn: { S_churn: 40, S_tmin: 0.05, S_tmax: 50, S_noise: 1.003 } }));
      assert.notDeepEqual(Array.from(run('heun-churn', {}).toFloat64Array()), Array.from(run('heun', {}).toFloat64Array()));
      const close = (a: Tensor, b: Tensor) => assert.ok(a.sub(b).abs().max().item() < 1e-5, `${a.toFloat64Array().join(',')} vs ${b.toFloat64Array().join(',')}`);
      close(run('euler-ancestral', { eta: 0 }), run('euler', {})); // eta reaches the sampler: 0 makes it deterministic
      close(run('dpmpp-2m-sde', { eta: 0 }), run('dpmpp-2m', {}));
      assert.ok(run('dpmpp-2m-sde', { eta: 1 }).sub(run('dpmpp-2m', {})).abs().max().item() > 1e-3);
    }));

  test('clip wraps the denoiser: x0 estimates clamped, for any sampler', () =>
    tidy(() => {
      const big: Denoiser = (x) => x.mul(0).add(3);
      const c = clipDenoiser(big, [-1, 1]);
      assert.deepEqual(Array.from(c(zeros([2]), tensor([1, 1])).toFloat64Array()), [1, 1]);
      const x = runSampler('dpmpp-2m', big, full([1, 2], 5), karrasSigmas(3, { sigmaMax: 5 }), { generator: new Generator(0), clip: [-1, 1] });
      assert.ok(Math.abs(x.max().item() - 1) < 1e-6, `${x.toFloat64Array().join(',')}`);
    }));

  test('evalsFormula reads the registry', () => {
    assert.equal(evalsFormula(SAMPLERS.heun.info), '2N - 1');
    assert.equal(evalsFormula(SAMPLERS.euler.info), 'N');
  });
});

describe('batched sampling', () => {
  // A class-conditional 2-D model with an exact denoiser: the ring mixture, one class per component.
  const gmm = GaussianMixture.ring(4, { radius: 1, std: 0.2 });
  after(() => gmm.dispose());
  const Dm: Denoiser = (x, sigma, cond) => gmm.denoise(x, sigma, cond);
  const mixConfig = { ...resolveTrainConfig({ data: '8gaussians', model: { type: 'mlp' }, objective: 'edm' }), classConditional: true } as TrainConfig;
  const n = 7;
  const labels = [0, 1, 2, 3, 0, 1, 2];
  const bits = (x: Tensor) => Array.from(x.toFloat64Array());

  test('the same samples bit for bit for batch sizes 1, 3 and n: deterministic and stochastic samplers, with and without guidance', () => {
    const guided = classifierFreeGuidance(Dm, { scale: 2.5, nullClass: 4 }); // one batched evaluation of [2B]: conditional and null-class rows
    const before = memory().tensors;
    for (const [name, D] of [
      ['unguided', Dm],
      ['cfg w = 2.5', guided],
    ] as const) {
      for (const sampler of ['dpmpp-2m', 'dpmpp-2m-sde', 'euler-ancestral', 'heun-churn']) {
        const at = (batchSize: number) => generateSamples(D, mixConfig, { shape: [2], n, seed: 11, steps: 6, labels, sampler, grid: 'karras', batchSize });
        const [a, b, c] = [at(1), at(3), at(n)];
        try {
          assert.deepEqual(bits(b), bits(a), `${sampler}, ${name}: batch 3 vs 1`);
          assert.deepEqual(bits(c), bits(a), `${sampler}, ${name}: batch ${n} vs 1`);
          // and sample i is the first sample of seed 11 + i: the 1-sample run at that seed.
          const one = generateSamples(D, mixConfig, { shape: [2], n: 1, seed: 11 + 5, steps: 6, labels: [labels[5]], sampler, grid: 'karras' });
          assert.deepEqual(bits(one), bits(a).slice(10, 12), `${sampler}, ${name}: sample 5 alone`);
          one.dispose();
        } finally {
          [a, b, c].forEach((t) => t.dispose());
        }
      }
    }
    assert.equal(memory().tensors, before);
  });

  test('a U-Net: the same samples up to the rounding of its batch-shaped kernels (oneDNN, OpenBLAS), guided DDPM ancestral', () => {
    // The noise is the same bits in any batching (the mixture test above); the network is not bit-exact
    // across batch shapes (conv and matmul kernels are chosen by shape), so images agree to ~1e-6, not 1e-1
    // as they would if a sample drew another sample's noise.
    const { config, net, D } = tinyModel();
    try {
      const G = classifierFreeGuidance(D, { scale: 2, nullClass: 2 });
      const at = (batchSize: number) => generateSamples(G, config, { shape: [1, 8, 8], n: 5, seed: 4, steps: 3, labels: [0, 1, 0, 1, 0], batchSize, clip: false });
      const [a, b, c] = [at(1), at(3), at(5)];
      const maxDiff = (p: Tensor, q: Tensor) => tidy(() => p.sub(q).abs().max().item());
      assert.ok(maxDiff(a, b) < 1e-4 && maxDiff(a, c) < 1e-4, `max |diff| ${maxDiff(a, b)}, ${maxDiff(a, c)}`);
      const other = generateSamples(G, config, { shape: [1, 8, 8], n: 5, seed: 5, steps: 3, labels: [0, 1, 0, 1, 0], batchSize: 5, clip: false });
      assert.ok(maxDiff(a.narrow(0, 1, 4), other.narrow(0, 0, 4)) < 1e-4, 'seed 5 = samples 1.. of seed 4');
      assert.ok(maxDiff(a, other) > 0.1, 'another seed is another sample');
      [a, b, c, other].forEach((t) => t.dispose());
    } finally {
      net.dispose();
    }
  });

  test('memory is flat in n: the live tensors and bytes of a step do not grow with the number of samples', () => {
    const peak = (count: number) => {
      const base = memory();
      let tensors = 0;
      let bytes = 0;
      const x = generateSamples(Dm, mixConfig, {
        shape: [2],
        n: count,
        seed: 0,
        steps: 4,
        labels: null,
        sampler: 'dpmpp-2m-sde',
        grid: 'karras',
        batchSize: 8,
        onStep: () => {
          const m = memory();
          tensors = Math.max(tensors, m.tensors - base.tensors);
          bytes = Math.max(bytes, m.bytes - base.bytes - count * 2 * 4); // the result ([count, 2] float32) is allocated once; the rest is working memory
        },
      });
      x.dispose();
      assert.deepEqual([memory().tensors, memory().bytes], [base.tensors, base.bytes], 'nothing left behind');
      return { tensors, bytes };
    };
    const small = peak(24);
    const large = peak(400);
    assert.equal(large.tensors, small.tensors, 'live tensors at the peak');
    assert.ok(large.bytes <= small.bytes, `working bytes: ${large.bytes} for n = 400 vs ${small.bytes} for n = 24`);
  });

  test("NFE per sample is the sampler's count whatever the batch size; bad batch sizes are errors naming the value", () => {
    for (const batchSize of [1, 3, 7]) {
      const c = countEvaluations(Dm);
      generateSamples(c.denoiser, mixConfig, { shape: [2], n, seed: 0, steps: 5, labels, sampler: 'heun', grid: 'karras', batchSize }).dispose();
      assert.equal(c.nfe(n), SAMPLERS.heun.info.evals(5), `batch ${batchSize}`);
      assert.equal(c.calls, Math.ceil(n / batchSize) * SAMPLERS.heun.info.evals(5));
    }
    assert.throws(() => generateSamples(Dm, mixConfig, { shape: [2], n, seed: 0, labels, batchSize: 0 }), /batchSize must be a positive integer, got 0/);
    assert.throws(() => generateSamples(Dm, mixConfig, { shape: [2], n, seed: 0, labels, batchSize: 2.5 }), /batchSize must be a positive integer, got 2.5/);
  });
});

describe('the CLI', () => {
  let root: string;
  before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-sampler-cli-'))));
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  const quick = (...args: string[]) => runQuick(root, ...args);

  test('every sampler on the shipped model writes a PNG and prints its NFE = info.evals(steps)', async () => {
    const steps = 3;
    for (const [name, { info }] of Object.entries(SAMPLERS)) {
      const grid = name === 'ddim' ? 'leading' : 'karras';
      const r = await quick('sample', '--sampler', name, '--grid', grid, '--steps', String(steps), '--n', '2', '--threads', '1', '--out', `${name}.png`);
      assert.equal(r.code, 0, `${name}: ${r.err}`);
      const m = /(\d+) denoiser evaluations \(NFE\)/.exec(r.out);
      assert.ok(m, r.out);
      assert.equal(Number(m[1]), info.evals(steps), `${name}: NFE`);
      assert.match(r.out, new RegExp(`sampler ${name} on the ${grid} grid`));
      const img = decodeImage(fs.readFileSync(path.join(root, `${name}.png`)), name);
      assert.deepEqual([img.width, img.height], [2 * 34 + 2, 34 + 2], name); // 2 images, 10 columns requested -> 2
    }
  });

  test('the options: --eta, --churn, --variance, --no-clip', async () => {
    for (const args of [
      ['--sampler', 'ddim', '--eta', '0.5'],
      ['--sampler', 'heun', '--churn', '10', '--s-tmax', 'inf'],
      ['--sampler', 'ddpm', '--variance', 'posterior', '--grid', 'uniform-t'],
      ['--sampler', 'euler', '--no-clip', '--grid', 'vp'],
    ]) {
      const r = await quick('sample', ...args, '--steps', '2', '--n', '1', '--out', 'opt.png');
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
    }
  });

  test('--batch-size does not change the images beyond kernel rounding (guided, stochastic sampler); -n is --n', async () => {
    const run = async (dir: string, ...args: string[]) => {
      const r = await quick('sample', ...args, '--sampler', 'dpmpp-2m-sde', '--steps', '2', '--guidance', '2', '--seed', '5', '--threads', '1', '--out-dir', dir);
      assert.equal(r.code, 0, r.err);
      return r.out;
    };
    const out = await run('b1', '-n', '3', '--batch-size', '1');
    assert.match(out, /wrote b1\/: 3 samples .* 4 denoiser evaluations \(NFE\)/);
    await run('b2', '--n', '3', '--batch-size', '2');
    await run('b3', '-n', '3');
    // The same noise in any batching; the network's kernels round differently per batch shape, which can move a pixel by one level.
    const pixels = (dir: string, f: string) => decodeImage(fs.readFileSync(path.join(root, dir, f)), f).rgba;
    for (const f of ['000005.png', '000006.png', '000007.png']) {
      const a = pixels('b1', f);
      for (const dir of ['b2', 'b3']) {
        const b = pixels(dir, f);
        const diffs = a.map((v, i) => Math.abs(v - b[i]));
        assert.ok(
          Math.max(...diffs) <= 1 && diffs.filter((d) => d > 0).length <= a.length / 100,
          `${dir}/${f} vs b1/${f}: ${diffs.filter((d) => d > 0).length} pixels differ, by up to ${Math.max(...diffs)}`,
        );
      }
    }
    const e = await quick('sample', '-n', '1', '--batch-size', '0');
    assert.equal(e.code, 2);
    assert.match(e.err, /--batch-size: expected an integer in \[1, 1000000\], got "0"/);
  });

  test('bad sampler, grid, eta, churn, variance: exit 2 naming the flag and the valid names', async () => {
    for (const [args, re] of [
      [
        ['--sampler', 'eulr'],
        /--sampler: unknown sampler "eulr" \(did you mean euler\?\); choose one of: ddpm, ddim, euler, euler-ancestral, heun, heun-churn, dpmpp-2m, dpmpp-2m-sde, dpmpp-3m-sde, lms/,
      ],
      [['--grid', 'cosine'], /--grid: unknown grid "cosine"; choose one of: karras, exponential, log-snr, uniform-t, vp, trailing, leading, linspace/],
      [['--eta', 'lots', '--sampler', 'ddim'], /--eta: expected a number >= 0, got "lots"/],
      [['--eta', '2', '--sampler', 'ddim'], /--eta: ddim's eta must be in \[0, 1\], got 2/],
      [['--eta', '1'], /--eta: sampler "ddpm" takes no eta; the samplers with eta: ddim, euler-ancestral/],
      [['--sampler', 'lms', '--churn', '5'], /--churn: sampler "lms" takes no churn; the samplers with churn: euler, heun, heun-churn/],
      [['--sampler', 'heun', '--s-tmin', '3', '--s-tmax', '1'], /--s-tmin\/--s-tmax: need 0 <= S_tmin <= S_tmax/],
      [['--sampler', 'euler', '--variance', 'beta'], /--variance: sampler "euler" takes no variance; the samplers with variance: ddpm/],
    ] as [string[], RegExp][]) {
      const r = await quick('sample', ...args, '--n', '1', '--steps', '1');
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.err}`);
      assert.match(r.err, re);
    }
  });

  test('diffuse samplers lists every sampler and grid, one line each', async () => {
    const r = await quick('samplers');
    assert.equal(r.code, 0, r.err);
    const lines = r.out.split('\n');
    for (const { info } of Object.values(SAMPLERS)) {
      const line = lines.find((l) => l.trim().startsWith(`${info.name} `));
      assert.ok(line, `${info.name} missing:\n${r.out}`);
      assert.match(line, new RegExp(`${info.stochastic ? 'stochastic' : 'deterministic'}\\s+order ${info.order}\\s+${evalsFormula(info)} evals`));
    }
    for (const g of Object.keys(GRIDS))
      assert.ok(
        lines.some((l) => l.trim().startsWith(`${g} `)),
        `grid ${g} missing`,
      );
    assert.match((await quick('--help')).out, /samplers\s+list the samplers and grids/);
    assert.equal((await quick('samplers', 'extra')).code, 2);
  });
});
