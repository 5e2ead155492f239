/**
 * A strict reader for IDX files, the format of MNIST and Fashion-MNIST
 * (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"): a 4-byte magic number
 * 0x00 0x00 <type> <ndims>, ndims big-endian uint32 sizes, then the data in
 * row-major order. Only unsigned bytes (type 0x08) are read — what the image
 * (magic 0x00000803) and label (0x00000801) files hold. Gzipped files (.gz, or any
 * file starting with the gzip magic) are unpacked with node:zlib.
 *
 * Every check that fails throws a DatasetError naming the file and the problem:
 * missing file, gunzip failure, short header, wrong magic, truncated or oversized
 * body, unexpected dims, labels out of range.
 *
 * @example
 *   const { dims, data } = readIdx('train-images-idx3-ubyte.gz', { magic: IDX_IMAGES }); // dims [60000, 28, 28]
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { DatasetError } from './errors';

/** Magic number of an IDX file of unsigned-byte images [N, rows, cols]. */
export const IDX_IMAGES = 0x00000803;
/** Magic number of an IDX file of unsigned-byte labels [N]. */
export const IDX_LABELS = 0x00000801;

export interface IdxArray {
  /** Sizes from the header, e.g. [60000, 28, 28]. */
  dims: number[];
  /** The values, row-major (a view into the unpacked file). */
  data: Uint8Array;
}

const hex = (n: number) => '0x' + (n >>> 0).toString(16).padStart(8, '0');

/** The bytes of a file, gunzipped when they start with the gzip magic (1f 8b). */
export function readMaybeGzip(file: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DatasetError(file, code === 'ENOENT' ? 'file not found' : `cannot read the file (${code ?? (e as Error).message})`);
  }
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return zlib.gunzipSync(raw);
    } catch (e) {
      throw new DatasetError(file, `gzip data is corrupt or truncated (${(e as Error).message}); delete the file and fetch it again`);
    }
  }
  if (file.endsWith('.gz'))
    throw new DatasetError(file, `named .gz but is not gzip data (starts with bytes ${Array.from(raw.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ') || 'none: the file is empty'})`);
  return raw;
}

/**
 * Reads an unsigned-byte IDX file. `magic` (IDX_IMAGES or IDX_LABELS) makes a file
 * of the other kind an error; without it any 0x08-typed IDX file is accepted.
 */
export function readIdx(file: string, { magic }: { magic?: number } = {}): IdxArray {
  const buf = readMaybeGzip(file);
  if (buf.length < 4) throw new DatasetError(file, `too short for an IDX header (${buf.length} bytes)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const m = view.getUint32(0, false);
  const want = magic === undefined ? '' : ` (expected ${hex(magic)}, ${magic === IDX_IMAGES ? 'an image file' : magic === IDX_LABELS ? 'a label file' : 'IDX'})`;
  if (buf[0] !== 0 || buf[1] !== 0) throw new DatasetError(file, `not an IDX file: magic number ${hex(m)}${want}`);
  if (buf[2] !== 0x08) throw new DatasetError(file, `IDX element type 0x${buf[2].toString(16)} is not supported (only unsigned bytes, 0x08)${want}`);
  if (magic !== undefined && m !== magic) throw new DatasetError(file, `wrong magic number ${hex(m)}${want}`);
  const ndims = buf[3];
  if (ndims === 0) throw new DatasetError(file, 'IDX header has zero dimensions');
  const headerBytes = 4 + 4 * ndims;
  if (buf.length < headerBytes) throw new DatasetError(file, `truncated header: ${ndims} dims need ${headerBytes} bytes, the file has ${buf.length}`);
  const dims: number[] = [];
  for (let i = 0; i < ndims; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const need = dims.reduce((a, b) => a * b, 1);
  const have = buf.length - headerBytes;
  const shape = dims.join(' x ');
  if (have < need) throw new DatasetError(file, `truncated: the header says ${shape} = ${need} bytes of data, the file has ${have}`);
  if (have > need) throw new DatasetError(file, `size mismatch: the header says ${shape} = ${need} bytes of data, the file has ${have} (${have - need} extra)`);
  return { dims, data: buf.subarray(headerBytes) };
}

/** Reads an IDX image file: [N, rows, cols] unsigned bytes. */
export function readIdxImages(file: string): IdxArray {
  const a = readIdx(file, { magic: IDX_IMAGES });
  if (a.dims[0] === 0) throw new DatasetError(file, 'the file holds no images (N = 0)');
  return a;
}

/** Reads an IDX label file: [N] unsigned bytes, each < numClasses. */
export function readIdxLabels(file: string, numClasses = 256): IdxArray {
  const a = readIdx(file, { magic: IDX_LABELS });
  if (a.dims[0] === 0) throw new DatasetError(file, 'the file holds no labels (N = 0)');
  for (let i = 0; i < a.data.length; i++) if (a.data[i] >= numClasses) throw new DatasetError(file, `label ${a.data[i]} at index ${i} is out of range (expected 0..${numClasses - 1})`);
  return a;
}
