// Evaluation metrics (src/eval): Frechet distance, KID, improved precision/recall, the toy
// distances and the report table.
//
// References: test/fixtures/eval_metrics.{json,safetensors}, written by
// scripts/fixtures/eval_metrics.py in float64 NumPy, plus FDs at 40 digits with mpmath; closed
// forms (Gaussians with commuting covariances, 1-D Wasserstein by hand, shifted sets); and
// statistical properties (KID is unbiased, a V-statistic is not).
// Tolerances:
//   eigenvalues     1e-12 max|lambda|: two backward-stable solvers agree to a few ulps of the norm.
//   FD vs mpmath    1e-10 relative: float64 rounding in covariance, eigensolver and products
//                   (observed ~2e-13 on (a, b) and ~1e-16 on the singular pair).
//   FD vs NumPy     1e-6 relative (the brief); NumPy keeps the null-space rounding noise that
//                   we set to 0, so the singular pair differs by ~3e-8 (mpmath sides with us).
//   KID, energy     1e-10 relative: the same float64 sums in another order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { eye, Generator, loadSafetensors, memory, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { GaussianMixture } from '../src/data';
import {
  energyDistance,
  FeatureStats,
  featureStats,
  formatColumns,
  formatMetric,
  formatMetricTable,
  formatReport,
  formatValue,
  frechetDistance,
  frechetTerms,
  kernelInceptionDistance,
  knnRadiiSquared,
  loadFeatureStats,
  metricRows,
  mmd2Biased,
  mmd2Unbiased,
  precisionRecall,
  saveFeatureStats,
  slicedWasserstein,
  symmetricEigen,
  wassersteinPP1d,
  EvalReport,
} from '../src/eval';

setNumThreads(1);

const FIX = path.resolve(__dirname, '../../test/fixtures');
const REF = JSON.parse(fs.readFileSync(path.join(FIX, 'eval_metrics.json'), 'utf8'));
const T = loadSafetensors(path.join(FIX, 'eval_metrics.safetensors')).tensors as Record<'a' | 'b' | 'x2' | 'y2' | 'z2' | 'dirs' | 'sym', Tensor>;

function close(actual: number, expected: number, rel: number, what: string): void {
  const err = Math.abs(actual - expected);
  assert.ok(err <= rel * Math.max(Math.abs(expected), 1e-300), `${what}: ${actual} vs ${expected} (relative error ${err / Math.abs(expected)} > ${rel})`);
}

/** Q = I - 2 v v^T / |v|^2: an exactly orthogonal (Householder) matrix, row-major. */
function householder(v: number[]): Float64Array {
  const d = v.length;
  const vv = v.reduce((a, x) => a + x * x, 0);
  const q = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) q[i * d + j] = (i === j ? 1 : 0) - (2 * v[i] * v[j]) / vv;
  return q;
}

/** Q diag(l) Q^T. */
function conjugate(q: Float64Array, l: number[]): Float64Array {
  const d = l.length;
  const s = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) s[i * d + j] += q[i * d + k] * l[k] * q[j * d + k];
  return s;
}

// ---- the eigensolver ----

test('symmetricEigen matches numpy.linalg.eigh and returns an orthonormal eigenbasis', () => {
  for (const [name, a, n] of [
    ['sym (indefinite, a 5-fold eigenvalue 0 cluster)', T.sym.toFloat64Array(), 40],
    ['cov(a)', featureStats(T.a).sigma, 64],
  ] as const) {
    const expected: number[] = name.startsWith('sym') ? REF.eigh.sym : REF.eigh.covA;
    const { values, vectors } = symmetricEigen(a, n);
    const scale = Math.max(...expected.map(Math.abs));
    values.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-12 * scale, `${name}: eigenvalue ${i}: ${v} vs ${expected[i]}`));
    const q = vectors!;
    let orth = 0;
    let resid = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let qtq = 0; // (Q^T Q)_ij
        let aq = 0; // (A Q)_ij
        for (let k = 0; k < n; k++) {
          qtq += q[k * n + i] * q[k * n + j];
          aq += a[i * n + k] * q[k * n + j];
        }
        orth = Math.max(orth, Math.abs(qtq - (i === j ? 1 : 0)));
        resid = Math.max(resid, Math.abs(aq - q[i * n + j] * values[j])); // A Q = Q Lambda
      }
    }
    assert.ok(orth < 1e-13, `${name}: |Q^T Q - I| = ${orth}`);
    assert.ok(resid < 1e-12 * scale, `${name}: |A Q - Q Lambda| = ${resid}`);
    assert.deepEqual(symmetricEigen(a, n, { vectors: false }).values, values, `${name}: eigenvalues alone are the same numbers`);
  }
});

test('symmetricEigen: small cases and argument errors', () => {
  assert.deepEqual(Array.from(symmetricEigen([5], 1).values), [5]);
  const { values, vectors } = symmetricEigen([2, 1, 1, 2], 2);
  assert.ok(Math.abs(values[0] - 1) < 1e-15 && Math.abs(values[1] - 3) < 1e-15);
  assert.ok(Math.abs(Math.abs(vectors![1]) - Math.SQRT1_2) < 1e-15); // column of 3 is (1, 1)/sqrt 2
  assert.deepEqual(Array.from(symmetricEigen([0, 0, 0, 0], 2).values), [0, 0]);
  assert.throws(() => symmetricEigen([1, 2, 3], 2), /a has 3 entries, an 2 x 2 matrix needs 4/);
  assert.throws(() => symmetricEigen([1], 0), /n must be a positive integer, got 0/);
  assert.throws(() => symmetricEigen([1, NaN, NaN, 1], 2), /non-finite/);
});

// ---- Frechet distance ----

test('FD of a set with itself is 0', () => {
  const s = featureStats(T.a);
  let tr = 0;
  for (let i = 0; i < 64; i++) tr += s.sigma[i * 64 + i];
  const { covTerm, meanTerm, distance } = frechetTerms(s, s);
  assert.equal(meanTerm, 0);
  assert.ok(Math.abs(covTerm) < 1e-8 * tr, `covTerm ${covTerm} vs tr(S) ${tr}`);
  assert.ok(distance >= 0 && distance < 1e-8 * tr);
  assert.ok(frechetDistance(T.a.narrow(0, 0, 20), T.a.narrow(0, 0, 20)) < 1e-8 * tr, 'also with a singular covariance');
});

test('FD matches the float64 NumPy reference and the 40-digit mpmath one (500 x 64 features)', () => {
  const t = frechetTerms(T.a, T.b);
  close(t.distance, REF.fd.ab.distance, 1e-6, 'FD vs NumPy');
  close(t.meanTerm, REF.fd.ab.meanTerm, 1e-12, 'mean term');
  close(t.covTerm, REF.fd.ab.covTerm, 1e-6, 'cov term');
  assert.ok(REF.fdMp, 'the fixture has mpmath references (rerun the script with mpmath importable)');
  close(t.distance, REF.fdMp.ab, 1e-10, 'FD vs mpmath');
  assert.equal(frechetDistance(featureStats(T.a), featureStats(T.b)), t.distance, 'statistics or tensors: the same number');
  assert.ok(frechetDistance(T.b, T.a) - t.distance < 1e-10 * t.distance, 'symmetric');
});

test('FD with singular covariances (N <= d): finite, and exact to ~1e-16 against mpmath', () => {
  // a[:20], b[:30] in 64-D: ranks 19 and 29. NumPy keeps the null-space rounding noise (~3e-8 off).
  const fd = frechetDistance(T.a.narrow(0, 0, 20), T.b.narrow(0, 0, 30));
  close(fd, REF.fdMp.singular, 1e-10, 'singular FD vs mpmath');
  close(fd, REF.fd.singular.distance, 1e-6, 'singular FD vs NumPy');
  // Degenerate Gaussians on perpendicular axes: W2^2 = |mu|^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2 = 1 + 1 - 0.
  const line = (i: number): FeatureStats => ({ mu: new Float64Array(2), sigma: Float64Array.from(i === 0 ? [1, 0, 0, 0] : [0, 0, 0, 1]), n: 2 });
  assert.equal(frechetDistance(line(0), line(1)), 2);
});

test('FD of Gaussians with commuting covariances: |mu1 - mu2|^2 + sum (sqrt l1 - sqrt l2)^2', () => {
  const d = 24;
  const g = new Generator(3);
  const v = Array.from(g.randn([d], { dtype: 'float64' }).toFloat64Array());
  const q = householder(v); // S1 = Q diag(l1) Q^T, S2 = Q diag(l2) Q^T commute
  const l1 = Array.from({ length: d }, (_, i) => (i < 4 ? 0 : 0.5 + i / 3)); // rank-deficient too
  const l2 = Array.from({ length: d }, (_, i) => (i % 5 === 0 ? 0 : 2 + Math.sin(i)));
  const mu1 = Float64Array.from({ length: d }, (_, i) => Math.cos(i));
  const mu2 = Float64Array.from({ length: d }, (_, i) => Math.cos(i) + 0.1 * i);
  let expected = 0;
  for (let i = 0; i < d; i++) expected += (mu1[i] - mu2[i]) ** 2 + (Math.sqrt(l1[i]) - Math.sqrt(l2[i])) ** 2;
  const fd = frechetDistance({ mu: mu1, sigma: conjugate(q, l1), n: 100 }, { mu: mu2, sigma: conjugate(q, l2), n: 100 });
  close(fd, expected, 1e-12, 'FD closed form');
  // 1-D: (m1 - m2)^2 + (s1 - s2)^2.
  close(frechetDistance({ mu: Float64Array.of(1), sigma: Float64Array.of(4), n: 9 }, { mu: Float64Array.of(-1), sigma: Float64Array.of(9), n: 9 }), 4 + 1, 1e-15, '1-D FD');
});

test('FD: sample statistics of a mixture approach its exact moments; a shifted mixture is |shift|^2 away', () => {
  const gmm = GaussianMixture.ring(8, { radius: 1, std: 0.1 });
  const shifted = tidy(() => new GaussianMixture(gmm.means.add(tensor([[0.3, -0.4]], { dtype: 'float64' })), gmm.stds));
  const exact = (m: GaussianMixture): FeatureStats => tidy(() => ({ mu: m.mean().toFloat64Array(), sigma: m.covariance().toFloat64Array(), n: 1e9 }));
  close(frechetDistance(exact(gmm), exact(shifted)), 0.25, 1e-12, 'FD of exact moments');
  const x = gmm.sample(20000, new Generator(0));
  const fd = frechetDistance(featureStats(x), exact(gmm));
  assert.ok(fd < 2e-3, `FD of 20000 samples to the exact moments: ${fd}`); // sampling noise ~ 1/N
  x.dispose();
  gmm.dispose();
  shifted.dispose();
});

test('feature statistics round-trip exactly through JSON and safetensors', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-stats-'));
  try {
    const s = featureStats(T.a.narrow(0, 0, 50), { space: 'toy-features' });
    assert.equal(s.n, 50);
    assert.equal(s.space, 'toy-features');
    for (const file of ['ref.json', 'ref.safetensors']) {
      const p = path.join(dir, file);
      saveFeatureStats(p, s);
      const r = loadFeatureStats(p);
      assert.deepEqual(r, s, `${file}: the same statistics, bit for bit`);
    }
    fs.writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({ format: 'other' }));
    assert.throws(() => loadFeatureStats(path.join(dir, 'bad.json')), /bad\.json is not a 'diffuse-feature-stats' object/);
    assert.throws(() => frechetDistance(s, { ...featureStats(T.b.narrow(0, 0, 50)), space: 'other' }), /different feature spaces: a 'toy-features', b 'other'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('FD: argument errors name the argument', () => {
  assert.throws(() => featureStats(T.a.narrow(0, 0, 1)), /featureStats: feats needs at least 2 rows, got shape \[1, 64\]/);
  assert.throws(() => featureStats(T.a.reshape([-1])), /feats must be 2-D \[N, d\], got shape \[32000\]/);
  assert.throws(() => frechetDistance(T.a, T.x2), /feature dimensions differ: a has 64, b has 2/);
  tidy(() =>
    assert.throws(
      () =>
        featureStats(
          tensor([
            [1, NaN],
            [0, 1],
          ]),
        ),
      /feats has non-finite values/,
    ),
  );
  assert.throws(() => frechetDistance({ mu: new Float64Array(2), sigma: new Float64Array(3), n: 5 }, featureStats(T.x2)), /a\.sigma has 3 entries, \[2, 2\] needs 4/);
});

// ---- KID ----

test('KID matches the NumPy reference: whole-set MMD^2 and seeded subsets (torch.randperm streams)', () => {
  close(mmd2Unbiased(T.a, T.b), REF.kid.mmd2ab, 1e-10, 'unbiased MMD^2');
  const r = REF.kid.subsets;
  const kid = kernelInceptionDistance(T.a, T.b, { numSubsets: r.numSubsets, subsetSize: r.subsetSize, seed: r.seed });
  assert.equal(kid.values.length, r.numSubsets);
  kid.values.forEach((v, i) => close(v, r.values[i], 1e-10, `subset ${i}`));
  close(kid.mean, r.mean, 1e-10, 'KID mean');
  close(kid.std, r.std, 1e-8, 'KID std');
  close(kid.stderr, r.std / Math.sqrt(r.numSubsets), 1e-8, 'KID stderr');
  assert.equal(kernelInceptionDistance(T.a, T.b, { numSubsets: 2, subsetSize: 5000 }).subsetSize, 500, 'subsets capped at the smaller set');
});

test('KID is unbiased: ~0 for one distribution (where the V-statistic is not), large for two', () => {
  const trials = 40;
  const u: number[] = [];
  const v: number[] = [];
  for (let s = 0; s < trials; s++) {
    tidy(() => {
      const g = new Generator(100 + s);
      const x = g.randn([60, 8], { dtype: 'float64' });
      const y = g.randn([60, 8], { dtype: 'float64' });
      u.push(mmd2Unbiased(x, y));
      v.push(mmd2Biased(x, y));
    });
  }
  const meanSe = (a: number[]) => {
    const m = a.reduce((p, c) => p + c, 0) / a.length;
    const sd = Math.sqrt(a.reduce((p, c) => p + (c - m) ** 2, 0) / (a.length - 1));
    return [m, sd / Math.sqrt(a.length)];
  };
  const [mu, seu] = meanSe(u);
  const [mv, sev] = meanSe(v);
  assert.ok(Math.abs(mu) < 3 * seu, `unbiased: mean ${mu} over ${trials} seeds, standard error ${seu}`);
  assert.ok(mv > 10 * sev, `biased: mean ${mv}, standard error ${sev}: clearly above 0`);

  const g = new Generator(7);
  tidy(() => {
    const x = g.randn([600, 8]);
    const y = g.randn([600, 8]);
    const same = kernelInceptionDistance(x, y, { numSubsets: 20, subsetSize: 200, seed: 1 });
    assert.ok(Math.abs(same.mean) < 2 * same.stderr, `same law: KID ${same.mean} +- ${same.stderr}`);
    const other = kernelInceptionDistance(x, y.mul(1.3).add(0.3), { numSubsets: 20, subsetSize: 200, seed: 1 });
    assert.ok(other.mean > 20 * other.stderr && other.mean > 50 * Math.abs(same.mean), `different laws: KID ${other.mean} +- ${other.stderr}`);
  });
});

test('KID: argument errors', () => {
  assert.throws(() => kernelInceptionDistance(T.a, T.b, { numSubsets: 0 }), /numSubsets must be a positive integer, got 0/);
  assert.throws(() => kernelInceptionDistance(T.a, T.b, { subsetSize: 1.5 }), /subsetSize must be an integer >= 2, got 1.5/);
  assert.throws(() => kernelInceptionDistance(T.a, T.b, { subsetSize: 1 }), /subsetSize must be an integer >= 2, got 1/);
  assert.throws(() => mmd2Unbiased(T.a, T.x2), /feature dimensions differ: 64 and 2/);
  assert.ok(Number.isNaN(kernelInceptionDistance(T.a, T.b, { numSubsets: 1, subsetSize: 10 }).std), 'one subset: no spread');
});

// ---- precision / recall ----

test('precision/recall match the brute-force NumPy reference', () => {
  const { k, ab, abHalf } = REF.pr;
  for (const dtype of ['float64', 'float32'] as const) {
    assert.deepEqual(precisionRecall(T.a, T.b, { k, dtype }), { ...ab, k }, dtype);
    assert.deepEqual(precisionRecall(T.a, T.b.narrow(0, 0, 250), { k, dtype, batchSize: 64 }), { ...abHalf, k }, `${dtype}, batches of 64`);
  }
});

test('knnRadiiSquared is the k-th neighbour distance, the point itself excluded', () => {
  tidy(() => {
    const x = tensor([[0], [1], [3], [7]], { dtype: 'float64' });
    assert.deepEqual(Array.from(knnRadiiSquared(x, 1, 3).toFloat64Array()), [1, 1, 4, 16]);
    assert.deepEqual(Array.from(knnRadiiSquared(x, 2, 2).toFloat64Array()), [9, 4, 9, 36]);
  });
});

test('precision/recall: 1/1 on identical sets; a shifted set loses precision; mode dropping loses recall', () => {
  const gmm = GaussianMixture.ring(8, { radius: 1, std: 0.05 });
  const half = tidy(() => new GaussianMixture(gmm.means.narrow(0, 0, 4), gmm.stds.narrow(0, 0, 4)));
  tidy(() => {
    const real = gmm.sample(1500, new Generator(1));
    assert.deepEqual(precisionRecall(real, real), { precision: 1, recall: 1, k: 3 });
    const good = precisionRecall(real, gmm.sample(1500, new Generator(2)));
    assert.ok(good.precision > 0.95 && good.recall > 0.95, `same mixture: ${JSON.stringify(good)}`);
    const shifted = precisionRecall(real, gmm.sample(1500, new Generator(2)).add(0.15));
    assert.ok(shifted.precision < 0.5, `shifted: precision ${shifted.precision}`);
    const dropped = precisionRecall(real, half.sample(1500, new Generator(3)));
    assert.ok(dropped.precision > 0.95, `half the modes: precision stays high (${dropped.precision})`);
    assert.ok(dropped.recall > 0.4 && dropped.recall < 0.6, `half the modes: recall ~0.5 (${dropped.recall})`);
  });
  gmm.dispose();
  half.dispose();
  assert.throws(() => precisionRecall(T.a, T.b, { k: 0 }), /k must be a positive integer, got 0/);
  assert.throws(() => precisionRecall(T.a.narrow(0, 0, 3), T.b), /real needs at least 4 rows/);
});

// ---- toy distances ----

test('energy distance and sliced Wasserstein match the NumPy reference', () => {
  close(energyDistance(T.x2, T.y2), REF.toy.energyXY.ustat, 1e-10, 'energy (U-statistic)');
  close(energyDistance(T.x2, T.y2, { unbiased: false }), REF.toy.energyXY.vstat, 1e-10, 'energy (V-statistic)');
  close(slicedWasserstein(T.x2, T.y2, { p: 1, directions: T.dirs }), REF.toy.sw1XY, 1e-12, 'SW1, 300 vs 200 points');
  close(slicedWasserstein(T.x2, T.z2, { p: 2, directions: T.dirs }), REF.toy.sw2XZ, 1e-12, 'SW2');
});

test('1-D Wasserstein by hand, and SW2 of a shifted copy along the axes', () => {
  assert.equal(wassersteinPP1d([0, 1], [0, 1, 2], 1), 0.5); // integral of |F - G| = 1/6 + 1/3
  assert.equal(wassersteinPP1d([0, 1, 2], [0, 1, 2], 2), 0);
  close(wassersteinPP1d([0], [1, 3], 2), (1 + 9) / 2, 1e-15, 'W2^2 of a point mass');
  tidy(() => {
    const x = new Generator(5).randn([100, 2], { dtype: 'float64' });
    const sw = slicedWasserstein(x, x.add(tensor([0.3, -0.4], { dtype: 'float64' })), { directions: eye(2) });
    close(sw, Math.sqrt((0.09 + 0.16) / 2), 1e-12, 'SW2 of a shift along e1, e2');
  });
  assert.throws(() => slicedWasserstein(T.x2, T.y2, { p: 0.5 }), /p must be a finite number >= 1, got 0.5/);
  tidy(() => assert.throws(() => slicedWasserstein(T.x2, T.y2, { directions: tensor([[0, 0]]) }), /a direction has zero length/));
});

test('toy metrics separate a mixture from a shifted one and are ~0 between two samples of one', () => {
  const gmm = GaussianMixture.ring(8, { radius: 1, std: 0.1 });
  const wrong = tidy(() => new GaussianMixture(gmm.means.mul(1.2), gmm.stds));
  tidy(() => {
    const x = gmm.sample(1000, new Generator(1));
    const y = gmm.sample(1000, new Generator(2));
    const z = wrong.sample(1000, new Generator(3));
    const [eSame, eWrong] = [energyDistance(x, y), energyDistance(x, z)];
    const [sSame, sWrong] = [slicedWasserstein(x, y, { seed: 4 }), slicedWasserstein(x, z, { seed: 4 })];
    assert.ok(Math.abs(eSame) < 0.05 * eWrong, `energy: same ${eSame}, wrong ${eWrong}`);
    assert.ok(sSame ** 2 < 0.15 * sWrong ** 2, `SW2: same ${sSame}, wrong ${sWrong} (squared, as the energy distance)`);
    assert.ok(energyDistance(x, y, { unbiased: false }) > 0, 'the V-statistic is never negative');
  });
  gmm.dispose();
  wrong.dispose();
});

// ---- report ----

test('report: a metric table and a JSON record', () => {
  const report: EvalReport = {
    space: 'fmnist-classifier',
    sampler: 'heun',
    grid: 'karras',
    steps: 18,
    guidance: null,
    seed: 0,
    n: 10000,
    metrics: { fd: { value: 3.214159 }, kid: { value: 0.00123456, stderr: 0.000101 }, precision: { value: 0.7 }, tiny: { value: 1.5e-7 } },
  };
  assert.equal(formatMetricTable(metricRows(report)), ['metric     value     +- stderr', 'fd         3.214', 'kid        0.001235  +- 0.000101', 'precision  0.7', 'tiny       1.500e-7'].join('\n'));
  assert.equal(formatReport(report).split('\n')[0], '10000 samples, heun (karras, 18 steps), guidance none, seed 0; features: fmnist-classifier');
  assert.deepEqual(JSON.parse(JSON.stringify(report)), report);
  assert.equal(formatMetricTable([{ name: 'fd', value: 2 }]), 'metric  value\nfd      2');
  assert.equal(formatValue(-1234567), '-1.235e+6');
  assert.equal(formatValue(NaN), 'NaN');
  assert.equal(formatMetric({ value: 0.00123456, stderr: 0.000101 }), '0.001235 +- 0.0001');
  assert.equal(formatMetric({ value: 14.14 }), '14.14');
  assert.equal(
    formatColumns(
      ['steps', 'fd', 'kid'],
      [
        ['20', '14.1', '1.6 +- 0.03'],
        ['100', '7.45', '-'],
      ],
    ),
    ['steps  fd    kid', '20     14.1  1.6 +- 0.03', '100    7.45  -'].join('\n'),
  );
  assert.throws(() => formatMetricTable([], { digits: 0 }), /digits must be an integer in 1\.\.17, got 0/);
});

// ---- memory ----

test('repeated metric calls leave native memory flat', () => {
  const a = T.a.narrow(0, 0, 100);
  const b = T.b.narrow(0, 0, 120);
  const round = () => {
    frechetDistance(a, b);
    kernelInceptionDistance(a, b, { numSubsets: 3, subsetSize: 50 });
    precisionRecall(a, b, { batchSize: 32 });
    energyDistance(T.x2, T.y2);
    slicedWasserstein(T.x2, T.y2, { projections: 8 });
  };
  round();
  const before = memory();
  for (let i = 0; i < 5; i++) round();
  const after = memory();
  assert.equal(after.tensors, before.tensors);
  assert.equal(after.bytes, before.bytes);
});
