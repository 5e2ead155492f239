// IDX files: the real Fashion-MNIST (counts, labels, pixel range, padding) and
// corrupt files made on the spot, each of which must fail with an error naming the
// file and the problem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { memory, tidy } from '../src/engine';
import { DatasetError, FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_DIR, IDX_IMAGES, IDX_LABELS, loadFashionMNIST, readIdx, readIdxImages, readIdxLabels } from '../src/data';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-idx-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** An IDX file: magic, big-endian dims, then the body. */
function idx(magic: number, dims: number[], body: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head.writeUInt32BE(magic, 0);
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, body]);
}
function write(name: string, bytes: Uint8Array, gzip = true): string {
  const f = path.join(tmp, name);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, gzip ? zlib.gzipSync(bytes) : bytes);
  return f;
}
/** Asserts that fn throws a DatasetError naming `file` whose message matches `problem`. */
function fails(fn: () => unknown, file: string, problem: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DatasetError, `expected a DatasetError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.ok(e.message.startsWith(file + ': '), `message does not name the file: ${e.message}`);
    assert.match(e.message, problem);
    return true;
  });
}

test('Fashion-MNIST train: 60000 images [N, 1, 28, 28] uint8 using the full 0-255 range, 6000 of each of 10 labels', () => {
  const before = memory().tensors;
  const { images, labels, classNames } = loadFashionMNIST({ split: 'train' });
  assert.deepEqual(images.shape, [60000, 1, 28, 28]);
  assert.equal(images.dtype, 'uint8');
  assert.deepEqual(labels.shape, [60000]);
  assert.equal(labels.dtype, 'int64');
  assert.deepEqual(
    tidy(() => [images.min().item(), images.max().item()]),
    [0, 255],
  );
  const counts = new Array(10).fill(0);
  for (const l of labels.data() as BigInt64Array) counts[Number(l)]++;
  assert.deepEqual(counts, new Array(10).fill(6000)); // the training set is balanced
  assert.deepEqual(classNames, FASHION_MNIST_CLASSES);
  assert.equal(classNames.length, 10);
  images.dispose();
  labels.dispose();
  assert.equal(memory().tensors, before);
});

test('Fashion-MNIST test split: 10000 images, 1000 per label; pad32 adds a 2-pixel black border', () => {
  const a = loadFashionMNIST({ split: 'test' });
  const b = loadFashionMNIST({ split: 'test', pad32: true, dir: FASHION_MNIST_DEFAULT_DIR });
  assert.deepEqual(a.images.shape, [10000, 1, 28, 28]);
  assert.deepEqual(b.images.shape, [10000, 1, 32, 32]);
  const counts = new Array(10).fill(0);
  for (const l of a.labels.data() as BigInt64Array) counts[Number(l)]++;
  assert.deepEqual(counts, new Array(10).fill(1000));
  assert.deepEqual(b.images.slice(2, 2, 30).slice(3, 2, 30).data(), a.images.data());
  assert.equal(b.images.sum().item(), a.images.sum().item()); // the border is all zeros
  assert.throws(() => loadFashionMNIST({ split: 'val' as 'train' }), /split must be 'train' or 'test'/);
});

test('readIdx reads what idx() wrote, plain or gzipped', () => {
  const body = Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => i);
  for (const gz of [true, false]) {
    const f = write(gz ? 'ok.idx.gz' : 'ok.idx', idx(IDX_IMAGES, [2, 3, 4], body), gz);
    const a = readIdxImages(f);
    assert.deepEqual(a.dims, [2, 3, 4]);
    assert.deepEqual(Array.from(a.data), Array.from(body));
  }
});

test('a missing dataset names the file and says to run npm run setup', () => {
  const dir = path.join(tmp, 'nowhere');
  fails(() => loadFashionMNIST({ dir }), path.join(dir, 'train-images-idx3-ubyte.gz'), /npm run setup/);
  const saved = process.env.DIFFUSE_FASHION_MNIST_DIR;
  process.env.DIFFUSE_FASHION_MNIST_DIR = dir; // the environment variable is honored
  try {
    fails(() => loadFashionMNIST({ split: 'test' }), path.join(dir, 't10k-images-idx3-ubyte.gz'), /not found.*DIFFUSE_FASHION_MNIST_DIR/);
  } finally {
    if (saved === undefined) delete process.env.DIFFUSE_FASHION_MNIST_DIR;
    else process.env.DIFFUSE_FASHION_MNIST_DIR = saved;
  }
  fails(() => readIdx(path.join(tmp, 'missing.gz')), path.join(tmp, 'missing.gz'), /file not found/);
});

test('a truncated gzip file is a clear error', () => {
  const whole = zlib.gzipSync(idx(IDX_LABELS, [1000], new Uint8Array(1000).fill(3)));
  const f = path.join(tmp, 'cut-labels.gz');
  fs.writeFileSync(f, whole.subarray(0, whole.length >> 1));
  fails(() => readIdxLabels(f, 10), f, /gzip data is corrupt or truncated/);
  const g = path.join(tmp, 'not-gzip.gz');
  fs.writeFileSync(g, 'hello');
  fails(() => readIdx(g), g, /named \.gz but is not gzip data/);
});

test('a wrong magic number is a clear error', () => {
  const labels = write('labels-as-images.gz', idx(IDX_LABELS, [4], new Uint8Array(4)));
  fails(() => readIdxImages(labels), labels, /wrong magic number 0x00000801 \(expected 0x00000803, an image file\)/);
  const junk = write('junk.gz', Buffer.from('PK\x03\x04 this is a zip, not IDX'));
  fails(() => readIdx(junk), junk, /not an IDX file: magic number 0x504b0304/);
  const ints = write('int32.gz', idx(0x00000c01, [1], new Uint8Array(4)));
  fails(() => readIdx(ints), ints, /element type 0xc is not supported/);
  const short = write('short.gz', Uint8Array.of(0, 0));
  fails(() => readIdx(short), short, /too short for an IDX header/);
  const head = write('head.gz', Uint8Array.of(0, 0, 8, 3, 0, 0, 0, 2));
  fails(() => readIdx(head), head, /truncated header: 3 dims need 16 bytes, the file has 8/);
});

test('a truncated or oversized body is a clear error', () => {
  const cut = write('cut-images.gz', idx(IDX_IMAGES, [100, 28, 28], new Uint8Array(50 * 784)));
  fails(() => readIdxImages(cut), cut, /truncated: the header says 100 x 28 x 28 = 78400 bytes of data, the file has 39200/);
  const long = write('long-labels.gz', idx(IDX_LABELS, [10], new Uint8Array(12)));
  fails(() => readIdxLabels(long), long, /size mismatch: .* 10 bytes of data, the file has 12 \(2 extra\)/);
  const none = write('none.gz', idx(IDX_LABELS, [0], new Uint8Array(0)));
  fails(() => readIdxLabels(none), none, /holds no labels/);
});

test('a label count mismatch, labels out of range and wrong image sizes are clear errors', () => {
  const dir = path.join(tmp, 'fm');
  write('fm/train-images-idx3-ubyte.gz', idx(IDX_IMAGES, [5, 28, 28], new Uint8Array(5 * 784)));
  const labels = write('fm/train-labels-idx1-ubyte.gz', idx(IDX_LABELS, [4], Uint8Array.of(0, 1, 2, 3)));
  fails(() => loadFashionMNIST({ dir }), labels, /holds 4 labels but .*train-images-idx3-ubyte\.gz holds 5 images/);
  write('fm/train-labels-idx1-ubyte.gz', idx(IDX_LABELS, [5], Uint8Array.of(0, 1, 2, 10, 3)));
  fails(() => loadFashionMNIST({ dir }), labels, /label 10 at index 3 is out of range \(expected 0\.\.9\)/);
  write('fm/train-labels-idx1-ubyte.gz', idx(IDX_LABELS, [5], Uint8Array.of(0, 1, 2, 9, 3)));
  const ds = loadFashionMNIST({ dir });
  assert.deepEqual(ds.images.shape, [5, 1, 28, 28]);
  assert.deepEqual(Array.from(ds.labels.data() as BigInt64Array, Number), [0, 1, 2, 9, 3]);
  const images = write('fm/train-images-idx3-ubyte.gz', idx(IDX_IMAGES, [5, 32, 32], new Uint8Array(5 * 1024)));
  fails(() => loadFashionMNIST({ dir }), images, /images are 28 x 28, this file holds 32 x 32/);
});
