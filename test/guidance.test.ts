// Guidance on a 2-D class-conditional Gaussian mixture, where the conditional and
// unconditional denoisers and the class posterior are exact: CFG at w = 1 / w = 0 is the
// conditional / unconditional denoiser, batched = unbatched, the guidance interval costs one
// evaluation outside, rescale matches stds; guided samples concentrate on the class as w
// grows; the classifier-guidance gradient matches finite differences and, with the exact
// posterior, s = 1 is Bayes' exact conditional denoiser; autoguidance with itself is the
// identity; every wrapper runs with every sampler without growing memory; and the trainer's
// label dropout hands the network the null class with the configured probability.
import { UNet } from '../src/models/unet';
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cat, full, Generator, keep, memory, noGrad, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { Conditioning, Denoiser, karrasSigmas } from '../src/core';
import { GaussianMixture } from '../src/data';
import { SAMPLERS, sampleHeun } from '../src/sampling';
import { autoguidance, classifierFreeGuidance, classifierGradient, classifierGuidance, ClassLogProb, guidanceInterval, rescaleGuided } from '../src/guidance';
import { resolveTrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';

setNumThreads(1);

// Two classes of two overlapping components each, unequal weights: guidance has work to do.
const gmm = new GaussianMixture(
  [
    [-1, 0.5],
    [-0.3, -1],
    [1, 0],
    [0.4, 1.2],
  ],
  [0.5, 0.4, 0.45, 0.6],
  [0.3, 0.2, 0.35, 0.15],
  [0, 0, 1, 1],
);
const NULL = gmm.numClasses; // 2
const classPrior = [0.5, 0.5]; // P(y): 0.3 + 0.2, 0.35 + 0.15
const exact: Denoiser = (x, sigma, cond) => gmm.denoise(x, sigma, cond); // conditional; the null class = unconditional
const uncond: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
/** The exact class posterior: log p(y | x, sigma) = log p_sigma(x | y) + log P(y) - log p_sigma(x). */
const exactLogPosterior: ClassLogProb = (x, sigma, labels) =>
  tidy(() => {
    const logPy = tensor(
      Array.from(labels.toFloat64Array(), (y) => Math.log(classPrior[y])),
      { dtype: x.dtype },
    );
    return gmm.logDensity(x, sigma, { classLabels: labels }).add(logPy).sub(gmm.logDensity(x, sigma));
  });

/** A denoiser that records the batch size of every call. */
function counting(D: Denoiser) {
  const calls: number[] = [];
  const C: Denoiser = (x, sigma, cond) => (calls.push(x.dim(0)), D(x, sigma, cond));
  return { D: C, calls };
}
const maxAbs = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const B = 12;
const points = (seed: number, scale = 2) => new Generator(seed).randn([B, 2], { dtype: 'float64' }).mul(scale);
const sigmaOf = (s: number, n = B) => full([n], s, { dtype: 'float64' });
const labelsOf = (ys: number[]) => tensor(ys, { dtype: 'int64' });
const LABELS = Array.from({ length: B }, (_, i) => i % 2);
const SIGMAS = [0.05, 0.4, 1.5, 8];

describe('classifier-free guidance', () => {
  test('w = 1 is the conditional denoiser and w = 0 the unconditional one, exactly, in one evaluation', () =>
    tidy(() => {
      const x = points(1);
      const cond = { classLabels: labelsOf(LABELS) };
      for (const s of SIGMAS) {
        for (const batched of [true, false]) {
          const one = counting(exact);
          assert.equal(maxAbs(classifierFreeGuidance(one.D, { scale: 1, nullClass: NULL, batched })(x, sigmaOf(s), cond), exact(x, sigmaOf(s), cond)), 0);
          const zero = counting(exact);
          assert.equal(maxAbs(classifierFreeGuidance(zero.D, { scale: 0, nullClass: NULL, batched })(x, sigmaOf(s), cond), uncond(x, sigmaOf(s))), 0);
          assert.deepEqual([one.calls, zero.calls], [[B], [B]]);
        }
      }
    }));

  test('w != 0, 1: D_u + w (D_c - D_u); batched (one call on 2B) and unbatched (two calls on B) agree', () =>
    tidy(() => {
      const x = points(2);
      const ys = LABELS.map((y, i) => (i === 3 ? NULL : y)); // a null label in the batch: that row is unguided D_u
      const cond = { classLabels: labelsOf(ys) };
      for (const s of SIGMAS)
        for (const w of [-0.5, 0.3, 2, 7.5]) {
          const Dc = exact(x, sigmaOf(s), cond);
          const Du = uncond(x, sigmaOf(s));
          const want = Du.add(Dc.sub(Du).mul(w));
          const a = counting(exact);
          const b = counting(exact);
          const batched = classifierFreeGuidance(a.D, { scale: w, nullClass: NULL })(x, sigmaOf(s), cond);
          const unbatched = classifierFreeGuidance(b.D, { scale: w, nullClass: NULL, batched: false })(x, sigmaOf(s), cond);
          assert.deepEqual(a.calls, [2 * B], 'batched: one call on the doubled batch');
          assert.deepEqual(b.calls, [B, B], 'unbatched: two calls');
          assert.ok(maxAbs(batched, want) < 1e-12, `sigma ${s}, w ${w}: ${maxAbs(batched, want)}`);
          assert.ok(maxAbs(batched, unbatched) < 1e-12);
          assert.ok(maxAbs(batched.narrow(0, 3, 1), Du.narrow(0, 3, 1)) < 1e-12, 'the null-labelled row is D_u');
        }
    }));

  test('the guidance interval (sigmaLo, sigmaHi]: one conditional evaluation outside, CFG inside, per sample when mixed', () =>
    tidy(() => {
      const x = points(3);
      const cond = { classLabels: labelsOf(LABELS) };
      const plain = classifierFreeGuidance(exact, { scale: 3, nullClass: NULL });
      for (const [s, inside] of [
        [0.1, false],
        [0.3, false],
        [0.31, true],
        [1, true],
        [3, true],
        [3.01, false],
        [50, false],
      ] as const) {
        const c = counting(exact);
        const G = classifierFreeGuidance(c.D, { scale: 3, nullClass: NULL, interval: [0.3, 3] });
        const out = G(x, sigmaOf(s), cond);
        if (inside) {
          assert.deepEqual(c.calls, [2 * B]);
          assert.equal(maxAbs(out, plain(x, sigmaOf(s), cond)), 0);
        } else {
          assert.deepEqual(c.calls, [B], `sigma ${s}: one evaluation outside the interval`);
          assert.equal(maxAbs(out, exact(x, sigmaOf(s), cond)), 0, 'outside: the conditional denoiser (w = 1)');
        }
      }
      // per-sample sigmas straddling the interval: each row follows its own sigma
      const sig = tensor(
        Array.from({ length: B }, (_, i) => (i % 3 === 0 ? 10 : 1)),
        { dtype: 'float64' },
      );
      const mixed = classifierFreeGuidance(exact, { scale: 3, nullClass: NULL, interval: [0.3, 3] })(x, sig, cond);
      const G = plain(x, sig, cond);
      const Dc = exact(x, sig, cond);
      for (let i = 0; i < B; i++) assert.equal(maxAbs(mixed.narrow(0, i, 1), (i % 3 === 0 ? Dc : G).narrow(0, i, 1)), 0, `row ${i}`);
      assert.throws(() => classifierFreeGuidance(exact, { scale: 3, nullClass: NULL, interval: [3, 0.3] }), /interval must be \[sigmaLo, sigmaHi\].*\[3,0.3\]/);
    }));

  test('rescale (Lin et al. 2024): phi = 0 is plain CFG; phi = 1 matches the conditional std per sample (x0 or eps); linear in phi', () =>
    tidy(() => {
      const x = points(4);
      const cond = { classLabels: labelsOf(LABELS) };
      const std = (t: Tensor) => t.std(1); // per sample, over the 2 coordinates
      for (const s of SIGMAS) {
        const sig = sigmaOf(s);
        const plain = classifierFreeGuidance(exact, { scale: 5, nullClass: NULL })(x, sig, cond);
        const Dc = exact(x, sig, cond);
        for (const space of ['x0', 'eps'] as const) {
          const at = (phi: number) => classifierFreeGuidance(exact, { scale: 5, nullClass: NULL, rescale: phi, rescaleSpace: space })(x, sig, cond);
          assert.equal(maxAbs(at(0), plain), 0);
          assert.ok(maxAbs(rescaleGuided(plain, Dc, x, 0, space), plain) < 1e-12, 'phi = 0: factor 1');
          const full1 = at(1);
          if (space === 'x0') assert.ok(maxAbs(std(full1), std(Dc)) < 1e-12);
          else assert.ok(maxAbs(std(x.sub(full1)), std(x.sub(Dc))) < 1e-12);
          assert.ok(maxAbs(at(0.7), plain.mul(0.3).add(full1.mul(0.7))) < 1e-12, `${space}: phi x_rescaled + (1 - phi) x_cfg`);
        }
      }
      assert.throws(() => classifierFreeGuidance(exact, { scale: 2, nullClass: NULL, rescale: 1.5 }), /rescale \(phi\) must be in \[0, 1\], got 1.5/);
    }));

  test('rescaleGuided on image-shaped tensors equals the formula computed elementwise in JavaScript', () =>
    tidy(() => {
      const g = new Generator(5);
      const [guided, conditional, x] = [g.randn([3, 2, 4, 4], { dtype: 'float64' }).mul(3), g.randn([3, 2, 4, 4], { dtype: 'float64' }), g.randn([3, 2, 4, 4], { dtype: 'float64' })];
      const rows = (t: Tensor) => Array.from({ length: 3 }, (_, i) => Array.from(t.select(0, i).toFloat64Array()));
      const sd = (v: number[]) => {
        const m = v.reduce((a, b) => a + b, 0) / v.length;
        return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1));
      };
      const [G, C, X] = [rows(guided), rows(conditional), rows(x)];
      const phi = 0.6;
      const x0 = rows(rescaleGuided(guided, conditional, x, phi, 'x0'));
      const eps = rows(rescaleGuided(guided, conditional, x, phi, 'eps'));
      for (let i = 0; i < 3; i++) {
        const fx = (phi * sd(C[i])) / sd(G[i]) + 1 - phi;
        const ge = G[i].map((v, j) => X[i][j] - v);
        const fe = (phi * sd(C[i].map((v, j) => X[i][j] - v))) / sd(ge) + 1 - phi;
        G[i].forEach((v, j) => {
          assert.ok(Math.abs(x0[i][j] - fx * v) < 1e-12);
          assert.ok(Math.abs(eps[i][j] - (X[i][j] - fe * ge[j])) < 1e-12);
        });
      }
    }));

  test('clear errors: no labels to guide toward, a bad scale or null class', () => {
    const x = points(6);
    assert.throws(() => classifierFreeGuidance(exact, { scale: 2, nullClass: NULL })(x, sigmaOf(1)), /cond.classLabels is required/);
    assert.throws(() => classifierFreeGuidance(exact, { scale: NaN, nullClass: NULL }), /scale must be a finite number, got NaN/);
    assert.throws(() => classifierFreeGuidance(exact, { scale: 2, nullClass: -1 }), /nullClass must be a non-negative integer .* got -1/);
    assert.throws(() => classifierGuidance(uncond, exactLogPosterior)(x, sigmaOf(1)), /classifierGuidance: cond.classLabels is required/);
    assert.throws(() => autoguidance(exact, exact, { scale: Infinity }), /autoguidance: scale must be a finite number, got Infinity/);
    x.dispose();
  });
});

describe('guided sampling concentrates on the class', () => {
  test('mean exact posterior p(y | x0) and the fraction nearest a class component rise with w (Heun, 16 steps)', () => {
    const n = 400;
    const y = 1;
    const stats = (w: number) =>
      tidy(() => {
        const xT = new Generator(7).randn([n, 2], { dtype: 'float64' }).mul(20);
        const G = classifierFreeGuidance(exact, { scale: w, nullClass: NULL });
        const x0 = noGrad(() => sampleHeun(G, xT, karrasSigmas(16, { sigmaMin: 0.01, sigmaMax: 20 }), { cond: { classLabels: full([n], y, { dtype: 'int64' }) } }));
        const post = exactLogPosterior(x0, sigmaOf(0, n), full([n], y, { dtype: 'int64' }))
          .exp()
          .mean()
          .item();
        const nearest = x0.unsqueeze(1).sub(gmm.means.unsqueeze(0)).square().sum(2).argmin(1); // [n] nearest component
        const frac = nearest.ge(2).float().mean().item(); // components 2, 3 are class 1
        return { post, frac };
      });
    const ws = [0, 1, 2, 4];
    const r = ws.map(stats);
    for (let i = 1; i < ws.length; i++) {
      assert.ok(1 - r[i].post < 0.5 * (1 - r[i - 1].post), `posterior at w = ${ws[i]}: ${r[i].post} vs ${r[i - 1].post} at w = ${ws[i - 1]}`);
      assert.ok(r[i].frac >= r[i - 1].frac, `nearest-component fraction at w = ${ws[i]}: ${r[i].frac} vs ${r[i - 1].frac}`);
    }
    assert.ok(r[0].frac < 0.65 && r[3].frac > 0.95, JSON.stringify(r));
    // Known answers: unguided, E_p[p(y | x)] = P(y) = 0.5; at w = 1 the samples follow p(x | y), so the mean
    // posterior is E_{p(x|y)}[p(y | x)], estimated here from 20000 exact draws of the class-conditional mixture.
    assert.ok(Math.abs(r[0].post - classPrior[y]) < 0.08, `w = 0: ${r[0].post} vs P(y) = ${classPrior[y]}`);
    const target = tidy(() => {
      const cc = gmm.classConditional(y);
      const x0 = cc.sample(20000, new Generator(8), { dtype: 'float64' });
      cc.dispose();
      return exactLogPosterior(x0, sigmaOf(0, 20000), full([20000], y, { dtype: 'int64' }))
        .exp()
        .mean()
        .item();
    });
    assert.ok(Math.abs(r[1].post - target) < 0.04, `w = 1: ${r[1].post} vs E_{p(x|y)}[p(y|x)] = ${target}`);
  });
});

describe('classifier guidance', () => {
  test('the gradient of log p(y | x, sigma) matches central finite differences (float64), also inside noGrad', () =>
    tidy(() => {
      const x = points(8);
      const labels = labelsOf(LABELS);
      const sig = tensor(
        Array.from({ length: B }, (_, i) => 0.1 * 1.6 ** i),
        { dtype: 'float64' },
      );
      const g = noGrad(() => classifierGradient(exactLogPosterior, x, sig, labels)).toFloat64Array();
      const xs = Array.from(x.toFloat64Array());
      const h = 1e-6;
      const lp = (v: number[]) => exactLogPosterior(tensor(v, { dtype: 'float64' }).reshape([B, 2]), sig, labels).toFloat64Array();
      for (let k = 0; k < xs.length; k++) {
        const up = xs.slice();
        const down = xs.slice();
        up[k] += h;
        down[k] -= h;
        const i = Math.floor(k / 2);
        const fd = (lp(up)[i] - lp(down)[i]) / (2 * h);
        assert.ok(Math.abs(g[k] - fd) < 1e-6 * (1 + Math.abs(fd)), `element ${k}: autograd ${g[k]}, finite differences ${fd}`);
      }
      // the guided denoiser adds exactly s sigma^2 times that gradient
      const s = 2.5;
      const G = noGrad(() => classifierGuidance(uncond, exactLogPosterior, { scale: s })(x, sig, { classLabels: labels }));
      const want = uncond(x, sig).add(tensor(Array.from(g), { dtype: 'float64' }).reshape([B, 2]).mul(sig.square().mul(s).unsqueeze(1)));
      assert.ok(maxAbs(G, want) < 1e-12);
    }));

  test('Bayes: the exact posterior as classifier with s = 1 turns the unconditional denoiser into the exact conditional one', () =>
    tidy(() => {
      const x = points(9, 2.5);
      const cond = { classLabels: labelsOf(LABELS) };
      const G = classifierGuidance(uncond, exactLogPosterior, { scale: 1 });
      for (const s of [0.02, 0.1, 0.4, 1.5, 8, 40]) {
        const err = noGrad(() => maxAbs(G(x, sigmaOf(s), cond), exact(x, sigmaOf(s), cond)));
        assert.ok(err < 1e-9 * Math.max(1, s * s), `sigma ${s}: |D + sigma^2 grad log p(y|x) - D_c| = ${err}`);
      }
      // s = 0 is the denoiser alone; conditional: true passes the labels to it
      assert.equal(maxAbs(classifierGuidance(uncond, exactLogPosterior, { scale: 0 })(x, sigmaOf(1), cond), uncond(x, sigmaOf(1))), 0);
      assert.equal(maxAbs(classifierGuidance(exact, exactLogPosterior, { scale: 0, conditional: true })(x, sigmaOf(1), cond), exact(x, sigmaOf(1), cond)), 0);
    }));

  test('a classifier with the wrong output shape or no dependence on x fails clearly', () =>
    tidy(() => {
      const x = points(10);
      const cond = { classLabels: labelsOf(LABELS) };
      assert.throws(() => classifierGuidance(uncond, (xx) => xx.sum(1, true))(x, sigmaOf(1), cond), /return log p\(y \| x, sigma\) of shape \[12\], got \[12, 1\]/);
      assert.throws(() => classifierGuidance(uncond, () => full([B], 0, { dtype: 'float64' }).requiresGrad_())(x, sigmaOf(1), cond), /does not depend on x/);
    }));
});

describe('autoguidance', () => {
  // A "bad version" of the model: the same classes with every component blurred.
  const weak = new GaussianMixture(
    [
      [-1, 0.5],
      [-0.3, -1],
      [1, 0],
      [0.4, 1.2],
    ],
    [0.9, 0.8, 0.85, 1],
    [0.3, 0.2, 0.35, 0.15],
    [0, 0, 1, 1],
  );
  after(() => weak.dispose());
  const Dweak: Denoiser = (x, sigma, cond) => weak.denoise(x, sigma, cond);

  test('the model as its own guide is the identity; w = 1 is the main model alone; otherwise D_g + w (D_m - D_g)', () =>
    tidy(() => {
      const x = points(11);
      const cond = { classLabels: labelsOf(LABELS) };
      for (const s of SIGMAS) {
        for (const w of [0, 0.4, 2.5, 9]) assert.equal(maxAbs(autoguidance(exact, exact, { scale: w })(x, sigmaOf(s), cond), exact(x, sigmaOf(s), cond)), 0);
        const main = counting(exact);
        assert.equal(maxAbs(autoguidance(main.D, Dweak, { scale: 1 })(x, sigmaOf(s), cond), exact(x, sigmaOf(s), cond)), 0);
        assert.deepEqual(main.calls, [B]);
        const Dm = exact(x, sigmaOf(s), cond);
        const Dg = Dweak(x, sigmaOf(s), cond);
        assert.ok(maxAbs(autoguidance(exact, Dweak, { scale: 2 })(x, sigmaOf(s), cond), Dm.mul(2).sub(Dg)) < 1e-12);
      }
      // with an interval: outside it, the main model alone
      const c = counting(Dweak);
      assert.equal(maxAbs(autoguidance(exact, c.D, { scale: 2, interval: [0.5, 5] })(x, sigmaOf(8), cond), exact(x, sigmaOf(8), cond)), 0);
      assert.deepEqual(c.calls, []);
    }));
});

describe('every guidance method with every sampler', () => {
  const weak = new GaussianMixture(
    [
      [-1, 0.5],
      [-0.3, -1],
      [1, 0],
      [0.4, 1.2],
    ],
    [0.9, 0.8, 0.85, 1],
    [0.3, 0.2, 0.35, 0.15],
    [0, 0, 1, 1],
  );
  after(() => weak.dispose());
  const wrappers: Record<string, Denoiser> = {
    'cfg batched': classifierFreeGuidance(exact, { scale: 3, nullClass: NULL }),
    'cfg two calls, eps rescale': classifierFreeGuidance(exact, { scale: 3, nullClass: NULL, batched: false, rescale: 0.7, rescaleSpace: 'eps' }),
    'cfg interval, x0 rescale': classifierFreeGuidance(exact, { scale: 3, nullClass: NULL, interval: [0.2, 2], rescale: 0.5 }),
    classifier: classifierGuidance(uncond, exactLogPosterior, { scale: 2 }),
    autoguidance: autoguidance(exact, (x, s, c) => weak.denoise(x, s, c), { scale: 2 }),
  };

  test('shapes, dtype and finiteness on short grids; no tensors left behind', () => {
    const n = 6;
    const cond: Conditioning = { classLabels: keep(labelsOf([0, 1, 1, 0, 1, 0])) };
    const xT = keep(new Generator(12).randn([n, 2]).mul(10)); // float32
    const sigmas = keep(karrasSigmas(4, { sigmaMin: 0.02, sigmaMax: 10 }));
    for (const [gname, G] of Object.entries(wrappers))
      for (const [sname, { fn }] of Object.entries(SAMPLERS)) {
        const before = memory().tensors;
        const out = noGrad(() => fn(G, xT, sigmas, { cond, generator: new Generator(3) }));
        assert.deepEqual(out.shape, [n, 2], `${gname} / ${sname}`);
        assert.equal(out.dtype, 'float32', `${gname} / ${sname}`);
        assert.ok(
          tidy(() => out.isfinite().all().item()),
          `${gname} / ${sname}: not finite`,
        );
        out.dispose();
        assert.equal(memory().tensors, before, `${gname} / ${sname}: leaks tensors`);
      }
    [cond.classLabels!, xT, sigmas].forEach((t) => t.dispose());
  });

  test('memory stays flat over a long loop of guided evaluations', () => {
    const x = keep(points(13));
    const cond: Conditioning = { classLabels: keep(labelsOf(LABELS)) };
    for (const [gname, G] of Object.entries(wrappers)) {
      const run = (k: number) =>
        noGrad(() =>
          tidy(() =>
            G(x, sigmaOf(0.1 + (k % 7)), cond)
              .sum()
              .item(),
          ),
        );
      for (let k = 0; k < 10; k++) run(k);
      const before = memory();
      for (let k = 0; k < 300; k++) run(k);
      const now = memory();
      assert.equal(now.tensors, before.tensors, `${gname}: tensors`);
      assert.equal(now.bytes, before.bytes, `${gname}: bytes`);
    }
    [x, cond.classLabels!].forEach((t) => t.dispose());
  });

  test('a call outside any tidy leaves exactly its result behind (every shortcut path too)', () => {
    const x = keep(points(15));
    const cond: Conditioning = { classLabels: keep(labelsOf(LABELS)) };
    const sig = keep(sigmaOf(0.7));
    const far = keep(sigmaOf(30));
    const shortcuts: Record<string, Denoiser> = {
      ...wrappers,
      'cfg w = 0': classifierFreeGuidance(exact, { scale: 0, nullClass: NULL }),
      'cfg w = 1': classifierFreeGuidance(exact, { scale: 1, nullClass: NULL }),
      'classifier s = 0, conditional': classifierGuidance(exact, exactLogPosterior, { scale: 0, conditional: true }),
      'autoguidance w = 1': autoguidance(exact, uncond, { scale: 1 }),
    };
    for (const [gname, G] of Object.entries(shortcuts))
      for (const [s, level] of [
        [sig, 0.7],
        [far, 30],
      ] as const) {
        const before = memory().tensors;
        const out = noGrad(() => G(x, s, cond));
        assert.equal(memory().tensors, before + 1, `${gname} at sigma ${level}`);
        out.dispose();
      }
    [x, cond.classLabels!, sig, far].forEach((t) => t.dispose());
  });

  test('guidanceInterval with a mixed batch frees what it does not return', () => {
    const x = keep(points(14));
    const sig = keep(
      tensor(
        Array.from({ length: B }, (_, i) => (i % 2 ? 0.1 : 1)),
        { dtype: 'float64' },
      ),
    );
    const G = guidanceInterval(uncond, (xx, s) => uncond(xx, s).mul(2), [0.5, 2]);
    const before = memory().tensors;
    const out = G(x, sig, undefined);
    assert.equal(memory().tensors, before + 1);
    tidy(() => {
      const want = uncond(x, sig).mul(cat([full([1, 1], 1, { dtype: 'float64' }), full([1, 1], 2, { dtype: 'float64' })]).repeat([B / 2, 1]));
      assert.equal(maxAbs(out, want), 0);
    });
    [x, sig, out].forEach((t) => t.dispose());
  });
});

describe('condition dropout in training', () => {
  let root: string;
  before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-guidance-'))));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const TINY = {
    dataLimit: 256,
    batchSize: 64,
    steps: 4,
    warmupSteps: 1,
    model: { type: 'unet', modelChannels: 8, groups: 4, channelMult: [1], attentionResolutions: [], midAttention: false },
    sampleEvery: 0,
    checkpointEvery: 0,
  };
  /** The labels the network saw at each step, next to the data's labels for that step. */
  function seen(labelDropout: number): { given: number[]; data: number[]; nullClass: number; embeddings: number } {
    const t = Trainer.create(resolveTrainConfig({ ...TINY, labelDropout, out: path.join(root, `p${labelDropout}`) }), { log: null });
    try {
      const net = t.net as UNet; // the U-Net of TINY
      const forward = net.forward.bind(net);
      const given: number[] = [];
      net.forward = (x: Tensor, c: Tensor, labels?: Tensor) => (given.push(...Array.from(labels!.toFloat64Array())), forward(x, c, labels));
      const data: number[] = [];
      for (let k = 0; k < TINY.steps; k++) {
        tidy(() => data.push(...Array.from(t.data.batchAt(k).labels!.toFloat64Array())));
        t.trainStep();
      }
      const embeddings = net.stateDict()['map_label.weight'].dim(0);
      return { given, data, nullClass: net.nullClass!, embeddings };
    } finally {
      t.dispose();
    }
  }

  test('labelDropout p replaces each label by the null class with probability p; the U-Net embeds numClasses + 1 labels', () => {
    for (const p of [0, 0.3, 1]) {
      const { given, data, nullClass, embeddings } = seen(p);
      assert.equal(nullClass, 10, 'Fashion-MNIST: 10 classes, null class 10');
      assert.equal(embeddings, 11, 'the class embedding has a row for the null class');
      assert.equal(given.length, TINY.steps * TINY.batchSize, 'one network call per step, with labels');
      given.forEach((l, i) => assert.ok(l === data[i] || l === nullClass, `label ${i}: ${l} is neither the data's ${data[i]} nor the null class`));
      assert.ok(data.every((l) => l < 10));
      const dropped = given.filter((l) => l === nullClass).length / given.length;
      if (p === 0 || p === 1) assert.equal(dropped, p);
      else assert.ok(Math.abs(dropped - p) < 4 * Math.sqrt((p * (1 - p)) / given.length), `dropped fraction ${dropped} for labelDropout ${p}`);
    }
  });
});
