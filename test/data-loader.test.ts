// The DataLoader: the same batches for the same seed, new orders per epoch, every
// sample once per epoch, flips that are exact mirror images, exact resumption, and
// flat memory over many batches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromBytes, Generator, memory, tensor, Tensor, tidy } from '../src/engine';
import { Batch, DataLoader, loadFashionMNIST } from '../src/data';

// 103 images [1, 2, 3]: image i is [[i, 100, 200], [i, 150, 250]] (left-right asymmetric), label i % 7
const N = 103;
const pixels = new Uint8Array(N * 6);
for (let i = 0; i < N; i++) pixels.set([i, 100, 200, i, 150, 250], 6 * i);
const images = fromBytes(pixels, 'uint8', [N, 1, 2, 3]);
const labels = tensor(
  Array.from({ length: N }, (_, i) => i % 7),
  { dtype: 'int64' },
);

const ints = (t: Tensor) => Array.from(t.data() as BigInt64Array, Number);
const same = (a: Batch, b: Batch) => {
  assert.deepEqual(a.x.data(), b.x.data());
  assert.deepEqual(ints(a.labels!), ints(b.labels!));
  assert.deepEqual(ints(a.indices), ints(b.indices));
};

test('batches: images scaled to [-1, 1] exactly, with their labels and indices', () => {
  const loader = new DataLoader({ images, labels }, { batchSize: 10, seed: 1 });
  assert.equal(loader.stepsPerEpoch, 10);
  const b = loader.batchAt(3);
  assert.deepEqual(b.x.shape, [10, 1, 2, 3]);
  assert.equal(b.x.dtype, 'float32');
  const idx = ints(b.indices);
  const x = b.x.data() as Float32Array;
  idx.forEach((i, k) => {
    assert.deepEqual(
      Array.from(x.subarray(6 * k, 6 * k + 6)),
      [i, 100, 200, i, 150, 250].map((v) => Math.fround(Math.fround(v / 127.5) - 1)),
    ); // in float32
    assert.equal(ints(b.labels!)[k], i % 7);
  });
  const ends = tidy(() => new DataLoader({ images: fromBytes(Uint8Array.of(0, 255), 'uint8', [2, 1]) }, { batchSize: 2, shuffle: false }).batchAt(0).x.toArray());
  assert.deepEqual(ends, [[-1], [1]]);
  loader.dispose();
});

test('determinism by seed; another seed or another epoch gives another order', () => {
  const [a, b, c] = [1, 1, 2].map((seed) => new DataLoader({ images, labels }, { batchSize: 8, seed, flip: true }));
  for (let s = 0; s < 30; s++) same(a.batchAt(s), b.batchAt(s));
  assert.notDeepEqual(ints(a.batchAt(0).indices), ints(c.batchAt(0).indices));
  const epoch = (l: DataLoader, e: number) => [...l.epoch(e)].flatMap((bt) => ints(bt.indices));
  assert.notDeepEqual(epoch(a, 0), epoch(a, 1));
  assert.deepEqual(epoch(a, 1), epoch(b, 1));
  const ordered = new DataLoader({ images, labels }, { batchSize: 8, shuffle: false });
  assert.deepEqual(
    epoch(ordered, 0),
    Array.from({ length: 96 }, (_, i) => i),
  );
  for (const l of [a, b, c, ordered]) l.dispose();
});

test('every sample exactly once per epoch (dropLast false), and no repeats with dropLast', () => {
  const all = new DataLoader({ images, labels }, { batchSize: 10, seed: 5, dropLast: false });
  assert.equal(all.stepsPerEpoch, 11);
  for (const e of [0, 1, 2]) {
    const batches = [...all.epoch(e)];
    assert.deepEqual(
      batches.map((bt) => bt.x.dim(0)),
      [...new Array(10).fill(10), 3],
    );
    assert.deepEqual(
      batches.flatMap((bt) => ints(bt.indices)).sort((p, q) => p - q),
      Array.from({ length: N }, (_, i) => i),
    );
    assert.ok(batches.every((bt) => bt.epoch === e));
  }
  const drop = new DataLoader({ images, labels }, { batchSize: 10, seed: 5 });
  const seen = [...drop.epoch(0)].flatMap((bt) => ints(bt.indices));
  assert.equal(seen.length, 100);
  assert.equal(new Set(seen).size, 100);
  all.dispose();
  drop.dispose();
});

test('flips are exact left-right mirror images, about half of the samples, per epoch', () => {
  const plain = new DataLoader({ images, labels }, { batchSize: N, seed: 3 });
  const flipped = new DataLoader({ images, labels }, { batchSize: N, seed: 3, flip: true });
  const counts: number[] = [];
  for (const e of [0, 1]) {
    const [p, f] = [plain.batchAt(e), flipped.batchAt(e)];
    assert.deepEqual(ints(p.indices), ints(f.indices)); // flips do not change the order
    const mirror = p.x.flip(-1).data() as Float32Array;
    const [px, fx] = [p.x.data() as Float32Array, f.x.data() as Float32Array];
    let n = 0;
    assert.equal(p.flipped, undefined, 'no flips: no flipped mask');
    const said = ints(f.flipped!); // Batch.flipped: which samples the loader mirrored
    for (let k = 0; k < N; k++) {
      const row = Array.from(fx.subarray(6 * k, 6 * k + 6));
      const isPlain = row.every((v, j) => v === px[6 * k + j]);
      const isMirror = row.every((v, j) => v === mirror[6 * k + j]);
      assert.ok(isPlain !== isMirror, `sample ${k} is neither the image nor its mirror`);
      assert.equal(said[k] === 1, isMirror, `sample ${k}: Batch.flipped says ${said[k]}`);
      if (isMirror) n++;
    }
    counts.push(n);
  }
  for (const n of counts) assert.ok(n > 30 && n < 73, `${n} of ${N} flipped`);
  assert.throws(() => new DataLoader({ images: tensor([[1, 2]]) }, { batchSize: 1, flip: true }), /flip needs image-like data/);
  plain.dispose();
  flipped.dispose();
});

test('resume: state()/setState() and batchAt(k) give the batches of an uninterrupted run', () => {
  const opts = { batchSize: 16, seed: 9, flip: true };
  const run = new DataLoader({ images, labels }, opts);
  const all: Batch[] = [];
  let saved = run.state();
  for (let s = 0; s < 25; s++) {
    if (s === 13) saved = run.state();
    all.push(run.next());
  }
  assert.deepEqual(saved, { step: 13 });
  const resumed = new DataLoader({ images, labels }, opts);
  resumed.setState(JSON.parse(JSON.stringify(saved)) as { step: number }); // as stored in a checkpoint
  for (let s = 13; s < 25; s++) same(resumed.next(), all[s]);
  for (const s of [24, 0, 7, 19]) same(resumed.batchAt(s), all[s]); // random access, across epochs
  assert.equal(resumed.epochOf(24), 4);
  run.dispose();
  resumed.dispose();
});

test('memory stays flat over many batches (epochs included)', () => {
  const loader = new DataLoader({ images, labels }, { batchSize: 16, seed: 0, flip: true });
  tidy(() => void loader.next()); // the first epoch's order is cached
  const before = memory();
  for (let s = 0; s < 600; s++) tidy(() => void loader.next()); // 100 epochs
  const after = memory();
  assert.equal(after.tensors, before.tensors);
  assert.equal(after.bytes, before.bytes);
  loader.dispose();
});

test('float data passes through unscaled; bad options are clear errors', () => {
  const data = new Generator(0).randn([20, 2]);
  const loader = new DataLoader({ images: data }, { batchSize: 5, seed: 0, dtype: 'float64' });
  const b = loader.batchAt(0);
  assert.equal(b.labels, undefined);
  assert.deepEqual(Array.from(b.x.toFloat64Array()), Array.from(data.indexSelect(0, b.indices).toFloat64Array()));
  assert.throws(() => new DataLoader({ images, labels }, { batchSize: 200 }), /no full batch of 200/);
  assert.throws(() => new DataLoader({ images, labels: labels.narrow(0, 0, 5) }, { batchSize: 2 }), /labels must have shape \[103\]/);
  assert.throws(() => new DataLoader({ images }, { batchSize: 0 }), /batchSize must be a positive integer/);
  assert.throws(() => loader.batchAt(-1), /step must be a non-negative integer/);
  loader.dispose();
});

test('Fashion-MNIST at 32 x 32: batches of 64 in [-1, 1]', () => {
  const ds = loadFashionMNIST({ split: 'test', pad32: true });
  const loader = new DataLoader(ds, { batchSize: 64, seed: 0, flip: true });
  const { x, labels: y } = loader.next();
  assert.deepEqual(x.shape, [64, 1, 32, 32]);
  assert.deepEqual(y!.shape, [64]);
  const [lo, hi] = tidy(() => [x.min().item(), x.max().item()]);
  assert.ok(lo === -1 && hi <= 1, `range [${lo}, ${hi}]`);
  loader.dispose();
});
