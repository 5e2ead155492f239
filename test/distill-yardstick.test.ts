// The yardstick's arithmetic and wiring, on the analytic mixture (exact denoiser as both teacher
// and "student", a toy distance in place of FD): the solvers it picks cost exactly the student's
// NFE, G(N) is the formula of docs/distillation.md on the rows it reports, and the chart draws.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, setNumThreads } from '../src/engine';
import { Denoiser } from '../src/core/denoiser';
import { GaussianMixture } from '../src/data/mixture';
import { energyDistance } from '../src/eval/toy';
import { resolveTrainConfig } from '../src/training/config';
import { PreparedGuidance } from '../src/guidance/load';
import { gapClosed, stepsForNfe, yardstick, yardstickChart, YardstickRow } from '../src/distillation/yardstick';

setNumThreads(1);

describe('the yardstick', () => {
  test('stepsForNfe and gapClosed', () => {
    assert.equal(stepsForNfe('ddim', 4), 4);
    assert.equal(stepsForNfe('heun', 5), 3); // 2N - 1
    assert.equal(stepsForNfe('heun', 4), null);
    assert.equal(stepsForNfe('dpmpp-2m', 8, 2), 4); // CFG: two passes per step
    assert.equal(gapClosed(20, 10, 6), 10 / 14);
    assert.equal(gapClosed(20, 6, 6), 1);
    assert.equal(gapClosed(20, 25, 6), -5 / 14);
    assert.equal(gapClosed(6, 5, 6), null);
  });

  test('reference, solvers at the student NFE, ratios and G(N) on the exact mixture denoiser', () => {
    const gmm = GaussianMixture.ring(4, { radius: 1, std: 0.2 });
    const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
    const held = gmm.sample(400, new Generator(9));
    const meta = { config: resolveTrainConfig({ data: '8gaussians', model: 'mlp', timesteps: 100 }), sampleShape: [2] };
    const r = yardstick({
      teacher: { meta, denoiser: D, guidance: null },
      students: [{ name: 's2', group: 'g', meta, denoiser: D, guidance: null, steps: 2, sampler: 'ddim', grid: 'trailing' }],
      scale: null,
      n: 200,
      seed: 0,
      labels: null,
      referenceSteps: 100,
      measure: (x) => ({ fd: { value: energyDistance(x, held) } }),
    });
    assert.equal(r.reference.nfe, 100);
    assert.ok(r.solvers.length >= 4 && r.solvers.every((s) => s.nfe === 2), r.solvers.map((s) => `${s.label} ${s.nfe}`).join('; '));
    const st = r.students[0];
    assert.equal(st.nfe, 2);
    const best = Math.min(...r.solvers.map((s) => s.metrics.fd.value));
    assert.equal(st.bestSolver!.metrics.fd.value, best);
    assert.ok(Math.abs(st.fdRatio - st.metrics.fd.value / r.reference.metrics.fd.value) < 1e-15);
    assert.equal(st.gap, gapClosed(best, st.metrics.fd.value, r.reference.metrics.fd.value));
    const img = yardstickChart(r);
    assert.ok(img.width > 0 && img.height > 0);
    held.dispose();
    gmm.dispose();
  });

  test('under classifier-free guidance the teacher costs 2 evaluations per denoiser call, a guided student 1: rows at equal NFE', () => {
    const gmm = GaussianMixture.ring(4, { radius: 1, std: 0.2 });
    const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
    const held = gmm.sample(200, new Generator(9));
    const meta = { config: resolveTrainConfig({ data: '8gaussians', model: 'mlp', timesteps: 100 }), sampleShape: [2] };
    // A stand-in for CFG that evaluates its base twice per call, as batched CFG runs 2B rows: the counting must see both.
    const twice =
      (base: Denoiser): Denoiser =>
      (x, sigma, cond) => {
        base(x, sigma, cond).dispose();
        return base(x, sigma, cond);
      };
    const guidance: PreparedGuidance = { at: (_: number, base: Denoiser = D) => ({ denoiser: twice(base), describe: 'cfg w = 3' }), dispose: () => {} };
    const r = yardstick({
      teacher: { meta, denoiser: D, guidance },
      students: [{ name: 's4', group: 'g', meta, denoiser: D, guidance: null, steps: 4, sampler: 'ddim', grid: 'trailing' }],
      scale: 3,
      n: 100,
      seed: 0,
      labels: null,
      referenceSteps: 10,
      solvers: [{ sampler: 'ddim', grid: 'trailing' }],
      measure: (x) => ({ fd: { value: energyDistance(x, held) } }),
    });
    assert.equal(r.reference.nfe, 20);
    assert.deepEqual(
      r.solvers.map((s) => [s.steps, s.nfe]),
      [[2, 4]],
    );
    assert.equal(r.students[0].nfe, 4);
    assert.equal(r.students[0].bestSolver, r.solvers[0]);
    held.dispose();
    gmm.dispose();
  });

  test('a row cache: a second run reuses every row of models with an id and measures the rest', () => {
    const gmm = GaussianMixture.ring(4, { radius: 1, std: 0.2 });
    const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
    const held = gmm.sample(100, new Generator(9));
    const meta = { config: resolveTrainConfig({ data: '8gaussians', model: 'mlp', timesteps: 50 }), sampleShape: [2] };
    const rows = new Map<string, YardstickRow>();
    let measured = 0;
    const run = (studentId: string | undefined) =>
      yardstick({
        teacher: { meta, denoiser: D, guidance: null, id: 'teacher' },
        students: [{ name: 's2', group: 'g', meta, denoiser: D, guidance: null, steps: 2, sampler: 'ddim', grid: 'trailing', id: studentId }],
        scale: null,
        n: 50,
        seed: 0,
        labels: null,
        referenceSteps: 50,
        solvers: [
          { sampler: 'ddim', grid: 'trailing' },
          { sampler: 'euler', grid: 'karras' },
        ],
        measure: (x) => (measured++, { fd: { value: energyDistance(x, held) } }),
        rowCache: { get: (k) => rows.get(k), set: (k, r) => void rows.set(k, r) },
      });
    const first = run('student');
    assert.equal(measured, 4); // reference, student, two solvers
    assert.equal(rows.size, 4);
    const second = run('student');
    assert.equal(measured, 4, 'nothing measured again');
    assert.deepEqual(second, first);
    run(undefined); // a student without an id is always measured; the teacher's rows are reused
    assert.equal(measured, 5);
    held.dispose();
    gmm.dispose();
  });
});
