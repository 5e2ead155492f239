/**
 * Tensors in [-1, 1] to 8-bit images and PNG files: one image per sample, or a grid.
 *
 * @example
 *   writePNG('samples.png', imageGrid(x, { ncol: 8 }));  // x: [64, 1, 32, 32] in [-1, 1]
 *   toImages(x).forEach((img, i) => writePNG(`${i}.png`, img));
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { encodePNG, RawImage } from '../data/image-codec';

/** x [N, C, H, W] (C = 1 or 3) in [-1, 1] -> bytes [N, H, W, C], clamped and rounded (x + 1) * 127.5. */
export function toUint8(x: Tensor): { n: number; channels: 1 | 3; height: number; width: number; data: Uint8Array } {
  if (x.ndim !== 4 || (x.dim(1) !== 1 && x.dim(1) !== 3)) throw new TypeError(`toUint8: images must have shape [N, 1 or 3, H, W], got [${x.shape.join(', ')}]`);
  const [n, c, h, w] = x.shape;
  const bytes = noGrad(() => tidy(() => x.to({ dtype: 'float32', device: 'cpu' }).clamp(-1, 1).add(1).mul(127.5).round().to({ dtype: 'uint8' }).permute(0, 2, 3, 1).contiguous().bytes()));
  return { n, channels: c as 1 | 3, height: h, width: w, data: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length) };
}

/** Each sample as its own image. */
export function toImages(x: Tensor): RawImage[] {
  const { n, channels, height, width, data } = toUint8(x);
  const size = height * width * channels;
  return Array.from({ length: n }, (_, i) => ({ width, height, channels, data: data.slice(i * size, (i + 1) * size) }));
}

export interface GridOptions {
  /** Images per row (default ceil(sqrt(N))). */
  ncol?: number;
  /** Pixels between and around images (default 2). */
  padding?: number;
  /** Gray level of the padding, 0-255 (default 128). */
  padValue?: number;
  /** Integer upscaling factor, nearest neighbour (default 1). */
  scale?: number;
}

/** The samples x [N, C, H, W] in [-1, 1] tiled row by row into one image (torchvision's make_grid). */
export function imageGrid(x: Tensor, { ncol, padding = 2, padValue = 128, scale = 1 }: GridOptions = {}): RawImage {
  const { n, channels: C, height: h, width: w, data } = toUint8(x);
  const cols = Math.max(1, Math.min(ncol ?? Math.ceil(Math.sqrt(n)), Math.max(n, 1)));
  if (!Number.isSafeInteger(cols)) throw new RangeError(`imageGrid: ncol must be a positive integer, got ${ncol}`);
  if (!Number.isSafeInteger(scale) || scale < 1) throw new RangeError(`imageGrid: scale must be a positive integer, got ${scale}`);
  if (!Number.isSafeInteger(padding) || padding < 0) throw new RangeError(`imageGrid: padding must be a non-negative integer, got ${padding}`);
  const rows = Math.max(1, Math.ceil(n / cols));
  const [th, tw] = [h * scale, w * scale];
  const W = cols * (tw + padding) + padding;
  const H = rows * (th + padding) + padding;
  const out = new Uint8Array(W * H * C).fill(padValue);
  for (let i = 0; i < n; i++) {
    const [r, c] = [Math.floor(i / cols), i % cols];
    const [oy, ox] = [padding + r * (th + padding), padding + c * (tw + padding)];
    for (let y = 0; y < th; y++)
      for (let xx = 0; xx < tw; xx++) {
        const src = ((i * h + Math.floor(y / scale)) * w + Math.floor(xx / scale)) * C;
        const dst = ((oy + y) * W + ox + xx) * C;
        for (let k = 0; k < C; k++) out[dst + k] = data[src + k];
      }
  }
  return { width: W, height: H, channels: C, data: out };
}

/** Writes bytes atomically: to a temporary file beside `file`, then renamed over it. */
export function writeFileAtomic(file: string, bytes: Uint8Array | string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  try {
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Encodes and writes a PNG (atomically). */
export function writePNG(file: string, img: RawImage): void {
  writeFileAtomic(file, encodePNG(img));
}
