/**
 * A folder of PNG and JPEG images as an in-memory dataset, torchvision
 * ImageFolder-style: each sub-folder is a class (sorted by name; label i is the
 * i-th name), or, with no sub-folders, every image is in one class named after the
 * folder. Each image is converted to gray (ITU-R 601 luma, as PIL's convert('L'))
 * or RGB (alpha dropped, as PIL's convert('RGB')), center-cropped to a square and
 * resized to size x size — the geometry of "resize the shorter side to N, then
 * center-crop", without rounding the longer side first. Downscaling uses area
 * averaging (anti-aliased), upscaling bilinear, both via the engine's F.interpolate.
 *
 * @example
 *   // photos/cat/*.jpg, photos/dog/*.png
 *   const ds = loadImageFolder('photos', { size: 64 });
 *   ds.images;     // uint8 [N, 3, 64, 64]
 *   ds.classNames; // ['cat', 'dog'], labels 0 and 1
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fromBytes } from '../engine/create';
import { InterpolateMode, interpolate } from '../engine/functional';
import { tidy } from '../engine/scope';
import { DatasetError } from './errors';
import { decodeImage, DecodedImage } from './image-codec';
import type { ImageDataset } from './loader';

export interface ImageFolderOptions {
  /** Output side length N: images come out N x N. */
  size: number;
  /** 'rgb' (3 channels, default) or 'gray' (1 channel). */
  mode?: 'rgb' | 'gray';
  /** Resampling filter; default 'auto': area when shrinking, bilinear when enlarging. */
  resample?: 'auto' | InterpolateMode;
}

/** An image-folder dataset: the images, labels and class names, and the file of each image. */
export interface ImageFolderDataset extends ImageDataset {
  files: string[];
}

const READABLE = new Set(['.png', '.jpg', '.jpeg']);
const UNREADABLE = new Set(['.gif', '.bmp', '.webp', '.tif', '.tiff', '.heic', '.heif', '.avif', '.ppm', '.pgm', '.pbm', '.ico', '.svg', '.jxl', '.jp2']);
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0); // code-point order: the same on every machine

/** The visible entries of a folder, sorted, with whether each is a folder (symbolic links followed). */
function entries(dir: string): { name: string; isDirectory: () => boolean }[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => !e.name.startsWith('.'))
      .sort((a, b) => byName(a.name, b.name))
      .map((e) => {
        const isDir = e.isSymbolicLink() ? (fs.statSync(path.join(dir, e.name), { throwIfNoEntry: false })?.isDirectory() ?? false) : e.isDirectory();
        return { name: e.name, isDirectory: () => isDir };
      });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DatasetError(dir, code === 'ENOENT' ? 'folder not found' : code === 'ENOTDIR' ? 'not a folder' : `cannot read the folder (${code ?? (e as Error).message})`);
  }
}

/** Image files under dir (recursively, sorted); an image in a format we cannot read is an error. */
function imagesUnder(dir: string, out: string[] = []): string[] {
  for (const e of entries(dir)) {
    const f = path.join(dir, e.name);
    if (e.isDirectory()) imagesUnder(f, out);
    else {
      const ext = path.extname(e.name).toLowerCase();
      if (READABLE.has(ext)) out.push(f);
      else if (UNREADABLE.has(ext)) throw new DatasetError(f, `unsupported image format ${ext}; only PNG and JPEG can be read (convert it, or remove it from the folder)`);
    }
  }
  return out;
}

/** The files and labels of an image folder, without decoding anything. */
export function listImageFolder(dir: string): { files: string[]; labels: number[]; classNames: string[] } {
  const top = entries(dir);
  const classDirs = top.filter((e) => e.isDirectory());
  const files: string[] = [];
  const labels: number[] = [];
  if (classDirs.length === 0) {
    files.push(...imagesUnder(dir));
    labels.push(...files.map(() => 0));
    if (files.length === 0) throw new DatasetError(dir, 'no PNG or JPEG images found (expected images, or one sub-folder of images per class)');
    return { files, labels, classNames: [path.basename(path.resolve(dir))] };
  }
  const stray = top.find((e) => !e.isDirectory() && READABLE.has(path.extname(e.name).toLowerCase()));
  if (stray) throw new DatasetError(path.join(dir, stray.name), 'an image beside the class sub-folders has no class: move it into one of them');
  classDirs.forEach((c, label) => {
    const classDir = path.join(dir, c.name);
    const found = imagesUnder(classDir);
    if (found.length === 0) throw new DatasetError(classDir, `class folder "${c.name}" holds no PNG or JPEG images`);
    files.push(...found);
    labels.push(...found.map(() => label));
  });
  return { files, labels, classNames: classDirs.map((c) => c.name) };
}

/** The centered square of side min(w, h), as planar [C, S, S] bytes in gray (C = 1) or RGB (C = 3). */
export function centerSquare(img: DecodedImage, mode: 'rgb' | 'gray'): { side: number; data: Uint8Array } {
  const { width: w, height: h, rgba } = img;
  const s = Math.min(w, h);
  const top = Math.floor((h - s) / 2);
  const left = Math.floor((w - s) / 2);
  const plane = s * s;
  const out = new Uint8Array((mode === 'gray' ? 1 : 3) * plane);
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      const i = 4 * ((top + y) * w + left + x);
      const o = y * s + x;
      if (mode === 'gray')
        out[o] = Math.floor((rgba[i] * 299 + rgba[i + 1] * 587 + rgba[i + 2] * 114 + 500) / 1000); // ITU-R 601-2 luma
      else {
        out[o] = rgba[i];
        out[plane + o] = rgba[i + 1];
        out[2 * plane + o] = rgba[i + 2];
      }
    }
  }
  return { side: s, data: out };
}

/** Square planar [C, S, S] bytes resized to [C, N, N] bytes. */
function resizeSquare(data: Uint8Array, channels: number, side: number, size: number, resample: 'auto' | InterpolateMode): Uint8Array {
  if (side === size) return data;
  const mode: InterpolateMode = resample !== 'auto' ? resample : side > size ? 'area' : 'bilinear';
  return tidy(() => {
    const x = fromBytes(data, 'uint8', [1, channels, side, side]).float(); // [1, C, S, S]
    const y = interpolate(x, { size, mode }); // [1, C, N, N]
    return y.round().clamp(0, 255).to('uint8').bytes();
  });
}

/** Loads a folder of images: uint8 [N, C, size, size] with int64 labels from the sub-folder names. */
export function loadImageFolder(dir: string, { size, mode = 'rgb', resample = 'auto' }: ImageFolderOptions): ImageFolderDataset {
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`loadImageFolder: size must be a positive integer, got ${size}`);
  if (mode !== 'rgb' && mode !== 'gray') throw new TypeError(`loadImageFolder: mode must be 'rgb' or 'gray', got ${JSON.stringify(mode)}`);
  const { files, labels, classNames } = listImageFolder(dir);
  const channels = mode === 'gray' ? 1 : 3;
  const per = channels * size * size;
  const pixels = new Uint8Array(files.length * per);
  files.forEach((file, i) => {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch (e) {
      throw new DatasetError(file, `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    const sq = centerSquare(decodeImage(bytes, file), mode);
    pixels.set(resizeSquare(sq.data, channels, sq.side, size, resample), i * per);
  });
  return tidy(() => ({
    images: fromBytes(pixels, 'uint8', [files.length, channels, size, size]),
    labels: fromBytes(
      BigInt64Array.from(labels, (l) => BigInt(l)),
      'int64',
      [files.length],
    ),
    classNames,
    files,
  }));
}
