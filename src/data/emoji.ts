/**
 * Emoji: the 64 x 64 RGBA PNGs of the npm packages emoji-datasource-google (Noto Emoji
 * artwork, Apache 2.0) and emoji-datasource-twitter (Twemoji artwork, CC-BY 4.0), about
 * 3,800 images per style, read with their `emoji.json` (installed by `npm run setup`;
 * nothing is fetched at run time). Each image is composited on white and resized by
 * exact area averaging (2 x 2 means per halving) to 64, 32 or 16 pixels. Labels are the
 * 9 Unicode categories ("Component", the 5 skin-tone swatches, is left out: they are
 * color patches, not emoji); the style is a second label and the emoji's name a caption.
 * The train/test split is by base emoji: an emoji, its skin-tone variants and its other
 * style are all on the same side (test when a hash of the base code points is 0 mod 10).
 *
 * @example
 *   const ds = loadEmoji({ styles: ['google'], size: 32 });
 *   ds.images;       // uint8 [3408, 3, 32, 32] (the training split)
 *   ds.classNames;   // ['Smileys & Emotion', 'People & Body', ..., 'Flags']
 *   ds.captions[0];  // 'grinning face'
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fromBytes } from '../engine/create';
import { interpolate } from '../engine/functional';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { cacheDir } from '../util/cache';
import { DatasetError } from './errors';
import { decodeImage } from './image-codec';
import type { ImageDataset } from './loader';

/** The two styles, in style-label order. */
export const EMOJI_STYLES = ['google', 'twitter'] as const;
export type EmojiStyle = (typeof EMOJI_STYLES)[number];

/** The 9 categories used as labels, in the Unicode (and emoji.json) order; "Component" is left out. */
export const EMOJI_CATEGORIES: readonly string[] = ['Smileys & Emotion', 'People & Body', 'Animals & Nature', 'Food & Drink', 'Travel & Places', 'Activities', 'Objects', 'Symbols', 'Flags'];

/** Output sizes: 64 (as shipped), 32 and 16 (2 x 2 means, once or twice). */
export const EMOJI_SIZES: readonly number[] = [16, 32, 64];

/** The side of the shipped PNGs. */
const SOURCE_SIZE = 64;

export interface EmojiOptions {
  /** 'train' (default, ~90%), 'test' (~10%) or 'all'. */
  split?: 'train' | 'test' | 'all';
  /** Styles to load (default both, google first). */
  styles?: readonly EmojiStyle[];
  /** Output side: 64, 32 or 16 (default 64). */
  size?: number;
  /** Folder holding the package folders emoji-datasource-<style>/ (default: where Node resolves the installed packages). */
  dir?: string;
  /** Keep the decoded dataset under $DIFFUSE_CACHE_DIR/emoji and reuse it (default true). */
  cache?: boolean;
}

/** An emoji dataset: labels are categories; the style, caption and code points of each image come beside them. */
export interface EmojiDataset extends ImageDataset {
  /** int64 [N]: index into styleNames. */
  styles: Tensor;
  /** The styles in style-label order (['google', 'twitter']). */
  styleNames: string[];
  /** The emoji's name, lowercase, with its skin tones when it is a variant: 'waving hand: medium skin tone'. */
  captions: string[];
  /** The image's code points, as in emoji.json ('1F44B-1F3FD'). */
  unified: string[];
}

/** One image to load: where it is and what it is. */
export interface EmojiEntry {
  style: EmojiStyle;
  file: string;
  category: number;
  caption: string;
  unified: string;
  /** The code points of the base emoji (its skin-tone variants share them); the split is decided on these. */
  base: string;
}

interface EmojiJsonVariation {
  unified: string;
  image: string;
  [hasImg: string]: unknown;
}
interface EmojiJsonEntry {
  name: string | null;
  short_name: string;
  unified: string;
  image: string;
  category: string;
  sort_order: number;
  skin_variations?: Record<string, EmojiJsonVariation>;
  [hasImg: string]: unknown;
}

const TONES: Record<string, string> = { '1F3FB': 'light', '1F3FC': 'medium-light', '1F3FD': 'medium', '1F3FE': 'medium-dark', '1F3FF': 'dark' };

/** The folder of an installed emoji-datasource-<style> package (dir overrides where to look). */
export function emojiPackageDir(style: EmojiStyle, dir?: string): string {
  const pkg = `emoji-datasource-${style}`;
  if (dir !== undefined) return path.join(dir, pkg);
  try {
    return path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    return path.join(process.cwd(), 'node_modules', pkg);
  }
}

/** FNV-1a 32-bit hash of a string's UTF-16 code units: a fixed, platform-independent split key. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** The split of a base emoji: 'test' when FNV-1a(base code points) is 0 mod 10, else 'train'. */
export function emojiSplit(base: string): 'train' | 'test' {
  return fnv1a(base.toUpperCase()) % 10 === 0 ? 'test' : 'train';
}

function readEmojiJson(pkgDir: string, style: EmojiStyle): EmojiJsonEntry[] {
  const file = path.join(pkgDir, 'emoji.json');
  if (!fs.existsSync(pkgDir))
    throw new DatasetError(pkgDir, `the npm package emoji-datasource-${style} is not installed. Run \`npm run setup\` (its \`npm ci\` installs it), or \`npm install emoji-datasource-${style}@16\``);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DatasetError(file, `cannot read emoji.json of the package emoji-datasource-${style} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); reinstall it with \`npm ci\``);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DatasetError(file, `emoji.json of emoji-datasource-${style} is not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(json)) throw new DatasetError(file, `emoji.json of emoji-datasource-${style} should hold an array of emoji`);
  return json as EmojiJsonEntry[];
}

/** The images of one style's package, in emoji.json's sort order (variants after their base), without decoding anything. */
export function listEmoji(style: EmojiStyle, dir?: string): EmojiEntry[] {
  if (!EMOJI_STYLES.includes(style)) throw new TypeError(`listEmoji: style must be one of ${EMOJI_STYLES.join(', ')}, got ${JSON.stringify(style)}`);
  const pkgDir = emojiPackageDir(style, dir);
  const imgDir = path.join(pkgDir, 'img', style, String(SOURCE_SIZE));
  const has = `has_img_${style}`;
  const out: EmojiEntry[] = [];
  const entries = readEmojiJson(pkgDir, style)
    .slice()
    .sort((a, b) => a.sort_order - b.sort_order);
  for (const e of entries) {
    const category = EMOJI_CATEGORIES.indexOf(e.category);
    if (category < 0) continue; // "Component": the skin-tone swatches
    const name = (e.name ?? e.short_name).toLowerCase();
    if (e[has] === true) out.push({ style, file: path.join(imgDir, e.image), category, caption: name, unified: e.unified, base: e.unified });
    for (const [key, v] of Object.entries(e.skin_variations ?? {})) {
      if (v[has] !== true) continue;
      const tones = [...new Set(key.split('-').map((k) => TONES[k.toUpperCase()] ?? k))];
      out.push({ style, file: path.join(imgDir, v.image), category, caption: `${name}: ${tones.join(', ')} skin tone`, unified: v.unified, base: e.unified });
    }
  }
  if (out.length === 0) throw new DatasetError(path.join(pkgDir, 'emoji.json'), `lists no ${style} images`);
  return out;
}

/** RGBA bytes [S, S, 4] composited on white into planar float RGB [3, S, S]: c a/255 + 255 (1 - a/255). */
export function compositeOnWhite(rgba: Uint8Array, side: number, out: Float32Array, offset = 0): void {
  const plane = side * side;
  for (let p = 0; p < plane; p++) {
    const a = rgba[4 * p + 3];
    for (let c = 0; c < 3; c++) out[offset + c * plane + p] = (rgba[4 * p + c] * a + 255 * (255 - a)) / 255;
  }
}

/** Decodes and composites chunks of images, then area-averages each chunk to size: uint8 [N, 3, size, size] bytes. */
function decodeAll(entries: EmojiEntry[], size: number): Uint8Array {
  const S = SOURCE_SIZE;
  const per = 3 * size * size;
  const out = new Uint8Array(entries.length * per);
  const chunk = 256;
  for (let start = 0; start < entries.length; start += chunk) {
    const part = entries.slice(start, start + chunk);
    const buf = new Float32Array(part.length * 3 * S * S);
    part.forEach((e, i) => {
      let bytes: Buffer;
      try {
        bytes = fs.readFileSync(e.file);
      } catch (err) {
        throw new DatasetError(
          e.file,
          `cannot read this emoji image of emoji-datasource-${e.style} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); reinstall the package with \`npm ci\``,
        );
      }
      const img = decodeImage(bytes, e.file);
      if (img.width !== S || img.height !== S) throw new DatasetError(e.file, `emoji images are ${S} x ${S}, this one is ${img.width} x ${img.height}`);
      compositeOnWhite(img.rgba, S, buf, i * 3 * S * S);
    });
    const bytes = tidy(() => {
      const x = fromBytes(buf, 'float32', [part.length, 3, S, S]); // [n, 3, 64, 64] in [0, 255]
      // area averaging at an integer factor is the exact mean of each k x k block (= repeated 2 x 2 means)
      const y = size === S ? x : interpolate(x, { size, mode: 'area' }); // [n, 3, size, size]
      return y.round().clamp(0, 255).to('uint8').bytes();
    });
    out.set(bytes, start * per);
  }
  return out;
}

/** The version of an installed package, for the cache key ('?' when unreadable). */
function packageVersion(pkgDir: string): string {
  try {
    const { version } = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof version === 'string' ? version : '?';
  } catch {
    return '?';
  }
}

/** Pixels of one style at one size, from the cache when it holds them (keyed by the package folder, its version, emoji.json's time and the file list). */
function stylePixels(style: EmojiStyle, entries: EmojiEntry[], size: number, dir: string | undefined, cache: boolean): Uint8Array {
  const per = 3 * size * size;
  const pkgDir = path.resolve(emojiPackageDir(style, dir));
  const stamp = fs.statSync(path.join(pkgDir, 'emoji.json'), { throwIfNoEntry: false })?.mtimeMs ?? 0;
  const key = fnv1a(`${pkgDir}\n${packageVersion(pkgDir)}\n${stamp}\n${entries.map((e) => e.file).join('\n')}`).toString(16);
  const file = path.join(cacheDir('emoji'), `${style}-${size}-${key}.u8`);
  if (cache) {
    try {
      const b = fs.readFileSync(file);
      if (b.length === entries.length * per) return new Uint8Array(b.buffer, b.byteOffset, b.length);
    } catch {
      // not cached yet
    }
  }
  const pixels = decodeAll(entries, size);
  if (cache) {
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const tmp = `${file}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, pixels);
      fs.renameSync(tmp, file);
    } catch {
      // a read-only cache only costs the decoding next time
    }
  }
  return pixels;
}

/** Loads emoji: uint8 [N, 3, size, size] on white, labels = category, with styles, captions and code points. */
export function loadEmoji({ split = 'train', styles = EMOJI_STYLES, size = SOURCE_SIZE, dir, cache = true }: EmojiOptions = {}): EmojiDataset {
  if (split !== 'train' && split !== 'test' && split !== 'all') throw new TypeError(`loadEmoji: split must be 'train', 'test' or 'all', got ${JSON.stringify(split)}`);
  if (!EMOJI_SIZES.includes(size)) throw new RangeError(`loadEmoji: size must be 16, 32 or 64, got ${size}`);
  if (styles.length === 0 || styles.some((s) => !EMOJI_STYLES.includes(s)))
    throw new TypeError(`loadEmoji: styles must be a non-empty list of ${EMOJI_STYLES.join(', ')}, got ${JSON.stringify(styles)}`);
  const per = 3 * size * size;
  const chosen: EmojiEntry[] = [];
  const parts: Uint8Array[] = [];
  for (const style of [...new Set(styles)]) {
    const all = listEmoji(style, dir);
    const pixels = stylePixels(style, all, size, dir, cache);
    all.forEach((e, i) => {
      if (split !== 'all' && emojiSplit(e.base) !== split) return;
      chosen.push(e);
      parts.push(pixels.subarray(i * per, (i + 1) * per));
    });
  }
  const images = new Uint8Array(chosen.length * per);
  parts.forEach((p, i) => images.set(p, i * per));
  const int64 = (v: number[]) =>
    fromBytes(
      BigInt64Array.from(v, (x) => BigInt(x)),
      'int64',
      [v.length],
    );
  return tidy(() => ({
    images: fromBytes(images, 'uint8', [chosen.length, 3, size, size]),
    labels: int64(chosen.map((e) => e.category)),
    classNames: EMOJI_CATEGORIES.slice(),
    styles: int64(chosen.map((e) => EMOJI_STYLES.indexOf(e.style))),
    styleNames: EMOJI_STYLES.slice(),
    captions: chosen.map((e) => e.caption),
    unified: chosen.map((e) => e.unified),
  }));
}
