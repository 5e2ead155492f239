// Noise schedules: discrete VP betas (linear, cosine, sigmoid), zero terminal SNR, the
// sigma <-> timestep map, continuous log-SNR schedules and their inverses, the resolution
// shift and the Karras grid, each against its defining formula (DESIGN.md's numerical facts).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import {
  betasFromAlphaBar,
  cosineAlphaBar,
  cosineBetas,
  cosineLogSnr,
  ddpmPosterior,
  discreteVP,
  karrasSigmas,
  linearBetas,
  linearVPLogSnr,
  rescaleZeroTerminalSnr,
  shiftLogSnr,
  sigmaFromLogSnr,
  sigmasFromLogSnr,
  sigmaToT,
  sigmoidAlphaBar,
  sigmoidBetas,
  tToSigma,
  veLogSnr,
} from '../src/core/schedules';

setNumThreads(1); // tiny tensors: threads only add overhead

const vals = (t: Tensor): number[] => Array.from(t.toFloat64Array());
const f64 = (xs: number[]) => tensor(xs, { dtype: 'float64' });
const close = (a: number, b: number, tol: number, what = '') => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b} (tol ${tol})`);

describe('discrete VP schedules', () => {
  test('linear betas (Ho et al. 2020): 1e-4 .. 0.02 over 1000 steps; alpha_bar, sigma', () => {
    const s = discreteVP(linearBetas());
    assert.equal(s.T, 1000);
    close(s.betas[0], 1e-4, 1e-18, 'beta_1');
    close(s.betas[999], 0.02, 1e-17, 'beta_T');
    close(s.betas[500] - s.betas[499], (0.02 - 1e-4) / 999, 1e-15, 'constant increment');
    let ab = 1;
    for (let i = 0; i < 1000; i++) ab *= 1 - (1e-4 + (i * (0.02 - 1e-4)) / 999);
    close(s.alphaBar[999], ab, 1e-15 * ab, 'alpha_bar_T');
    close(s.sigmas[999], Math.sqrt((1 - ab) / ab), 1e-9, 'sigma_T');
    close(s.sigmas[0], Math.sqrt(1e-4 / (1 - 1e-4)), 1e-15, 'sigma_1');
  });

  test('cosine (Nichol & Dhariwal 2021): alpha_bar follows f(t)/f(0) until the 0.999 clip', () => {
    const T = 1000;
    const s = discreteVP(cosineBetas(T));
    assert.equal(Math.max(...s.betas), 0.999, 'the last betas are clipped at 0.999');
    for (const i of [0, 10, 250, 500, 900, 980]) close(s.alphaBar[i], cosineAlphaBar((i + 1) / T), 1e-12, `alpha_bar at ${i}`);
    close(cosineAlphaBar(0), 1, 0, 'alpha_bar(0)');
    close(cosineAlphaBar(0.5), Math.cos((0.508 / 1.008) * (Math.PI / 2)) ** 2 / Math.cos((0.008 / 1.008) * (Math.PI / 2)) ** 2, 1e-15);
  });

  test('sigmoid (Chen 2023, Algorithm 1): gamma(0) = 1, gamma(1) = clip, decreasing; betas from it', () => {
    close(sigmoidAlphaBar(0), 1, 1e-15, 'gamma(0)');
    close(sigmoidAlphaBar(1), 1e-9, 0, 'gamma(1)');
    const sig = (z: number) => 1 / (1 + Math.exp(-z));
    close(sigmoidAlphaBar(0.3, { start: 0, end: 3, tau: 0.7 }), (sig(3 / 0.7) - sig(0.9 / 0.7)) / (sig(3 / 0.7) - sig(0)), 1e-15, 'gamma(0.3)');
    const b = sigmoidBetas(1000);
    assert.ok(b.every((x) => x > 0 && x <= 0.999));
    const s = discreteVP(b);
    for (const i of [0, 300, 700]) close(s.alphaBar[i], sigmoidAlphaBar((i + 1) / 1000), 1e-12, `alpha_bar at ${i}`);
  });

  test('betasFromAlphaBar telescopes: prod(1 - beta_i) = abar(T)/abar(0) without clipping', () => {
    const ab = (t: number) => Math.exp(-3 * t * t);
    const s = discreteVP(betasFromAlphaBar(ab, 50));
    close(s.alphaBar[49], Math.exp(-3), 1e-14);
  });

  test('zero terminal SNR (Lin et al. 2023, Algorithm 1): last alpha_bar exactly 0, first unchanged, sqrt(abar) affine', () => {
    const before = discreteVP(linearBetas());
    const after = discreteVP(rescaleZeroTerminalSnr(before.betas));
    assert.equal(after.alphaBar[999], 0);
    assert.equal(after.betas[999], 1);
    assert.equal(after.sigmas[999], Infinity);
    close(after.alphaBar[0], before.alphaBar[0], 1e-15, 'first alpha_bar');
    // sqrt(abar_new) = (sqrt(abar) - sqrt(abar_T)) * sqrt(abar_1) / (sqrt(abar_1) - sqrt(abar_T))
    const [a0, aT] = [Math.sqrt(before.alphaBar[0]), Math.sqrt(before.alphaBar[999])];
    for (const i of [1, 100, 500, 998]) close(Math.sqrt(after.alphaBar[i]), ((Math.sqrt(before.alphaBar[i]) - aT) * a0) / (a0 - aT), 1e-12, `step ${i}`);
    // the map still works at an infinite sigma
    tidy(() => {
      assert.equal(tToSigma(after, f64([999])).item(), Infinity);
      assert.ok(Number.isFinite(tToSigma(after, f64([998])).item()));
      close(sigmaToT(after, f64([1e6])).item(), 998, 0, 't of a huge sigma stays on the last finite step');
    });
  });
});

test('DDPM posterior q(x_{t-1} | x_t, x0) (Ho et al. Eq. 7) is Gaussian conditioning, and c0 + ct != 1', () => {
  const s = discreteVP(linearBetas());
  for (const t of [1, 10, 500, 999]) {
    // joint of (x_{t-1}, x_t) given x0: x_{t-1} = a x0 + sqrt(1 - a^2) e1, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e2
    const a2 = s.alphaBar[t - 1];
    const [alpha, beta] = [1 - s.betas[t], s.betas[t]];
    const varPrev = 1 - a2;
    const cov = Math.sqrt(alpha) * varPrev; // Cov(x_{t-1}, x_t | x0)
    const varT = alpha * varPrev + beta;
    // E[x_{t-1} | x_t, x0] = sqrt(a2) x0 + cov/varT (x_t - sqrt(abar_t) x0); Var = varPrev - cov^2/varT
    const ct = cov / varT;
    const c0 = Math.sqrt(a2) - ct * Math.sqrt(s.alphaBar[t]);
    const p = ddpmPosterior(s, t);
    close(p.ct, ct, 1e-12, `ct at ${t}`);
    close(p.c0, c0, 1e-12, `c0 at ${t}`);
    close(p.variance, varPrev - (cov * cov) / varT, 1e-14, `variance at ${t}`);
  }
  const mid = ddpmPosterior(s, 500);
  assert.ok(Math.abs(mid.c0 + mid.ct - 1) > 1e-3, `c0 + ct = ${mid.c0 + mid.ct}`);
});

describe('sigma <-> timestep (k-diffusion DiscreteSchedule)', () => {
  const s = discreteVP(linearBetas());

  test('grid sigmas map to their integer index, and back', () =>
    tidy(() => {
      const idx = [0, 1, 17, 500, 998, 999];
      const t = sigmaToT(s, f64(idx.map((i) => s.sigmas[i])));
      vals(t).forEach((v, k) => close(v, idx[k], 1e-9, `t of sigma_${idx[k]}`));
      vals(tToSigma(s, f64(idx))).forEach((v, k) => close(v, s.sigmas[idx[k]], 1e-12 * s.sigmas[idx[k]], `sigma_${idx[k]}`));
    }));

  test('fractional t interpolates ln(sigma) linearly; the round trip is the identity', () =>
    tidy(() => {
      const t = f64([0.25, 10.5, 123.75, 998.9]);
      const sig = tToSigma(s, t);
      vals(sig).forEach((v, k) => {
        const tk = vals(t)[k];
        const lo = Math.floor(tk);
        const w = tk - lo;
        close(Math.log(v), (1 - w) * Math.log(s.sigmas[lo]) + w * Math.log(s.sigmas[lo + 1]), 1e-12, `ln sigma(${tk})`);
      });
      vals(sigmaToT(s, sig)).forEach((v, k) => close(v, vals(t)[k], 1e-9, 'round trip'));
    }));

  test('quantize picks the nearest step in ln(sigma); out-of-range sigmas clamp to [0, T-1]', () =>
    tidy(() => {
      const mid = Math.sqrt(s.sigmas[10] * s.sigmas[11]) * 1.01; // just past the log-midpoint: nearer step 11
      assert.deepEqual(vals(sigmaToT(s, f64([mid]), { quantize: true })), [11]);
      assert.deepEqual(vals(sigmaToT(s, f64([1e-6, 1e6]))), [0, 999]);
      assert.deepEqual(
        sigmaToT(
          s,
          tensor([
            [0.5, 1],
            [2, 4],
          ]),
        ).shape,
        [2, 2],
        'keeps the shape',
      );
    }));
});

describe('continuous schedules by log-SNR', () => {
  const t = f64([0.01, 0.2, 0.5, 0.77, 0.99]);

  test('cosine: lambda(t) = -2 ln tan(pi t / 2); inverse; clipping to [logSnrMin, logSnrMax]', () =>
    tidy(() => {
      const c = cosineLogSnr();
      vals(c.logSnr(t)).forEach((l, k) => close(l, -2 * Math.log(Math.tan((Math.PI * vals(t)[k]) / 2)), 1e-12));
      vals(c.time(c.logSnr(t))).forEach((v, k) => close(v, vals(t)[k], 1e-12, 'round trip'));
      close(c.logSnr(f64([0.5])).item(), 0, 1e-12, 'SNR 1 at t = 1/2');
      const clipped = cosineLogSnr({ logSnrMin: -15, logSnrMax: 15 });
      assert.deepEqual(
        vals(clipped.logSnr(f64([0, 1]))).map((v) => Math.round(v * 1e9) / 1e9),
        [15, -15],
      );
    }));

  test('linear VP (Song et al. 2021): sigmoid(lambda) = alpha_bar = exp(-t^2 (bmax - bmin)/2 - t bmin); inverse', () =>
    tidy(() => {
      const l = linearVPLogSnr();
      vals(l.logSnr(t)).forEach((v, k) => {
        const tk = vals(t)[k];
        close(1 / (1 + Math.exp(-v)), Math.exp(-0.5 * tk * tk * 19.9 - 0.1 * tk), 1e-12, `alpha_bar(${tk})`);
      });
      vals(l.time(l.logSnr(t))).forEach((v, k) => close(v, vals(t)[k], 1e-9, 'round trip'));
    }));

  test('VE: sigma(t) geometric from sigmaMin to sigmaMax', () =>
    tidy(() => {
      const ve = veLogSnr({ sigmaMin: 0.01, sigmaMax: 50 });
      assert.deepEqual(
        vals(sigmaFromLogSnr(ve.logSnr(f64([0, 0.5, 1])))).map((v) => +v.toPrecision(12)),
        [0.01, +Math.sqrt(0.5).toPrecision(12), 50],
      );
      const grid = vals(sigmasFromLogSnr(ve, 5));
      assert.equal(grid.length, 6);
      assert.equal(grid[5], 0);
      for (let i = 0; i < 3; i++) close(grid[i + 1] / grid[i], grid[i + 2] / grid[i + 1], 1e-12, 'constant ratio');
    }));

  test('resolution shift (Hoogeboom et al. 2023): logSNR(t) + 2 ln(base / d), so sigma scales by d / base', () =>
    tidy(() => {
      const c = cosineLogSnr();
      const sh = shiftLogSnr(c, { base: 64, resolution: 256 });
      const d = vals(sh.logSnr(t).sub(c.logSnr(t)));
      d.forEach((v) => close(v, 2 * Math.log(64 / 256), 1e-12, 'shift'));
      vals(sigmaFromLogSnr(sh.logSnr(t)).div(sigmaFromLogSnr(c.logSnr(t)))).forEach((r) => close(r, 4, 1e-12, 'sigma ratio'));
      vals(sh.time(sh.logSnr(t))).forEach((v, k) => close(v, vals(t)[k], 1e-12, 'round trip'));
    }));
});

test('Karras grid (EDM Eq. 5): N sigmas from sigma_max to sigma_min with rho = 7, then a 0', () =>
  tidy(() => {
    const g = vals(karrasSigmas(10));
    assert.equal(g.length, 11);
    assert.equal(g[10], 0);
    close(g[0], 80, 1e-12);
    close(g[9], 0.002, 1e-15);
    const [a, b] = [80 ** (1 / 7), 0.002 ** (1 / 7)];
    close(g[4], (a + (4 / 9) * (b - a)) ** 7, 1e-12);
  }));

test('argument checks name the problem', () => {
  assert.throws(() => discreteVP([0.1]), /at least 2 betas/);
  assert.throws(() => discreteVP([0.1, 0]), /betas\[1\] = 0/);
  assert.throws(() => linearBetas(0), /positive integer/);
  assert.throws(() => shiftLogSnr(cosineLogSnr(), { base: 64, resolution: 0 }), /positive/);
});
