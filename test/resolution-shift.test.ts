// Resolution-aware noise schedules (issue 13): simple diffusion's shifted log-SNR on DDPM's
// discrete steps and on the continuous cosine, Chen 2023's input scaling as the same shift,
// the sigmoid betas, and the shifted EDM training sigma, each against its defining formula;
// shift 0 gives back the unshifted schedule bit for bit.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { discreteTimestep, edmDenoiser, logSigmaNoise, vpCoefficients } from '../src/core/precond';
import { cosineBetas, cosineLogSnr, discreteVP, linearBetas, resolutionShift, shiftDiscreteVP, shiftLogSnr, sigmoidBetas } from '../src/core/schedules';
import { buildSchedule, edmSigma, logSnrShift, materializeConfig, multiscaleScales, objectiveLoss, samplingSigmas } from '../src/training/build';
import { multiscaleMeanSquare } from '../src/training/losses';
import { edmWeighting } from '../src/training/weighting';
import { resolveTrainConfig } from '../src/training/config';
import { Denoiser } from '../src/core/denoiser';

setNumThreads(1);

const vals = (t: Tensor): number[] => Array.from(t.toFloat64Array());
const close = (a: number, b: number, tol: number, what = '') => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b} (tol ${tol})`);
const logSnr = (sigma: number) => -2 * Math.log(sigma);

describe('shifted discrete VP schedule (Hoogeboom et al. 2023, Sec. 3.1)', () => {
  test('logSNR_shifted(t) = logSNR(t) + 2 ln(base / resolution) at every step, for 16, 32, 64 px against base 32', () => {
    const plain = discreteVP(cosineBetas());
    for (const resolution of [16, 64, 128]) {
      const s = shiftDiscreteVP(plain, resolutionShift({ base: 32, resolution }));
      for (const t of [0, 1, 100, 250, 500, 750, 998]) {
        close(logSnr(s.sigmas[t]), logSnr(plain.sigmas[t]) + 2 * Math.log(32 / resolution), 1e-12, `t ${t} at ${resolution}`);
        close(s.alphaBar[t], 1 / (1 + s.sigmas[t] ** 2), 1e-15, 'alpha_bar = 1 / (1 + sigma^2)');
      }
      // the betas reproduce alpha_bar as DDPM's product prod(1 - beta)
      let a = 1;
      s.betas.forEach((b, t) => {
        assert.ok(b > 0 && b <= 1, `beta ${t} = ${b}`);
        a *= 1 - b;
        close(a, s.alphaBar[t], 1e-12 * Math.max(1, s.alphaBar[t]), `prod(1 - beta) at ${t}`);
      });
    }
  });

  test('shift 0 (resolution = base) is the unshifted schedule bit for bit, discrete and continuous', () =>
    tidy(() => {
      const plain = discreteVP(linearBetas());
      assert.equal(shiftDiscreteVP(plain, resolutionShift({ base: 32, resolution: 32 })), plain);
      const c = cosineLogSnr({ logSnrMin: -15, logSnrMax: 15 });
      const t = tensor([0, 0.1, 0.37, 0.5, 0.9, 1], { dtype: 'float64' });
      assert.deepEqual(vals(shiftLogSnr(c, { base: 64, resolution: 64 }).logSnr(t)), vals(c.logSnr(t)));
      const config = resolveTrainConfig({ shiftBase: 32, imageSize: 32, betaSchedule: 'cosine' });
      assert.equal(logSnrShift(config), 0);
      assert.deepEqual(buildSchedule(config), discreteVP(cosineBetas()));
      assert.deepEqual(edmSigma(config), { pMean: -1.2, pStd: 1.2 });
    }));

  test('the trainer config: shiftBase and imageSize shift the schedule and its sampling grid; sigmoid betas', () =>
    tidy(() => {
      const plain = buildSchedule(resolveTrainConfig({ betaSchedule: 'cosine' }))!;
      const shifted = buildSchedule(resolveTrainConfig({ betaSchedule: 'cosine', shiftBase: 16, imageSize: 32 }))!;
      plain.sigmas.forEach((s, t) => close(shifted.sigmas[t], 2 * s, 1e-12 * s, `sigma ${t} doubles`));
      const grid = (c: object) => vals(samplingSigmas(resolveTrainConfig(c), 10));
      grid({ betaSchedule: 'cosine' }).forEach((s, i) => close(grid({ betaSchedule: 'cosine', shiftBase: 16, imageSize: 32 })[i], 2 * s, 1e-12 * s, `grid ${i}`));
      assert.deepEqual(buildSchedule(resolveTrainConfig({ betaSchedule: 'sigmoid' }))!.betas, discreteVP(sigmoidBetas()).betas);
      assert.throws(() => resolveTrainConfig({ shiftBase: 0 }), /shiftBase/);
      assert.throws(() => resolveTrainConfig({ inputScale: -1 }), /inputScale/);
      assert.throws(() => materializeConfig(resolveTrainConfig({ data: 'two-moons', model: 'mlp', shiftBase: 32 }), { kind: 'points', classNames: null }), /shiftBase.*2-D point data/);
    }));
});

describe("Chen 2023's input scaling b", () => {
  test("is the log-SNR shift 2 ln b: the network input c_in x equals Chen's unit-variance x_t = (sqrt(abar) b x0 + sqrt(1 - abar) eps) / sqrt(b^2 abar + 1 - abar), at the same timestep", () =>
    tidy(() => {
      const b = 0.5;
      const plain = discreteVP(cosineBetas());
      const shifted = buildSchedule(resolveTrainConfig({ betaSchedule: 'cosine', inputScale: b }))!;
      const [x0, eps] = [0.7, -1.3];
      for (const t of [10, 200, 500, 900]) {
        const ab = plain.alphaBar[t];
        const chen = (Math.sqrt(ab) * b * x0 + Math.sqrt(1 - ab) * eps) / Math.sqrt(b * b * ab + 1 - ab);
        const sigma = tensor([shifted.sigmas[t]], { dtype: 'float64' });
        const { cIn, cNoise } = vpCoefficients('eps', sigma, discreteTimestep(shifted));
        close(vals(cIn)[0] * (x0 + shifted.sigmas[t] * eps), chen, 1e-12, `input at t ${t}`);
        close(vals(cNoise)[0], t, 1e-9, 'the network is told the same timestep');
      }
    }));

  test('inputScale b and shiftBase / imageSize = 1 / b are the same schedule', () => {
    const a = buildSchedule(resolveTrainConfig({ inputScale: 0.5, imageSize: 64 }))!;
    const c = buildSchedule(resolveTrainConfig({ shiftBase: 32, imageSize: 64 }))!;
    a.sigmas.forEach((s, t) => close(s, c.sigmas[t], 1e-12 * s, `sigma ${t}`));
  });
});

describe('the training sigmas of each objective move with the shift', () => {
  const zero: Denoiser = (x) => x.mul(0);
  const sigmas = (config: object) =>
    tidy(() => {
      const x0 = tensor(new Array(64 * 2).fill(0.1)).reshape([64, 2]);
      const r = objectiveLoss(resolveTrainConfig({ data: 'two-moons', model: 'mlp', ...config }), zero)(x0, new Generator(7));
      return vals(r.sigma);
    });
  for (const objective of ['eps', 'v', 'edm'])
    test(`${objective}: the same draws, sigma times 1 / b (inputScale b = 0.25)`, () => {
      const [a, s] = [sigmas({ objective }), sigmas({ objective, inputScale: 0.25 })];
      a.forEach((v, i) => close(s[i], 4 * v, (objective === 'edm' ? 1e-6 : 1e-9) * v, `sample ${i}`)); // edm draws ln(sigma) in float32
    });
  test('edm: P_mean + ln(resolution / base) (EDM Table 1 log-normal, moved in sigma coordinates)', () => {
    const c = resolveTrainConfig({ objective: 'edm', shiftBase: 32, imageSize: 64 });
    close(edmSigma(c).pMean, -1.2 + Math.log(2), 1e-15);
    assert.equal(edmSigma(c).pStd, 1.2);
  });
});

describe('EDM: the shift as a move of sigma_data (the same idea in sigma coordinates)', () => {
  test('D(x; sigma / b) with sigma_data equals D(b x; sigma) / b with sigma_data b (c_noise told sigma / b), and the weighted losses are equal', () =>
    tidy(() => {
      const b = 0.5;
      const g = new Generator(3);
      const w = g.randn([1, 4]);
      const F = (xIn: Tensor, cNoise: Tensor) =>
        xIn
          .mul(w)
          .tanh()
          .add(cNoise.reshape([-1, 1]).mul(0.3));
      const x0 = g.randn([3, 4]).mul(0.5);
      const sigma = tensor([0.05, 0.8, 12]);
      const x = x0.add(g.randn([3, 4]).mul(sigma.reshape([-1, 1]).div(b)));
      const plain = edmDenoiser(F, { sigmaData: 0.5 })(x, sigma.div(b));
      const moved = edmDenoiser(F, { sigmaData: 0.5 * b, cNoise: (s) => logSigmaNoise(s.div(b)) })(x.mul(b), sigma);
      vals(plain).forEach((v, i) => close(vals(moved)[i] / b, v, 1e-5, `D at ${i}`));
      const lossPlain = edmWeighting(0.5)(sigma.div(b)).mul(plain.sub(x0).square().mean([1]));
      const lossMoved = edmWeighting(0.5 * b)(sigma).mul(moved.sub(x0.mul(b)).square().mean([1]));
      vals(lossPlain).forEach((v, i) => close(vals(lossMoved)[i], v, 1e-4 * v, `loss at ${i}`));
    }));
});

describe("simple diffusion's multiscale loss (Hoogeboom et al. 2023, Sec. 3.3)", () => {
  test('sums the mean square of the error pooled to each scale, weighted 1/s and normalized, against a hand computation', () =>
    tidy(() => {
      const e = Array.from({ length: 2 * 3 * 4 * 4 }, (_, i) => Math.sin(i * 1.7) + 0.1 * i);
      const err = tensor(e, { dtype: 'float64' }).reshape([2, 3, 4, 4]);
      const got = vals(multiscaleMeanSquare(err, [1, 2, 4]));
      const at = (n: number, c: number, y: number, x: number) => e[((n * 3 + c) * 4 + y) * 4 + x];
      const meanSquareAt = (n: number, s: number) => {
        const k = 4 / s;
        let sum = 0;
        for (let c = 0; c < 3; c++)
          for (let Y = 0; Y < s; Y++)
            for (let X = 0; X < s; X++) {
              let m = 0;
              for (let y = 0; y < k; y++) for (let x = 0; x < k; x++) m += at(n, c, Y * k + y, X * k + x) / (k * k);
              sum += m * m;
            }
        return sum / (3 * s * s);
      };
      const wsum = 1 + 1 / 2 + 1 / 4;
      for (const n of [0, 1]) close(got[n], (meanSquareAt(n, 1) / 1 + meanSquareAt(n, 2) / 2 + meanSquareAt(n, 4) / 4) / wsum, 1e-12, `sample ${n}`);
    }));

  test('a single scale at the full size is the plain mean square; the scales come from the base and the image size', () =>
    tidy(() => {
      const err = new Generator(1).randn([2, 3, 8, 8], { dtype: 'float64' });
      assert.deepEqual(vals(multiscaleMeanSquare(err, [8])), vals(err.square().mean([1, 2, 3])));
      assert.deepEqual(multiscaleScales(16, 64), [16, 32, 64]);
      assert.deepEqual(multiscaleScales(64, 64), [64]);
      assert.throws(() => multiscaleScales(24, 64), /multiscaleBase.*power of 2.*64, 32, 16, 8, 4.*got 24/);
      assert.throws(() => materializeConfig(resolveTrainConfig({ data: 'two-moons', model: 'mlp', multiscaleBase: 8 }), { kind: 'points', classNames: null }), /multiscaleBase.*2-D points/);
      assert.throws(() => resolveTrainConfig({ multiscaleBase: 0 }), /multiscaleBase/);
    }));

  test('objectiveLoss uses it: the same draws give a different loss, and base = image size gives the plain one', () =>
    tidy(() => {
      const D: Denoiser = (x) => x.mul(0.3);
      const x0 = new Generator(2).randn([4, 1, 8, 8]).mul(0.5);
      const loss = (extra: object) => vals(objectiveLoss(resolveTrainConfig({ imageSize: 8, objective: 'v', ...extra }), D)(x0, new Generator(5)).perSample);
      const [plain, full, multi] = [loss({}), loss({ multiscaleBase: 8 }), loss({ multiscaleBase: 2 })];
      assert.deepEqual(full, plain);
      assert.ok(
        multi.some((v, i) => Math.abs(v - plain[i]) > 1e-3 * plain[i]),
        `multiscale ${multi} vs plain ${plain}`,
      );
    }));
});
