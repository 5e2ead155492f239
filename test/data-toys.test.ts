// 2-D toys: shapes, determinism by seed, the documented moments, and each shape's
// geometry (points on the moons, on the roll, in the dark checkerboard cells).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, memory, tidy, Tensor } from '../src/engine';
import { checkerboard, eightGaussians, swissRoll, TOYS, twoMoons } from '../src/data';

/** Columns of an [n, 2] tensor as float64 arrays. */
function cols(x: Tensor): [Float64Array, Float64Array] {
  const v = x.toFloat64Array();
  const n = v.length / 2;
  const a = new Float64Array(n);
  const b = new Float64Array(n);
  for (let i = 0; i < n; i++) [a[i], b[i]] = [v[2 * i], v[2 * i + 1]];
  return [a, b];
}
const mean = (a: Float64Array) => a.reduce((s, v) => s + v, 0) / a.length;
const variance = (a: Float64Array) => {
  const m = mean(a);
  return a.reduce((s, v) => s + (v - m) ** 2, 0) / a.length;
};

test('every toy: [n, 2] float32, the same for the same seed, different for another', () => {
  for (const [name, sample] of Object.entries(TOYS)) {
    const [a, b, c] = [sample(500, new Generator(3)), sample(500, new Generator(3)), sample(500, new Generator(4))];
    assert.deepEqual(a.shape, [500, 2], name);
    assert.equal(a.dtype, 'float32', name);
    assert.deepEqual(a.data(), b.data(), `${name}: same seed, same samples`);
    assert.notDeepEqual(a.data(), c.data(), `${name}: another seed, other samples`);
    assert.equal(sample(0, new Generator(0)).dim(0), 0);
  }
  assert.throws(() => twoMoons(-1, new Generator(0)), /non-negative integer/);
});

test('documented moments: mean ~0, per-coordinate variances as stated in toys.ts', () => {
  const expected: Record<string, [number, number]> = {
    'two-moons': [1.49, 0.498],
    'swiss-roll': [0.9, 0.992],
    '8gaussians': [1.04, 1.04],
    checkerboard: [1, 1],
  };
  for (const [name, sample] of Object.entries(TOYS)) {
    const [x, y] = cols(sample(40000, new Generator(7)));
    for (const [c, v, want] of [
      [x, 'x', expected[name][0]],
      [y, 'y', expected[name][1]],
    ] as const) {
      assert.ok(Math.abs(mean(c)) < 0.03, `${name} ${v}: mean ${mean(c)}`);
      assert.ok(Math.abs(variance(c) - want) < 0.04, `${name} ${v}: variance ${variance(c)}, documented ${want}`);
    }
  }
});

test('two moons without noise lie on the two half circles', () => {
  const [x, y] = cols(twoMoons(2000, new Generator(1), { noise: 0 }));
  let upper = 0;
  for (let i = 0; i < x.length; i++) {
    const [u, v] = [x[i] / 1.4 + 0.5, y[i] / 1.4 + 0.25]; // back to sklearn's coordinates
    const outer = Math.abs(Math.hypot(u, v) - 1) < 1e-5 && v >= -1e-6;
    const inner = Math.abs(Math.hypot(u - 1, v - 0.5) - 1) < 1e-5 && v <= 0.5 + 1e-6;
    assert.ok(outer || inner, `point (${u}, ${v}) is on neither moon`);
    if (outer) upper++;
  }
  assert.ok(upper > 900 && upper < 1100, `${upper} of 2000 on the upper moon`);
});

test('the swiss roll without noise is the spiral r = t at angle t, t in [1.5 pi, 4.5 pi]', () => {
  const [x, y] = cols(swissRoll(2000, new Generator(2), { noise: 0 }));
  for (let i = 0; i < x.length; i++) {
    const [u, v] = [7 * x[i] + 2, 7 * y[i] + 2 / (3 * Math.PI)];
    const t = Math.hypot(u, v);
    assert.ok(t >= 1.5 * Math.PI - 1e-3 && t <= 4.5 * Math.PI + 1e-3, `radius ${t}`);
    assert.ok(Math.abs(u - t * Math.cos(t)) < 1e-3 && Math.abs(v - t * Math.sin(t)) < 1e-3, `(${u}, ${v}) is off the spiral`);
  }
});

test('checkerboard points fall in the dark cells only, all 8 of them about equally', () => {
  const [x, y] = cols(checkerboard(8000, new Generator(5)));
  const counts = new Map<string, number>();
  for (let i = 0; i < x.length; i++) {
    const [cx, cy] = [Math.floor((x[i] * 2) / Math.sqrt(3)), Math.floor((y[i] * 2) / Math.sqrt(3))]; // cells of the [-2, 2]^2 board
    assert.ok(cx >= -2 && cx <= 1 && cy >= -2 && cy <= 1, `(${x[i]}, ${y[i]}) is off the board`);
    assert.equal((((cx + cy) % 2) + 2) % 2, 0, `(${x[i]}, ${y[i]}) is in a light cell`);
    counts.set(`${cx},${cy}`, (counts.get(`${cx},${cy}`) ?? 0) + 1);
  }
  assert.equal(counts.size, 8);
  for (const c of counts.values()) assert.ok(c > 800 && c < 1200, `cell count ${c}`);
});

test('eight Gaussians: points cluster at the 8 directions, radius sqrt(2)', () => {
  const [x, y] = cols(eightGaussians(4000, new Generator(9)));
  const r = Array.from(x, (v, i) => Math.hypot(v, y[i]));
  assert.ok(Math.abs(r.reduce((s, v) => s + v, 0) / r.length - Math.SQRT2) < 0.03);
});

test('samplers free their intermediates', () => {
  const before = memory().tensors;
  for (const sample of Object.values(TOYS)) tidy(() => void sample(100, new Generator(0)));
  assert.equal(memory().tensors, before);
});
