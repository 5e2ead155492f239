// Progressive distillation on the analytic mixture, whose denoiser is exact at every sigma:
// with it as the teacher, the target x~ of Salimans & Ho 2022, Algorithm 2 equals the
// closed form computed from two analytic DDIM steps; a student that outputs the target takes
// the teacher's two steps in one (checked against the shipped DDIM sampler); the loss of such a
// student is 0 and the teacher's own is not; truncated SNR and the halving rounds.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, memory, setNumThreads, tensor, tidy } from '../src/engine';
import { Tensor } from '../src/engine/tensor';
import { Denoiser } from '../src/core/denoiser';
import { GaussianMixture } from '../src/data/mixture';
import { sampleDDIM } from '../src/sampling/ddim';
import { halvingRounds, progressiveLoss, progressiveTarget, truncatedSnrError } from '../src/distillation/progressive';
import { truncatedSnrWeighting } from '../src/training/weighting';

setNumThreads(1);

const gmm = new GaussianMixture(
  [
    [-1, 0.5],
    [1, -0.5],
    [0.2, 1.2],
  ],
  [0.15, 0.3, 0.2],
  [0.5, 0.3, 0.2],
);
const exact: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const col = (v: number, B: number) => tensor(new Array<number>(B).fill(v), { dtype: 'float64' });

/** One analytic DDIM step, written out here: x' = D + (s'/s)(x - D), D the exact denoiser (scalar sigmas). */
function analyticDDIM(x: Tensor, s: number, sNext: number): Tensor {
  return tidy(() => {
    const d = gmm.denoise(x, s);
    return d.add(x.sub(d).mul(sNext / s));
  });
}

describe('progressive distillation target (Algorithm 2) on the exact mixture denoiser', () => {
  const B = 64;
  const x = tidy(() => gmm.sample(B, new Generator(1), { dtype: 'float64' }).add(new Generator(2).randn([B, 2], { dtype: 'float64' }).mul(1.5)));

  for (const [s, mid, next] of [
    [2.5, 1.1, 0.4],
    [0.8, 0.3, 0],
  ])
    test(`x~ equals the closed form from two analytic DDIM steps (${s} -> ${mid} -> ${next})`, () => {
      const sig = [col(s, B), col(mid, B), col(next, B)];
      const before = memory().tensors;
      const target = progressiveTarget(exact, x, sig[0], sig[1], sig[2]);
      assert.equal(memory().tensors, before + 1, 'progressiveTarget leaves only its result');
      const x2 = tidy(() => analyticDDIM(analyticDDIM(x, s, mid), mid, next));
      const r = next / s;
      const want = tidy(() => x2.sub(x.mul(r)).div(1 - r));
      assert.ok(maxDiff(target, want) < 1e-12, `max |x~ - closed form| = ${maxDiff(target, want)}`);
      // One student DDIM step with D_student = x~ lands on the teacher's two-step result ...
      const student = tidy(() => target.add(x.sub(target).mul(r)));
      assert.ok(maxDiff(student, x2) < 1e-12);
      // ... which is not the teacher's own one-step result (the test can fail).
      const one = analyticDDIM(x, s, next);
      assert.ok(maxDiff(one, x2) > 1e-2, `two steps differ from one: ${maxDiff(one, x2)}`);
      for (const t of [target, x2, want, student, one, ...sig]) t.dispose();
    });

  test("a student that outputs the target reproduces the teacher's two-step map through the DDIM sampler", () => {
    const [s, mid] = [1.7, 0.6];
    const studentD: Denoiser = (xs, sigma) => progressiveTarget(exact, xs, sigma, col(mid, xs.dim(0)), col(0, xs.dim(0)));
    const two = sampleDDIM(exact, x, tensor([s, mid, 0], { dtype: 'float64' }));
    const one = sampleDDIM(studentD, x, tensor([s, 0], { dtype: 'float64' }));
    assert.ok(maxDiff(one, two) < 1e-12, `max diff ${maxDiff(one, two)}`);
    const teacherOne = sampleDDIM(exact, x, tensor([s, 0], { dtype: 'float64' }));
    assert.ok(maxDiff(teacherOne, two) > 1e-2);
    for (const t of [two, one, teacherOne]) t.dispose();
  });

  test('progressiveLoss is 0 for a student that outputs the target on the student grid, and positive for the teacher itself', () => {
    const grid = [3, 2, 1.2, 0.7, 0.35, 0.15, 0.05, 0.01, 0]; // N = 8 teacher steps
    const index = new Map(grid.map((v, i) => [v, i]));
    const studentD: Denoiser = (xs, sigma) => {
      const i = Array.from(sigma.toFloat64Array(), (v) => index.get(v)!);
      return progressiveTarget(
        exact,
        xs,
        sigma,
        tensor(
          i.map((k) => grid[k + 1]),
          { dtype: 'float64' },
        ),
        tensor(
          i.map((k) => grid[k + 2]),
          { dtype: 'float64' },
        ),
      );
    };
    const x0 = gmm.sample(B, new Generator(3), { dtype: 'float64' });
    const perfect = tidy(() => progressiveLoss(studentD, exact, x0, { sigmas: grid, generator: new Generator(4) }).loss.item());
    const teacher = tidy(() => progressiveLoss(exact, exact, x0, { sigmas: grid, generator: new Generator(4) }).loss.item());
    assert.ok(perfect < 1e-20, `loss of the perfect student ${perfect}`);
    assert.ok(teacher > 1e-4, `loss of the teacher as student ${teacher}`);
    assert.throws(() => progressiveLoss(exact, exact, x0, { sigmas: [2, 1, 0.5, 0], generator: new Generator(0) }), /even number/);
    x0.dispose();
  });
});

describe('truncated SNR and rounds', () => {
  test('max(SNR, 1): 1 / sigma^2 below sigma = 1, 1 above; in v space divided by SNR + 1', () => {
    const w = tidy(() => Array.from(truncatedSnrWeighting()(tensor([0.5, 1, 2], { dtype: 'float64' })).toFloat64Array()));
    assert.deepEqual(w, [4, 1, 1]);
    const v = tidy(() => Array.from(truncatedSnrWeighting('v')(tensor([0.5], { dtype: 'float64' })).toFloat64Array()));
    assert.ok(Math.abs(v[0] - 4 / 5) < 1e-15);
    const e = tidy(() => truncatedSnrError(tensor([[1, 1]]), tensor([[0, 0]]), tensor([0.5], { dtype: 'float64' })).loss.item());
    assert.equal(e, 4);
  });
  test('halvingRounds', () => {
    assert.deepEqual(halvingRounds(64, 4), [64, 32, 16, 8]);
    assert.deepEqual(halvingRounds(2, 1), [2]);
    assert.throws(() => halvingRounds(48, 4), /power of 2/);
    assert.throws(() => halvingRounds(4, 4), /power of 2/);
  });
});
