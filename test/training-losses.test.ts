// Objectives and weightings: each loss unit against values computed by hand from the same
// noise draws, the identities between target spaces and min-SNR's three forms, EDM's
// weighting and sigma distribution, EDM2's uncertainty weighting, and a short training
// run on the 2-D mixture that must bring the learned score closer to the exact one.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, grad, memory, noGrad, setNumThreads, tensor, Tensor, tidy, full } from '../src/engine';
import { Denoiser, score } from '../src/core/denoiser';
import { edmCoefficients, edmDenoiser } from '../src/core/precond';
import { discreteVP, linearBetas, veLogSnr } from '../src/core/schedules';
import { GaussianMixture } from '../src/data/mixture';
import { MLPDenoiserNet } from '../src/models/mlp';
import { Adam } from '../src/optim/adam';
import { ddpmLoss, denoisingLoss, edm2Loss, edmLoss, vLoss, x0Loss } from '../src/training/losses';
import { discreteSigma, logNormalSigma, uniformTimeSigma } from '../src/training/sigma-sampling';
import { edmWeighting, minSnrWeighting, snrWeighting, targetScale, uncertaintyWeighted, Target } from '../src/training/weighting';

setNumThreads(1); // tiny tensors: threads only add overhead (and spin under load)

const f64 = { dtype: 'float64' as const };
const vals = (t: Tensor): number[] => Array.from(t.toFloat64Array());
const close = (a: number, b: number, tol: number, what = '') => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

// A hand-checkable denoiser: D(x, sigma) = x / (1 + sigma) (no network, exact arithmetic).
const shrink: Denoiser = (x, sigma) => tidy(() => x.div(sigma.add(1).unsqueeze(1)));
const X0 = [
  [1, 2],
  [-1, 0.5],
  [0.25, -3],
];
const SIGMA = [0.5, 2, 0.1];

/** The per-sample losses recomputed in plain JS from the noise the loss drew (seed replayed). */
function byHand(target: Target, seed: number): number[] {
  const n = vals(new Generator(seed).randn([3, 2], f64));
  return X0.map((row, b) => {
    const s = SIGMA[b];
    const [alpha, sv] = [1 / Math.sqrt(1 + s * s), s / Math.sqrt(1 + s * s)];
    let sq = 0;
    row.forEach((x0, d) => {
      const eps = n[b * 2 + d];
      const x = x0 + s * eps;
      const x0Hat = x / (1 + s);
      const epsHat = (x - x0Hat) / s;
      const err = target === 'x0' ? x0Hat - x0 : target === 'eps' ? epsHat - eps : alpha * epsHat - sv * x0Hat - (alpha * eps - sv * x0);
      sq += err * err;
    });
    return sq / 2; // mean over the 2 dims
  });
}

describe('loss units against hand-computed values', () => {
  for (const target of ['x0', 'eps', 'v'] as const) {
    test(`denoisingLoss, target ${target}: per-sample mean squared error in its own space`, () =>
      tidy(() => {
        const r = denoisingLoss(shrink, tensor(X0, f64), tensor(SIGMA, f64), { target, generator: new Generator(11) });
        const want = byHand(target, 11);
        vals(r.perSample).forEach((v, i) => close(v, want[i], 1e-12, `sample ${i}`));
        close(r.loss.item(), want.reduce((a, b) => a + b) / 3, 1e-12, 'mean');
        assert.deepEqual(vals(r.sigma), SIGMA);
      }));
  }

  test('target spaces differ only by a weight: eps = SNR x0-loss, v = (SNR + 1) x0-loss', () =>
    tidy(() => {
      const run = (target: Target) => denoisingLoss(shrink, tensor(X0, f64), tensor(SIGMA, f64), { target, generator: new Generator(5) }).perSample;
      const x0l = vals(run('x0'));
      vals(run('eps')).forEach((v, i) => close(v, x0l[i] / SIGMA[i] ** 2, 1e-12, 'eps'));
      vals(run('v')).forEach((v, i) => close(v, x0l[i] * (1 / SIGMA[i] ** 2 + 1), 1e-12, 'v'));
    }));

  test('min-SNR-gamma (Hang et al. 2023): eps min(snr,g)/snr, x0 min(snr,g), v min(snr,g)/(snr+1) — one objective', () =>
    tidy(() => {
      const sigma = tensor([0.1, 1, 3], f64); // snr 100, 1, 1/9
      const g = 5;
      assert.deepEqual(
        vals(minSnrWeighting(g, 'x0')(sigma)).map((v) => +v.toFixed(12)),
        [5, 1, +(1 / 9).toFixed(12)],
      );
      vals(minSnrWeighting(g, 'eps')(sigma)).forEach((v, i) => close(v, [5 / 100, 1, 1][i], 1e-12, 'eps'));
      vals(minSnrWeighting(g, 'v')(sigma)).forEach((v, i) => close(v, [5 / 101, 1 / 2, 1 / 9 / (1 / 9 + 1)][i], 1e-12, 'v'));
      // weighted losses in the three spaces coincide sample by sample
      const run = (target: Target) => vals(denoisingLoss(shrink, tensor(X0, f64), tensor(SIGMA, f64), { target, weight: minSnrWeighting(g, target), generator: new Generator(9) }).perSample);
      const [a, b, c] = [run('x0'), run('eps'), run('v')];
      a.forEach((v, i) => (close(b[i], v, 1e-12, 'eps vs x0'), close(c[i], v, 1e-12, 'v vs x0')));
      // SNR weighting is the unweighted eps loss
      vals(snrWeighting('eps')(sigma)).forEach((v) => close(v, 1, 1e-15));
    }));

  test("EDM's weight (sigma^2 + sd^2)/(sigma sd)^2 = 1/c_out^2: the loss is ||F - F_target||^2 (Eq. 8)", () =>
    tidy(() => {
      const sigma = tensor(SIGMA, f64);
      const w = edmWeighting(0.5)(sigma);
      vals(w).forEach((v, i) => close(v, (SIGMA[i] ** 2 + 0.25) / (SIGMA[i] * 0.5) ** 2, 1e-14, 'lambda'));
      vals(edmCoefficients(sigma).cOut.square().mul(w)).forEach((v) => close(v, 1, 1e-14, 'lambda c_out^2'));
      // a linear "network" F(xIn) = 0.3 xIn through EDM preconditioning: weighted x0 loss equals the raw F loss
      const D = edmDenoiser((xIn) => xIn.mul(0.3));
      const x0 = tensor(X0, f64);
      const r = denoisingLoss(D, x0, sigma, { weight: edmWeighting(0.5), generator: new Generator(3) });
      const n = new Generator(3).randn([3, 2], f64);
      const c = edmCoefficients(sigma);
      const x = x0.add(n.mul(sigma.unsqueeze(1)));
      const F = x.mul(c.cIn.unsqueeze(1)).mul(0.3);
      const Ftarget = x0.sub(x.mul(c.cSkip.unsqueeze(1))).div(c.cOut.unsqueeze(1));
      vals(F.sub(Ftarget).square().mean(1)).forEach((v, i) => close(vals(r.perSample)[i], v, 1e-12, 'F-space loss'));
    }));

  test('named losses draw sigma then noise from the generator: ddpm, x0, v, edm', () =>
    tidy(() => {
      const x0 = tensor(X0, f64);
      const ddpm = discreteVP(linearBetas());
      const a = ddpmLoss(shrink, x0, ddpm, { generator: new Generator(2) });
      const g = new Generator(2);
      const sig = discreteSigma(ddpm)(3, g, f64);
      const b = denoisingLoss(shrink, x0, sig, { target: 'eps', generator: g });
      assert.deepEqual(vals(a.perSample), vals(b.perSample));
      assert.ok(
        vals(a.sigma).every((s) => ddpm.sigmas.includes(s)),
        'sigmas are the schedule sigmas',
      );
      const sampleSigma = uniformTimeSigma(veLogSnr());
      const v1 = vLoss(shrink, x0, { sampleSigma, generator: new Generator(4), weighting: minSnrWeighting(5, 'v') });
      const x1 = x0Loss(shrink, x0, { sampleSigma, generator: new Generator(4), weighting: minSnrWeighting(5, 'x0') });
      vals(v1.perSample).forEach((v, i) => close(v, vals(x1.perSample)[i], 1e-12, 'same objective'));
      const e = edmLoss(shrink, x0, { generator: new Generator(6) });
      const ge = new Generator(6);
      const se = logNormalSigma()(3, ge, f64);
      const e2 = denoisingLoss(shrink, x0, se, { weight: edmWeighting(0.5), generator: ge });
      assert.deepEqual(vals(e.perSample), vals(e2.perSample));
    }));
});

describe('sigma sampling', () => {
  test('EDM log-normal: ln sigma has mean -1.2 and std 1.2 (within 4 standard errors)', () =>
    tidy(() => {
      const n = 20000;
      const ls = logNormalSigma()(n, new Generator(0), f64).log();
      const [m, s] = [ls.mean().item(), ls.std().item()];
      assert.ok(Math.abs(m + 1.2) < (4 * 1.2) / Math.sqrt(n), `mean ${m}`);
      assert.ok(Math.abs(s - 1.2) < (4 * 1.2) / Math.sqrt(2 * n), `std ${s}`);
    }));

  test('uniform time on VE: ln sigma uniform between ln sigma_min and ln sigma_max', () =>
    tidy(() => {
      const ls = vals(uniformTimeSigma(veLogSnr({ sigmaMin: 0.02, sigmaMax: 100 }), { tMin: 0 })(4000, new Generator(1), f64).log());
      const [lo, hi] = [Math.log(0.02), Math.log(100)];
      assert.ok(ls.every((v) => v >= lo - 1e-12 && v <= hi + 1e-12));
      const mean = ls.reduce((a, b) => a + b) / ls.length;
      assert.ok(Math.abs(mean - (lo + hi) / 2) < (4 * (hi - lo)) / Math.sqrt(12 * ls.length), `mean ${mean}`);
    }));
});

describe('EDM2 uncertainty weighting (Eq. 21)', () => {
  test('loss / e^u + u, minimized at u = ln(loss), where it equals 1 + ln(loss)', () =>
    tidy(() => {
      const L = tensor([0.5, 2, 0.01], f64);
      const u = L.log().requiresGrad_();
      const w = uncertaintyWeighted(L, u);
      vals(w).forEach((v, i) => close(v, 1 + Math.log([0.5, 2, 0.01][i]), 1e-14));
      const [du] = grad(w.sum(), u);
      assert.ok(
        vals(du!).every((v) => Math.abs(v) < 1e-14),
        'stationary in u',
      );
      close(uncertaintyWeighted(tensor([3], f64), tensor([0.5], f64)).item(), 3 / Math.exp(0.5) + 0.5, 1e-14);
    }));

  test('edm2Loss = EDM loss per sample / e^u(sigma) + u(sigma), with u from a log-variance head', () =>
    tidy(() => {
      const x0 = tensor(X0, f64);
      const logvar = (s: Tensor) => s.log().mul(0.3).add(0.1);
      const a = edm2Loss(shrink, logvar, x0, { generator: new Generator(8) });
      const b = edmLoss(shrink, x0, { generator: new Generator(8), pMean: -0.4, pStd: 1.0 });
      vals(a.perSample).forEach((v, i) => {
        const u = 0.3 * Math.log(vals(b.sigma)[i]) + 0.1;
        close(v, vals(b.perSample)[i] / Math.exp(u) + u, 1e-12);
      });
    }));
});

test('targetScale names its argument', () => assert.throws(() => targetScale('noise' as Target, tensor([1])), /target must be/));

test('a short EDM training run on the 2-D mixture reduces the score error against the exact score', (t) => {
  const gmm = GaussianMixture.ring(8, { radius: 1, std: 0.1 });
  const g = new Generator(0);
  const net = new MLPDenoiserNet({ dim: 2, hidden: 64, depth: 3, embedding: 'fourier', embedDim: 32 }, { generator: new Generator(1) });
  const D = edmDenoiser((xIn, cNoise) => net.forward(xIn, cNoise));
  // relative mean squared score error E||s_theta - s||^2 / E||s||^2 on fixed noisy points, per sigma
  const sigmas = [0.2, 0.5, 1];
  const evalGen = new Generator(123);
  const x0 = gmm.sample(1024, evalGen);
  const n = evalGen.randn([1024, 2]);
  const scoreError = () =>
    noGrad(() =>
      tidy(() =>
        sigmas.map((s) => {
          const x = x0.add(n.mul(s));
          const exact = gmm.score(x, s);
          return (
            score(D, x, full([1024], s))
              .sub(exact)
              .square()
              .sum(1)
              .mean()
              .item() / exact.square().sum(1).mean().item()
          );
        }),
      ),
    );
  const before = scoreError();
  const opt = new Adam(net.parameters(), { lr: 3e-3 });
  const live = memory().tensors;
  for (let step = 0; step < 300; step++) {
    tidy(() => edmLoss(D, gmm.sample(256, g), { generator: g }).loss.backward());
    opt.step();
    opt.zeroGrad();
  }
  assert.ok(memory().tensors <= live + 2, `the training loop does not leak tensors (${live} -> ${memory().tensors})`);
  const after = scoreError();
  t.diagnostic(`relative score error at sigma ${sigmas}: before ${before.map((v) => v.toFixed(3))}, after ${after.map((v) => v.toFixed(3))}`);
  const mean = (a: number[]) => a.reduce((x, y) => x + y) / a.length;
  // stated factor: the mean relative score error over sigma in {0.2, 0.5, 1} drops at least 3x
  assert.ok(mean(after) < mean(before) / 3, `relative score error before ${before.map((v) => v.toFixed(3))}, after ${after.map((v) => v.toFixed(3))}`);
  sigmas.forEach((s, i) => assert.ok(after[i] < before[i], `sigma ${s}: ${before[i]} -> ${after[i]}`));
  opt.dispose();
  net.dispose();
  gmm.dispose();
});
