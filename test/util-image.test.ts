// Sample grids and plots: pixel values and layout of imageGrid against a hand-made
// tensor, and the loss-curve and scatter PNGs decoding to the promised sizes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor } from '../src/engine';
import { decodeImage, encodeJPEG, encodePNG } from '../src/data/image-codec';
import { imageGrid, toImages } from '../src/util/image';
import { linePlotImage, lossCurvePNG, movingAverage, niceTicks, scatterImage, tickLabel } from '../src/util/plot';

test('imageGrid: [-1, 1] -> 0..255, row-major tiles, padding', () => {
  const x = tensor([
    [
      [
        [-1, 1],
        [0, 0.5],
      ],
    ],
    [
      [
        [1, 1],
        [1, 1],
      ],
    ],
    [
      [
        [-1, -1],
        [-1, -1],
      ],
    ],
  ]); // [3, 1, 2, 2]
  const g = imageGrid(x, { ncol: 2, padding: 1, padValue: 7 });
  assert.deepEqual([g.width, g.height, g.channels], [2 * 3 + 1, 2 * 3 + 1, 1]);
  const px = (r: number, c: number) => g.data[r * g.width + c];
  assert.deepEqual([px(1, 1), px(1, 2), px(2, 1), px(2, 2)], [0, 255, 128, 191]); // (0 + 1) * 127.5 = 127.5 -> 128; 1.5 * 127.5 = 191.25 -> 191
  assert.deepEqual([px(1, 4), px(4, 1), px(0, 0), px(1, 3), px(6, 6)], [255, 0, 7, 7, 7]);
  const big = imageGrid(x, { ncol: 3, padding: 0, scale: 2 });
  assert.deepEqual([big.width, big.height], [12, 4]);
  assert.deepEqual(toImages(x)[1].data, Uint8Array.from([255, 255, 255, 255]));
  assert.throws(() => imageGrid(tensor([1, 2])), /images must have shape \[N, 1 or 3, H, W\]/);
});

test('loss curve and scatter plots decode as PNGs of the asked size', () => {
  const losses = Array.from({ length: 500 }, (_, i) => 0.05 + Math.exp(-i / 50));
  const png = decodeImage(lossCurvePNG(losses, { width: 320, height: 200 }), 'loss.png');
  assert.deepEqual([png.width, png.height], [320, 200]);
  assert.deepEqual([decodeImage(lossCurvePNG([]), 'empty').width, decodeImage(lossCurvePNG([NaN, 1, 2]), 'nan').height], [640, 360]);
  assert.equal(scatterImage([0, 0, 1, -1], { size: 50 }).width, 50);
});

test('tick labels and ticks', () => {
  assert.deepEqual([12000, 0.05, 1e-5, 250, 0].map(tickLabel), ['12k', '0.05', '1e-5', '250', '0']);
  assert.deepEqual(niceTicks(1, 1000, 5), [200, 400, 600, 800, 1000]);
  assert.deepEqual(movingAverage([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5]);
});

test('line plot: each series in its own color, points as markers, gaps at non-finite values', () => {
  const img = linePlotImage(
    [
      {
        name: 'a',
        points: [
          [5, 10],
          [10, 5],
          [20, NaN],
          [50, 2],
        ],
      },
      {
        name: 'b',
        points: [
          [50, 3],
          [5, 9],
        ],
      },
    ],
    { width: 320, height: 200, logX: true, logY: true, title: 'fd', xLabel: 'nfe' },
  );
  assert.equal(img.width, 320);
  assert.equal(img.height, 200);
  const colors = new Set<string>();
  for (let i = 0; i < img.width * img.height; i++) colors.add(Array.from(img.data.subarray(3 * i, 3 * i + 3)).join(','));
  assert.ok(colors.has('31,119,180') && colors.has('255,127,14'), 'both series colors drawn');
  const empty = linePlotImage([], { width: 100, height: 80 });
  assert.equal(empty.data.length, 100 * 80 * 3);
});

test('decodeImage takes a plain Uint8Array (not a Buffer), also one that views the middle of a larger buffer', () => {
  const img = { width: 3, height: 2, channels: 1 as const, data: Uint8Array.of(0, 50, 100, 150, 200, 255) };
  for (const [format, bytes] of [
    ['png', encodePNG(img)],
    ['jpeg', encodeJPEG(img, 100)],
  ] as const) {
    const backing = new Uint8Array(bytes.length + 10);
    backing.set(bytes, 7);
    const plain = backing.subarray(7, 7 + bytes.length); // a Uint8Array at byteOffset 7, not a Buffer
    assert.equal(Buffer.isBuffer(plain), false);
    const d = decodeImage(plain, `gray.${format}`);
    assert.deepEqual([d.width, d.height], [3, 2]);
    const red = Array.from({ length: 6 }, (_, i) => d.rgba[4 * i]);
    if (format === 'png')
      assert.deepEqual(red, [0, 50, 100, 150, 200, 255]); // lossless
    else red.forEach((v, i) => assert.ok(Math.abs(v - img.data[i]) <= 8, `jpeg pixel ${i}: ${v} vs ${img.data[i]}`));
  }
});
