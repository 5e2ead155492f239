// Image folders: PNG and JPEG files written here with the same codecs, two class
// sub-folders; sizes, labels, gray/RGB, crop geometry and resizing checked against
// values computed by hand; empty folders and bad files fail with errors naming them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { memory } from '../src/engine';
import { DatasetError, decodeImage, encodeJPEG, encodePNG, listImageFolder, loadImageFolder, RawImage } from '../src/data';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-folder-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** An RGB image [h, w, 3] from a pixel function. */
function rgb(width: number, height: number, px: (x: number, y: number) => [number, number, number]): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(px(x, y), 3 * (y * width + x));
  return { width, height, channels: 3, data };
}
function put(rel: string, bytes: Uint8Array): string {
  const f = path.join(tmp, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, bytes);
  return f;
}
function fails(fn: () => unknown, file: string, problem: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DatasetError, `expected a DatasetError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.match(e.message, problem);
    return true;
  });
}
const roundHalfEven = (v: number) => (Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v)); // torch.round
/** Pixel c of image i in a uint8 [N, C, S, S] array. */
const at = (a: Uint8Array, C: number, S: number, i: number, c: number, y: number, x: number) => a[((i * C + c) * S + y) * S + x];

// thirds: a 48 x 16 PNG, red | green | blue; its centered 16 x 16 square is all green
const thirds = rgb(48, 16, (x) => (x < 16 ? [255, 0, 0] : x < 32 ? [0, 255, 0] : [0, 0, 255]));
// a 32 x 32 JPEG of one color
const flat = rgb(32, 32, () => [100, 150, 200]);
// a 64 x 32 PNG pattern; its centered square is x in [16, 48)
const pattern = rgb(64, 32, (x, y) => [(x * 7 + y * 13) % 256, (x * 3 + y * 29) % 256, (x * y) % 256]);
// a 20 x 40 (tall) JPEG of one color
const tall = rgb(20, 40, () => [30, 60, 90]);

const root = path.join(tmp, 'classes');
put('classes/cats/a.png', encodePNG(thirds));
put('classes/cats/b.jpg', encodeJPEG(flat, 95));
put('classes/dogs/c.png', encodePNG(pattern));
put('classes/dogs/nested/d.jpeg', encodeJPEG(tall, 95));
put('classes/dogs/notes.txt', Buffer.from('not an image, ignored'));
put('classes/.DS_Store', Buffer.from('ignored'));

test('labels come from sorted sub-folder names; files are found recursively and sorted', () => {
  const { files, labels, classNames } = listImageFolder(root);
  assert.deepEqual(classNames, ['cats', 'dogs']);
  assert.deepEqual(
    files.map((f) => path.relative(root, f)),
    ['cats/a.png', 'cats/b.jpg', 'dogs/c.png', 'dogs/nested/d.jpeg'],
  );
  assert.deepEqual(labels, [0, 0, 1, 1]);
});

test('RGB at 16 x 16: center crop, area downsampling and JPEG colors', () => {
  const before = memory().tensors;
  const ds = loadImageFolder(root, { size: 16 });
  assert.deepEqual(ds.images.shape, [4, 3, 16, 16]);
  assert.equal(ds.images.dtype, 'uint8');
  assert.deepEqual(Array.from(ds.labels.data() as BigInt64Array, Number), [0, 0, 1, 1]);
  const a = ds.images.data() as Uint8Array;
  // 48 x 16 -> the middle 16 x 16: all green, no resizing
  for (let y = 0; y < 16; y++)
    for (let x = 0; x < 16; x++)
      assert.deepEqual(
        [0, 1, 2].map((c) => at(a, 3, 16, 0, c, y, x)),
        [0, 255, 0],
      );
  // JPEG of one color, 32 -> 16: that color, up to JPEG's rounding
  for (const [i, color] of [
    [1, [100, 150, 200]],
    [3, [30, 60, 90]],
  ] as const)
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 16; y++) for (let x = 0; x < 16; x++) assert.ok(Math.abs(at(a, 3, 16, i, c, y, x) - color[c]) <= 3, `image ${i} channel ${c}: ${at(a, 3, 16, i, c, y, x)} vs ${color[c]}`);
  // 64 x 32 -> center 32 x 32 (x from 16) -> 2 x 2 block means
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < 16; y++)
      for (let x = 0; x < 16; x++) {
        let s = 0;
        for (const [dy, dx] of [
          [0, 0],
          [0, 1],
          [1, 0],
          [1, 1],
        ])
          s += pattern.data[3 * ((2 * y + dy) * 64 + 16 + 2 * x + dx) + c];
        assert.equal(at(a, 3, 16, 2, c, y, x), roundHalfEven(s / 4), `pattern (${c}, ${y}, ${x})`);
      }
  ds.images.dispose();
  ds.labels.dispose();
  assert.equal(memory().tensors, before);
});

test('gray: ITU-R 601 luma (as PIL), a gray PNG stays itself, and upscaling works', () => {
  const dir = path.join(tmp, 'gray');
  const g: RawImage = { width: 8, height: 8, channels: 1, data: Uint8Array.from({ length: 64 }, (_, i) => i * 4) };
  put('gray/g.png', encodePNG(g));
  const ds = loadImageFolder(dir, { size: 8, mode: 'gray' });
  assert.deepEqual(ds.classNames, ['gray']); // no sub-folders: one class named after the folder
  assert.deepEqual(ds.images.shape, [1, 1, 8, 8]);
  assert.deepEqual(Array.from(ds.images.data() as Uint8Array), Array.from(g.data));
  const up = loadImageFolder(dir, { size: 16, mode: 'gray' });
  assert.deepEqual(up.images.shape, [1, 1, 16, 16]);
  const cats = loadImageFolder(path.join(root, 'cats'), { size: 16, mode: 'gray' });
  const luma = Math.floor((0 * 299 + 255 * 587 + 0 * 114 + 500) / 1000); // pure green: 150
  assert.ok((cats.images.data() as Uint8Array).subarray(0, 256).every((v) => v === luma));
  assert.equal(Math.floor((255 * 299 + 500) / 1000), 76); // PIL's L of pure red
});

test('PNG with alpha and a gray JPEG decode to RGBA', () => {
  const rgba: RawImage = { width: 2, height: 1, channels: 4, data: Uint8Array.of(10, 20, 30, 0, 40, 50, 60, 255) };
  const png = decodeImage(encodePNG(rgba), 'rgba.png');
  assert.deepEqual(Array.from(png.rgba), [10, 20, 30, 0, 40, 50, 60, 255]);
  const jpg = decodeImage(encodeJPEG({ width: 8, height: 8, channels: 1, data: new Uint8Array(64).fill(77) }, 100), 'g.jpg');
  assert.ok(Array.from(jpg.rgba).every((v, i) => (i % 4 === 3 ? v === 255 : Math.abs(v - 77) <= 2)));
});

test('an empty folder, an empty class folder and a missing folder are clear errors', () => {
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  fails(() => loadImageFolder(empty, { size: 8 }), empty, /no PNG or JPEG images found/);
  const emptyClass = path.join(tmp, 'half/b');
  put('half/a/x.png', encodePNG(thirds));
  fs.mkdirSync(emptyClass);
  fails(() => loadImageFolder(path.join(tmp, 'half'), { size: 8 }), emptyClass, /class folder "b" holds no PNG or JPEG images/);
  fails(() => loadImageFolder(path.join(tmp, 'absent'), { size: 8 }), path.join(tmp, 'absent'), /folder not found/);
  const stray = put('stray/top.png', encodePNG(thirds));
  put('stray/cls/x.png', encodePNG(thirds));
  fails(() => loadImageFolder(path.join(tmp, 'stray'), { size: 8 }), stray, /has no class/);
});

test('corrupt, mislabeled and unsupported files are clear errors naming the file', () => {
  const png = encodePNG(pattern);
  const cut = put('bad1/cut.png', png.subarray(0, 60));
  fails(() => loadImageFolder(path.dirname(cut), { size: 8 }), cut, /cannot decode this PNG file, it is corrupt or truncated/);
  const text = put('bad2/text.jpg', Buffer.from('this is not a JPEG at all'));
  fails(() => loadImageFolder(path.dirname(text), { size: 8 }), text, /unsupported format: not an image \(it starts with bytes 74 68 69 73\)/);
  const gif = put('bad3/anim.gif', Buffer.from('GIF89a....'));
  fails(() => loadImageFolder(path.dirname(gif), { size: 8 }), gif, /unsupported image format \.gif; only PNG and JPEG/);
  const gifInside = put('bad4/pic.png', Buffer.from('GIF89a....'));
  fails(() => loadImageFolder(path.dirname(gifInside), { size: 8 }), gifInside, /unsupported format: a GIF image/);
  const badJpeg = put('bad5/x.jpg', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(40, 0x55)]));
  fails(() => loadImageFolder(path.dirname(badJpeg), { size: 8 }), badJpeg, /cannot decode this JPEG file/);
  const renamed = put('ok/really-a-png.jpg', png); // the format is sniffed, not taken from the name
  assert.deepEqual(loadImageFolder(path.dirname(renamed), { size: 8 }).images.shape, [1, 3, 8, 8]);
  assert.throws(() => loadImageFolder(root, { size: 0 }), /size must be a positive integer/);
});
