/**
 * PNG and JPEG in pure JavaScript (pngjs, jpeg-js): decoding for image folders,
 * encoding for writing images and sample grids. The format is told by the file's
 * first bytes, not its name; anything else is an error that names the file.
 *
 * @example
 *   const img = decodeImage(fs.readFileSync('cat.jpg'), 'cat.jpg'); // { width, height, rgba }
 *   fs.writeFileSync('gray.png', encodePNG({ width: 2, height: 1, channels: 1, data: Uint8Array.of(0, 255) }));
 */
import * as jpeg from 'jpeg-js';
import { DatasetError } from './errors';

// pngjs ships no types; this is the part of its sync API used here.
interface PngImage {
  width: number;
  height: number;
  data: Uint8Array;
}
interface PngWriteOptions {
  colorType: 0 | 2 | 4 | 6;
  inputColorType: 0 | 2 | 4 | 6;
  inputHasAlpha: boolean;
  bitDepth: 8;
}
const { PNG } = require('pngjs') as { PNG: { sync: { read(b: Uint8Array): PngImage; write(img: PngImage, o: PngWriteOptions): Buffer } } };

/** A decoded image: 8-bit RGBA, row-major [height, width, 4]. */
export interface DecodedImage {
  width: number;
  height: number;
  rgba: Uint8Array;
}

/** Pixels to encode: row-major [height, width, channels] bytes, channels 1 (gray), 3 (RGB) or 4 (RGBA). */
export interface RawImage {
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  data: Uint8Array;
}

export type ImageFormat = 'png' | 'jpeg';

const startsWith = (b: Uint8Array, sig: number[], at = 0) => b.length >= at + sig.length && sig.every((v, i) => b[at + i] === v);
const ascii = (s: string) => Array.from(s, (c) => c.charCodeAt(0));

/** The format from the first bytes: 'png', 'jpeg', or a description of what it is instead. */
export function sniffImage(bytes: Uint8Array): ImageFormat | { other: string } {
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, ascii('GIF8'))) return { other: 'a GIF image' };
  if (startsWith(bytes, ascii('BM'))) return { other: 'a BMP image' };
  if (startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8)) return { other: 'a WebP image' };
  if (startsWith(bytes, [0x49, 0x49, 0x2a, 0x00]) || startsWith(bytes, [0x4d, 0x4d, 0x00, 0x2a])) return { other: 'a TIFF image' };
  if (bytes.length === 0) return { other: 'an empty file' };
  const head = Array.from(bytes.subarray(0, 4), (v) => v.toString(16).padStart(2, '0')).join(' ');
  return { other: `not an image (it starts with bytes ${head})` };
}

/** Decodes PNG or JPEG bytes (a Buffer or any Uint8Array) to RGBA; `file` names the source in errors. */
export function decodeImage(bytes: Uint8Array, file: string): DecodedImage {
  const format = sniffImage(bytes);
  if (typeof format !== 'string') throw new DatasetError(file, `unsupported format: ${format.other}; only PNG and JPEG can be read (convert it, or remove it from the folder)`);
  // pngjs reads through Buffer methods (readUInt32BE): view a plain Uint8Array as a Buffer (no copy).
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let img: PngImage;
  try {
    img = format === 'png' ? PNG.sync.read(buf) : jpeg.decode(buf, { useTArray: true, formatAsRGBA: true });
  } catch (e) {
    throw new DatasetError(file, `cannot decode this ${format.toUpperCase()} file, it is corrupt or truncated (${(e as Error).message})`);
  }
  const { width, height, data } = img;
  if (!(width > 0 && height > 0) || data.length !== width * height * 4)
    throw new DatasetError(file, `cannot decode this ${format.toUpperCase()} file: it decoded to ${width} x ${height} with ${data.length} bytes`);
  return { width, height, rgba: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

function checkRaw(img: RawImage, op: string): void {
  const { width, height, channels, data } = img;
  if (!(Number.isSafeInteger(width) && width > 0 && Number.isSafeInteger(height) && height > 0)) throw new RangeError(`${op}: width and height must be positive integers, got ${width} x ${height}`);
  if (channels !== 1 && channels !== 3 && channels !== 4) throw new RangeError(`${op}: channels must be 1, 3 or 4, got ${channels}`);
  if (data.length !== width * height * channels) throw new RangeError(`${op}: ${data.length} bytes given, ${width} x ${height} x ${channels} needs ${width * height * channels}`);
}

/** Encodes 8-bit gray, RGB or RGBA pixels as a PNG (lossless). */
export function encodePNG(img: RawImage): Buffer {
  checkRaw(img, 'encodePNG');
  const colorType = ({ 1: 0, 3: 2, 4: 6 } as const)[img.channels];
  return PNG.sync.write({ width: img.width, height: img.height, data: img.data }, { colorType, inputColorType: colorType, inputHasAlpha: img.channels === 4, bitDepth: 8 });
}

/** Encodes 8-bit gray, RGB or RGBA pixels as a baseline JPEG (quality 1-100, default 90; alpha is dropped). */
export function encodeJPEG(img: RawImage, quality = 90): Buffer {
  checkRaw(img, 'encodeJPEG');
  if (!(quality >= 1 && quality <= 100)) throw new RangeError(`encodeJPEG: quality must be in [1, 100], got ${quality}`);
  const n = img.width * img.height;
  const rgba = new Uint8Array(n * 4);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) rgba[4 * i + c] = img.data[img.channels * i + (img.channels === 1 ? 0 : c)];
    rgba[4 * i + 3] = 255;
  }
  return jpeg.encode({ width: img.width, height: img.height, data: rgba }, quality).data;
}
