// Emoji: a fake emoji-datasource package written to a temp folder (RGBA PNGs made with the
// same codec) checks compositing on white and the 2 x 2 area means against values computed
// by hand, the labels, captions and styles, the cache, and the errors for a missing package
// and a corrupt PNG; the installed packages check the split by base emoji and the counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { memory } from '../src/engine';
import { DatasetError, EMOJI_CATEGORIES, emojiSplit, encodePNG, listEmoji, loadEmoji, EmojiDataset } from '../src/data';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-emoji-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

type RGBA = [number, number, number, number];
/** A 64 x 64 RGBA PNG from a pixel function. */
function png(px: (x: number, y: number) => RGBA): Buffer {
  const data = new Uint8Array(64 * 64 * 4);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) data.set(px(x, y), 4 * (y * 64 + x));
  return encodePNG({ width: 64, height: 64, channels: 4, data });
}

// The hand-computed block: red opaque | transparent (white) / blue at alpha 128 | an opaque color.
// On white: (255,0,0), (255,255,255), (0 + 255*127/255, same, (255*128 + 255*127)/255) = (127,127,255), (100,200,50).
const BLOCK: RGBA[][] = [
  [
    [255, 0, 0, 255],
    [0, 0, 0, 0],
  ],
  [
    [0, 0, 255, 128],
    [100, 200, 50, 255],
  ],
];
const tiled = png((x, y) => BLOCK[y % 2][x % 2]);
// Its 2 x 2 mean: R (255+255+127+100)/4 = 184.25 -> 184, G (0+255+127+200)/4 = 145.5 -> 146 (half to even),
// B (0+255+255+50)/4 = 140; every 2 x 2 (and 4 x 4) block is the same, so 16 px is the same color.
const TILED_MEAN = [184, 146, 140];
// A pattern whose blocks differ, for a reference of 64 -> 32 -> 16 by 2 x 2 means done here in float64.
const patternPx = (x: number, y: number): RGBA => [(x * 7 + y * 13) % 256, (x * 3 + y * 29) % 256, (x * y) % 256, (x * 11 + y * 5) % 256];
const pattern = png(patternPx);

/** A fake package: a smiley with two skin-tone variants, a Component swatch and a flag. */
function fakePackage(root: string, style: 'google' | 'twitter'): string {
  const pkg = path.join(root, `emoji-datasource-${style}`);
  const img = path.join(pkg, 'img', style, '64');
  fs.mkdirSync(img, { recursive: true });
  const has = { [`has_img_${style}`]: true };
  const json = [
    { name: 'CHEQUERED FLAG', short_name: 'checkered_flag', unified: '1F3C1', image: '1f3c1.png', category: 'Flags', sort_order: 3, ...has },
    {
      name: 'WAVING HAND SIGN',
      short_name: 'wave',
      unified: '1F44B',
      image: '1f44b.png',
      category: 'People & Body',
      sort_order: 1,
      ...has,
      skin_variations: {
        '1F3FB': { unified: '1F44B-1F3FB', image: '1f44b-1f3fb.png', ...has },
        '1F3FF': { unified: '1F44B-1F3FF', image: '1f44b-1f3ff.png', [`has_img_${style}`]: false },
      },
    },
    { name: 'EMOJI MODIFIER FITZPATRICK TYPE-3', short_name: 'skin-tone-3', unified: '1F3FC', image: '1f3fc.png', category: 'Component', sort_order: 2, ...has },
  ];
  fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: `emoji-datasource-${style}`, version: '16.0.0' }));
  fs.writeFileSync(path.join(pkg, 'emoji.json'), JSON.stringify(json));
  fs.writeFileSync(path.join(img, '1f3c1.png'), tiled);
  fs.writeFileSync(path.join(img, '1f44b.png'), pattern);
  fs.writeFileSync(
    path.join(img, '1f44b-1f3fb.png'),
    png(() => [0, 0, 0, 0]),
  );
  fs.writeFileSync(
    path.join(img, '1f3fc.png'),
    png(() => [10, 20, 30, 255]),
  );
  return pkg;
}
const fake = path.join(tmp, 'fake');
fakePackage(fake, 'google');
fakePackage(fake, 'twitter');

function dispose(ds: EmojiDataset): void {
  ds.images.dispose();
  ds.labels.dispose();
  ds.styles.dispose();
}
/** Pixel (c, y, x) of image i in uint8 [N, 3, S, S] bytes. */
const at = (a: Uint8Array, S: number, i: number, c: number, y: number, x: number) => a[((i * 3 + c) * S + y) * S + x];
const onWhite = ([r, g, b, a]: RGBA): number[] => [r, g, b].map((v) => (v * a + 255 * (255 - a)) / 255);
/** 2 x 2 means of planar [3, S, S] float64 values. */
function halve(v: number[][][]): number[][][] {
  const S = v[0].length / 2;
  return v.map((p) => Array.from({ length: S }, (_, y) => Array.from({ length: S }, (_, x) => (p[2 * y][2 * x] + p[2 * y][2 * x + 1] + p[2 * y + 1][2 * x] + p[2 * y + 1][2 * x + 1]) / 4)));
}
const roundHalfEven = (v: number) => (Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v)); // torch.round

test('the fake package: Component and images without has_img left out, variants after their base with their tone in the caption', () => {
  const e = listEmoji('google', fake);
  assert.deepEqual(
    e.map((x) => [x.unified, x.base, x.caption, EMOJI_CATEGORIES[x.category]]),
    [
      ['1F44B', '1F44B', 'waving hand sign', 'People & Body'],
      ['1F44B-1F3FB', '1F44B', 'waving hand sign: light skin tone', 'People & Body'],
      ['1F3C1', '1F3C1', 'chequered flag', 'Flags'],
    ],
  );
  assert.equal(EMOJI_CATEGORIES.length, 9);
  assert.ok(!EMOJI_CATEGORIES.includes('Component'));
});

test('composited on white, then 2 x 2 means: 64, 32 and 16 px against hand computations', () => {
  const before = memory().tensors;
  for (const size of [64, 32, 16]) {
    const ds = loadEmoji({ split: 'all', styles: ['google'], size, dir: fake, cache: false });
    assert.deepEqual(ds.images.shape, [3, 3, size, size]);
    assert.equal(ds.images.dtype, 'uint8');
    const a = ds.images.bytes();
    // image 2 is the tiled block (the flag)
    if (size === 64) {
      const want = [
        [255, 0, 0],
        [255, 255, 255],
        [127, 127, 255],
        [100, 200, 50],
      ];
      [
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
      ].forEach(([y, x], k) =>
        assert.deepEqual(
          [0, 1, 2].map((c) => at(a, 64, 2, c, y + 10, x + 20)),
          want[k],
        ),
      );
    } else
      for (const [y, x] of [
        [0, 0],
        [size - 1, size - 1],
        [3, 7],
      ])
        assert.deepEqual(
          [0, 1, 2].map((c) => at(a, size, 2, c, y, x)),
          TILED_MEAN,
        );
    // image 1 is fully transparent: white everywhere
    assert.ok(a.subarray(3 * size * size, 6 * size * size).every((v) => v === 255));
    // image 0, the pattern: float64 reference of the composite and its repeated 2 x 2 means
    let ref = [0, 1, 2].map((c) => Array.from({ length: 64 }, (_, y) => Array.from({ length: 64 }, (_, x) => onWhite(patternPx(x, y))[c])));
    for (let s = 64; s > size; s /= 2) ref = halve(ref);
    let checked = 0;
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < size; y++)
        for (let x = 0; x < size; x++) {
          const v = ref[c][y][x];
          if (Math.abs(v - Math.floor(v) - 0.5) < 1e-3) continue; // float32 may break a tie either way
          assert.equal(at(a, size, 0, c, y, x), roundHalfEven(v), `size ${size}, pixel (${c}, ${y}, ${x}), reference ${v}`);
          checked++;
        }
    assert.ok(checked > 0.9 * 3 * size * size);
    assert.deepEqual(Array.from(ds.labels.toFloat64Array()), [1, 1, 8]);
    dispose(ds);
  }
  assert.equal(memory().tensors, before);
});

test('both styles: style labels, captions and code points; one style selects it', () => {
  const ds = loadEmoji({ split: 'all', size: 16, dir: fake, cache: false });
  assert.deepEqual(ds.images.shape, [6, 3, 16, 16]);
  assert.deepEqual(Array.from(ds.styles.toFloat64Array()), [0, 0, 0, 1, 1, 1]);
  assert.deepEqual(ds.styleNames, ['google', 'twitter']);
  assert.deepEqual(ds.classNames, EMOJI_CATEGORIES);
  assert.deepEqual(ds.unified, ['1F44B', '1F44B-1F3FB', '1F3C1', '1F44B', '1F44B-1F3FB', '1F3C1']);
  assert.equal(ds.captions[4], 'waving hand sign: light skin tone');
  dispose(ds);
  const tw = loadEmoji({ split: 'all', styles: ['twitter'], size: 16, dir: fake, cache: false });
  assert.deepEqual(Array.from(tw.styles.toFloat64Array()), [1, 1, 1]);
  dispose(tw);
});

test('the split is fixed by the base code points: variants and styles follow their base; train + test = all', () => {
  assert.equal(emojiSplit('1F44B'), emojiSplit('1f44b'));
  const splits = ['1F600', '1F44B', '1F3C1', '2764-FE0F', '1F1EB-1F1F7'].map(emojiSplit);
  assert.deepEqual(splits, ['1F600', '1F44B', '1F3C1', '2764-FE0F', '1F1EB-1F1F7'].map(emojiSplit)); // pure
  const all = loadEmoji({ split: 'all', size: 16, dir: fake, cache: false });
  const train = loadEmoji({ split: 'train', size: 16, dir: fake, cache: false });
  const test_ = loadEmoji({ split: 'test', size: 16, dir: fake, cache: false });
  assert.equal(train.images.dim(0) + test_.images.dim(0), all.images.dim(0));
  for (const u of ['1F44B', '1F3C1']) assert.equal(test_.unified.includes(u), emojiSplit(u) === 'test');
  assert.equal(test_.unified.includes('1F44B-1F3FB'), test_.unified.includes('1F44B')); // the variant follows its base
  [all, train, test_].forEach(dispose);
});

test('the cache: the second load reads it and gives the same bytes', () => {
  const prev = process.env.DIFFUSE_CACHE_DIR;
  process.env.DIFFUSE_CACHE_DIR = path.join(tmp, 'cache');
  try {
    const a = loadEmoji({ split: 'all', size: 32, dir: fake });
    const files = fs.readdirSync(path.join(tmp, 'cache', 'emoji'));
    assert.equal(files.length, 2); // one per style
    // overwrite the google cache with a marker: a cached load must return it
    const g = path.join(
      tmp,
      'cache',
      'emoji',
      files.find((f) => f.startsWith('google-32-'))!,
    );
    fs.writeFileSync(g, Buffer.alloc(fs.statSync(g).size, 7));
    const b = loadEmoji({ split: 'all', styles: ['google'], size: 32, dir: fake });
    assert.ok(b.images.bytes().every((v) => v === 7));
    fs.rmSync(g);
    const c = loadEmoji({ split: 'all', styles: ['google'], size: 32, dir: fake });
    assert.deepEqual(c.images.bytes(), a.images.narrow(0, 0, 3).contiguous().bytes());
    [a, b, c].forEach(dispose);
  } finally {
    if (prev === undefined) delete process.env.DIFFUSE_CACHE_DIR;
    else process.env.DIFFUSE_CACHE_DIR = prev;
  }
});

test('errors: a missing package names it; a corrupt PNG names the file; bad options name the value', () => {
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  assert.throws(
    () => loadEmoji({ dir: empty, cache: false }),
    (e: unknown) => e instanceof DatasetError && e.file === path.join(empty, 'emoji-datasource-google') && /emoji-datasource-google is not installed.*npm run setup/.test(e.message),
  );
  const broken = path.join(tmp, 'broken');
  const pkg = fakePackage(broken, 'twitter');
  const bad = path.join(pkg, 'img', 'twitter', '64', '1f3c1.png');
  fs.writeFileSync(bad, tiled.subarray(0, 100));
  const before = memory().tensors;
  assert.throws(
    () => loadEmoji({ styles: ['twitter'], dir: broken, cache: false, split: 'all' }),
    (e: unknown) => e instanceof DatasetError && e.file === bad && /corrupt or truncated/.test(e.message),
  );
  assert.equal(memory().tensors, before);
  assert.throws(() => loadEmoji({ size: 48, dir: fake }), /size must be 16, 32 or 64, got 48/);
  assert.throws(() => loadEmoji({ split: 'val' as 'train', dir: fake }), /split must be 'train', 'test' or 'all', got "val"/);
  assert.throws(() => loadEmoji({ styles: ['apple' as 'google'], dir: fake }), /styles must be .* got \["apple"\]/);
});

test('the installed packages: 3,781 images per style in 9 categories; the split is ~10% by base emoji, the same for both styles', () => {
  const g = listEmoji('google');
  const t = listEmoji('twitter');
  assert.equal(g.length, 3781); // 3,786 PNGs less the 5 Component swatches
  assert.equal(t.length, 3781);
  assert.deepEqual(new Set(g.map((e) => e.category)).size, 9);
  const bases = new Set(g.map((e) => e.base));
  const testBases = [...bases].filter((b) => emojiSplit(b) === 'test');
  const frac = testBases.length / bases.size;
  assert.ok(frac > 0.08 && frac < 0.12, `test fraction of base emoji ${frac}`);
  // every variant's base is an emoji of the list (so the variant is split with it), and variants exist
  const unified = new Set(g.map((e) => e.unified));
  const variants = g.filter((e) => e.unified !== e.base);
  assert.ok(variants.length > 1800);
  for (const e of variants) assert.ok(unified.has(e.base), `${e.unified}: base ${e.base} not listed`);
  // the bases of the test split of one style are those of the other
  assert.deepEqual(new Set(t.filter((e) => emojiSplit(e.base) === 'test').map((e) => e.base)), new Set(g.filter((e) => emojiSplit(e.base) === 'test').map((e) => e.base)));
  const ds = loadEmoji({ split: 'test', styles: ['google'], size: 16, cache: false });
  assert.equal(ds.images.dim(0), g.filter((e) => emojiSplit(e.base) === 'test').length);
  assert.ok(ds.images.float().mean().item() < 250); // not all white: the artwork is there
  dispose(ds);
});
