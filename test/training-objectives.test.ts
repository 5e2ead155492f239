// Every objective `diffuse train` offers (build.ts objectiveLoss: eps, x0, v with each
// weighting; edm; edm2) is minimized by the exact denoiser of the analytic Gaussian mixture:
// along D* + delta h the Monte-Carlo loss (fixed sigma and noise draws) has slope ~0 at
// delta = 0 (within 4 standard errors), while a denoiser shrunk by half has a slope beyond 5 standard errors (6 to 60 here);
// and its curvature is the documented x0-space weight, computed here by hand from the sigmas
// the loss drew. For edm2, the optimal u(sigma) is the log of the per-sigma loss, checked
// on a single Gaussian where that loss is known in closed form.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { full, Generator, grad, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { Denoiser } from '../src/core/denoiser';
import { GaussianMixture } from '../src/data/mixture';
import { buildLrSchedule, buildWeighting, objectiveLoss } from '../src/training/build';
import { resolveTrainConfig, TrainConfig } from '../src/training/config';
import { denoisingLoss } from '../src/training/losses';
import { edmWeighting } from '../src/training/weighting';

setNumThreads(1);

const f64 = { dtype: 'float64' as const };
const N = 8192;
const GAMMA = 3;
const gmm = GaussianMixture.ring(4, { radius: 1, std: 0.3 });
const x0 = gmm.sample(N, new Generator(1), f64); // [N, 2]
after(() => {
  x0.dispose();
  gmm.dispose();
});

const exact: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
const shrunk: Denoiser = (x, sigma) => tidy(() => gmm.denoise(x, sigma).mul(0.5));
type Direction = (x: Tensor, sigma: Tensor) => Tensor;
/** The slope's direction h(x, sigma) = x / sqrt(1 + sigma^2) (the VP-scaled input, O(1) at every sigma). */
const alongX: Direction = (x, sigma) => tidy(() => x.mul(sigma.square().add(1).rsqrt().unsqueeze(1)));
/** The curvature's direction: the constant (1, 1), so ||h||^2 / dim = 1. */
const ones: Direction = (x) => full(x.shape, 1, f64);
/** An arbitrary fixed u(sigma) for edm2 (the optimal D does not depend on it). */
const someLogvar = (sigma: Tensor) => tidy(() => sigma.log().mul(0.3).add(0.1));

const config = (objective: string, weighting = 'auto'): TrainConfig =>
  resolveTrainConfig({ data: '8gaussians', model: objective === 'edm2' ? 'edm2' : 'mlp', objective, weighting, minSnrGamma: weighting === 'min-snr' ? GAMMA : 5, sigmaData: 0.5 });

/** Per-sample losses of D + delta h, with the draws of Generator(7) (the same sigmas and noise for every delta). */
function perSample(c: TrainConfig, D: Denoiser, delta: number, dir: Direction = alongX): { loss: number[]; sigma: number[] } {
  const Dd: Denoiser = (x, s, cond) => tidy(() => D(x, s, cond).add(dir(x, s).mul(delta)));
  return tidy(() => {
    const r = objectiveLoss(c, Dd, someLogvar)(x0, new Generator(7));
    return { loss: Array.from(r.perSample.toFloat64Array()), sigma: Array.from(r.sigma.toFloat64Array()) };
  });
}

const meanSe = (v: number[]) => {
  const m = v.reduce((a, b) => a + b) / v.length;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1));
  return { m, se: sd / Math.sqrt(v.length) };
};

/** The loss's slope along h at delta = 0, per sample: (l(+1) - l(-1)) / 2, exact since each loss is quadratic in D. */
function slope(c: TrainConfig, D: Denoiser): { m: number; se: number } {
  const [p, q] = [perSample(c, D, 1).loss, perSample(c, D, -1).loss];
  return meanSe(p.map((v, i) => (v - q[i]) / 2));
}

/** The x0-space weight w(sigma) of each objective, written from docs/training.md (not from weighting.ts): loss = w ||D - x0||^2 / dim. */
function x0Weight(objective: string, weighting: string, s: number): number {
  const snr = 1 / (s * s);
  const edm = (s * s + 0.25) / (s * 0.5) ** 2;
  if (objective === 'edm') return edm;
  if (objective === 'edm2') return edm / Math.exp(0.3 * Math.log(s) + 0.1);
  if (weighting === 'snr') return snr;
  if (weighting === 'min-snr') return Math.min(snr, GAMMA);
  return { eps: snr, x0: 1, v: snr + 1 }[objective]!; // uniform: the target's own squared error
}

const CASES: [string, string][] = [...['eps', 'x0', 'v'].flatMap((o) => ['uniform', 'snr', 'min-snr'].map((w): [string, string] => [o, w])), ['edm', 'auto'], ['edm2', 'auto']];

describe('the exact denoiser minimizes every objective (analytic mixture, 8192 draws)', () => {
  for (const [objective, weighting] of CASES) {
    test(`${objective}${weighting === 'auto' ? '' : `, ${weighting} weighting`}`, (t) => {
      const c = config(objective, weighting);
      const at = slope(c, exact);
      const off = slope(c, shrunk);
      t.diagnostic(`slope at D*: ${at.m.toExponential(2)} +- ${at.se.toExponential(2)}; at 0.5 D*: ${off.m.toExponential(2)} +- ${off.se.toExponential(2)}`);
      assert.ok(Math.abs(at.m) < 4 * at.se, `slope at D*: ${at.m} (standard error ${at.se})`);
      assert.ok(Math.abs(off.m) > 5 * off.se, `slope at 0.5 D*: ${off.m} (standard error ${off.se}) should be far from 0`);
      // curvature along (1, 1): l(+1) + l(-1) - 2 l(0) = 2 w(sigma), w the documented x0-space weight
      const [p, q, z] = [perSample(c, exact, 1, ones), perSample(c, exact, -1, ones), perSample(c, exact, 0, ones)];
      z.sigma.forEach((s, i) => {
        const w = x0Weight(objective, weighting, s);
        const curvature = p.loss[i] + q.loss[i] - 2 * z.loss[i];
        assert.ok(Math.abs(curvature - 2 * w) <= 1e-8 * Math.max(1, 2 * w + Math.abs(z.loss[i])), `sample ${i} (sigma ${s}): curvature ${curvature}, expected 2 w = ${2 * w}`);
      });
    });
  }

  test("'auto' is uniform for eps, x0 and v: no weight at all", () => {
    for (const o of ['eps', 'x0', 'v']) {
      assert.equal(buildWeighting(config(o, 'auto')), undefined);
      assert.equal(buildWeighting(config(o, 'uniform')), undefined);
    }
  });
});

describe('edm2: the optimal u(sigma) is the log of the per-sigma loss', () => {
  // x0 ~ N(0, s^2 I): E[x0 | x] = s^2 / (s^2 + sigma^2) x, and the expected EDM loss at sigma is
  // lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2) = (sigma^2 + sd^2) s^2 / (sd^2 (s^2 + sigma^2)).
  const [s, sd] = [1, 0.5];
  const gauss = new GaussianMixture([[0, 0]], [s]);
  const y0 = gauss.sample(N, new Generator(2), f64);
  after(() => (gauss.dispose(), y0.dispose()));
  const D: Denoiser = (x, sigma) => gauss.denoise(x, sigma);
  const lossAt = (sigma: number) => ((sigma ** 2 + sd ** 2) * s ** 2) / (sd ** 2 * (s ** 2 + sigma ** 2));
  const logLossAt = (sigma: Tensor) =>
    tidy(() =>
      sigma
        .square()
        .add(sd ** 2)
        .mul(s ** 2)
        .div(
          sigma
            .square()
            .add(s ** 2)
            .mul(sd ** 2),
        )
        .log(),
    );

  test('the per-sigma loss of the exact denoiser is the closed form (within 4 standard errors)', () =>
    tidy(() => {
      for (const sigma of [0.05, 0.3, 1, 4]) {
        const r = denoisingLoss(D, y0, full([N], sigma, f64), { weight: edmWeighting(sd), generator: new Generator(3) });
        const { m, se } = meanSe(Array.from(r.perSample.toFloat64Array()));
        assert.ok(Math.abs(m - lossAt(sigma)) < 4 * se, `sigma ${sigma}: ${m} +- ${se} vs ${lossAt(sigma)}`);
      }
    }));

  test('d loss / d u is ~0 at u = ln(loss(sigma)), and clearly not at u + 0.5', () =>
    tidy(() => {
      const c = config('edm2');
      const slopeAt = (shift: number) => {
        const delta = tensor(shift, f64).requiresGrad_();
        const r = objectiveLoss(c, D, (sigma) => logLossAt(sigma).add(delta))(y0, new Generator(4));
        const [g] = grad(r.loss, delta);
        // per sample: d/du (L e^-u + u) = 1 - L e^-u, with L e^-u = perSample - u
        const u = logLossAt(r.sigma).add(shift);
        const { se } = meanSe(Array.from(r.perSample.detach().sub(u).rsub(1).toFloat64Array()));
        return { m: g!.item(), se };
      };
      const at = slopeAt(0);
      assert.ok(Math.abs(at.m) < 4 * at.se, `slope at the optimum: ${at.m} +- ${at.se}`);
      const off = slopeAt(0.5);
      assert.ok(Math.abs(off.m - (1 - Math.exp(-0.5))) < 4 * off.se, `slope at u + 0.5: ${off.m}, expected 1 - e^-0.5 = ${1 - Math.exp(-0.5)}`);
    }));
});

test("inv-sqrt: EDM2's lr / sqrt(max(t / t_ref, 1)) after a linear warm-up", () => {
  const lr = buildLrSchedule(resolveTrainConfig({ model: 'edm2', lr: 0.01, lrRefSteps: 500, warmupSteps: 100, batchSize: 64 }));
  assert.equal(lr(0), 0);
  assert.equal(lr(50), 0.005);
  assert.equal(lr(100), 0.01);
  assert.equal(lr(500), 0.01);
  assert.ok(Math.abs(lr(2000) - 0.005) < 1e-15);
  assert.ok(Math.abs(lr(4500) - 0.01 / 3) < 1e-15);
  const cos = buildLrSchedule(resolveTrainConfig({ lr: 0.01, steps: 1100, warmupSteps: 100 }));
  assert.ok(Math.abs(cos(600) - 0.005) < 1e-15, 'cosine: half way down at the middle');
  assert.equal(buildLrSchedule(resolveTrainConfig({ lr: 0.01, lrSchedule: 'constant', warmupSteps: 100 }))(5000), 0.01);
});
