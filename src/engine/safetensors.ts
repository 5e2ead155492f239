// Safetensors files: read and write, interoperable with PyTorch's `safetensors` package.
// Format (https://github.com/huggingface/safetensors#format): an 8-byte little-endian u64 N,
// then N bytes of UTF-8 JSON {"__metadata__"?: {str: str}, name: {dtype, shape, data_offsets}},
// then the byte buffer; data_offsets are [begin, end) relative to the start of that buffer.
// Every size is checked against the file before it is used: a malformed file is a
// SafetensorsError, never a crash or an allocation larger than the file.
import * as fs from 'fs';
import { DType, itemSize } from './dtype';
import type { Tensor } from './tensor';

/** One tensor as raw bytes: row-major, little-endian, `data.length === numel * itemSize(dtype)`. */
export interface SafetensorsEntry {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** What `parseSafetensors` returns: the `__metadata__` strings and the tensors in file order. */
export interface ParsedSafetensors {
  metadata: Record<string, string>;
  entries: SafetensorsEntry[];
}

/** A malformed safetensors file or invalid input to the writer; the message names the file and tensor. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

/** Largest header accepted (the official implementation caps it at 100 MB too). */
export const MAX_HEADER_BYTES = 100_000_000;

// Safetensors dtype names <-> ours. Other official names (U16, F8_E4M3, ...) are rejected.
const TO_FORMAT: Record<DType, string> = {
  float32: 'F32',
  float64: 'F64',
  float16: 'F16',
  bfloat16: 'BF16',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint8: 'U8',
  bool: 'BOOL',
};
const FROM_FORMAT: ReadonlyMap<string, DType> = new Map((Object.keys(TO_FORMAT) as DType[]).map((d) => [TO_FORMAT[d], d]));
const METADATA_KEY = '__metadata__';
const ENTRY_KEYS = new Set(['dtype', 'shape', 'data_offsets']);

/** The safetensors name of a dtype. @example safetensorsDType('bfloat16') // 'BF16' */
export function safetensorsDType(d: DType): string {
  const name = TO_FORMAT[d];
  if (name === undefined) throw new SafetensorsError(`unsupported dtype ${JSON.stringify(d)}`);
  return name;
}

function prefix(source: string | undefined): string {
  return source === undefined ? 'invalid safetensors data' : `invalid safetensors file ${source}`;
}

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegativeSafeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

// Assigns an own property even for names like "__proto__" (plain assignment would set the prototype).
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

// numel * itemSize in BigInt, so shapes like [2^40, 2^40] cannot overflow or round.
function byteSize(shape: readonly number[], dtype: DType): bigint {
  let n = BigInt(itemSize(dtype));
  for (const d of shape) n *= BigInt(d);
  return n;
}

function checkShape(shape: unknown, fail: (msg: string) => never): number[] {
  if (!Array.isArray(shape)) fail(`shape must be an array of non-negative integers; got ${describe(shape)}`);
  for (const d of shape) {
    if (!isNonNegativeSafeInt(d)) fail(`shape must be an array of non-negative integers; got ${describe(shape)}`);
  }
  return (shape as number[]).slice();
}

// Where one tensor's bytes lie, relative to the start of the data buffer.
interface Located {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

function failer(source: string | undefined): (msg: string) => never {
  return (msg: string): never => {
    throw new SafetensorsError(`${prefix(source)}: ${msg}`);
  };
}

// Reads and checks the u64 header length from the first 8 bytes of a file of `fileLen` bytes.
function headerLength(first8: Uint8Array, fileLen: number, source: string | undefined): number {
  const fail: (msg: string) => never = failer(source);
  if (fileLen < 8) fail(`file is ${fileLen} bytes, shorter than the 8-byte header length`);
  const headerLen64 = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (headerLen64 > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${headerLen64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const headerLen = Number(headerLen64);
  if (8 + headerLen > fileLen) fail(`header length ${headerLen} is beyond the end of the file (${fileLen} bytes)`);
  if (headerLen < 2) fail(`header length ${headerLen} is too small for a JSON object`);
  return headerLen;
}

// Parses and validates the JSON header against a data buffer of `bufferLen` bytes.
function parseHeader(headerBytes: Uint8Array, bufferLen: number, source: string | undefined): { metadata: Record<string, string>; located: Located[] } {
  const fail: (msg: string) => never = failer(source);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) fail(`header must be a JSON object; got ${Array.isArray(header) ? 'an array' : describe(header)}`);

  const metadata: Record<string, string> = {};
  const located: Located[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (info === null) continue; // the official reader treats null as absent
      if (!isPlainObject(info)) return fail(`__metadata__ must be an object of strings; got ${describe(info)}`);
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== 'string') fail(`__metadata__ value for ${JSON.stringify(k)} must be a string; got ${describe(v)}`);
        setOwn(metadata, k, v);
      }
      continue;
    }
    const bad: (msg: string) => never = (msg) => fail(`tensor ${JSON.stringify(name)}: ${msg}`);
    if (!isPlainObject(info)) return bad(`entry must be an object with dtype, shape and data_offsets; got ${describe(info)}`);
    for (const k of Object.keys(info)) if (!ENTRY_KEYS.has(k)) bad(`unexpected field ${JSON.stringify(k)}`);

    const dtype = typeof info.dtype === 'string' ? FROM_FORMAT.get(info.dtype) : undefined;
    if (dtype === undefined) {
      return bad(`unknown dtype ${describe(info.dtype)} (supported: ${[...FROM_FORMAT.keys()].join(', ')})`);
    }
    const shape = checkShape(info.shape, bad);

    const off = info.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isNonNegativeSafeInt(off[0]) || !isNonNegativeSafeInt(off[1])) {
      return bad(`data_offsets must be two non-negative integers [begin, end]; got ${describe(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (begin > end) bad(`data_offsets [${begin}, ${end}] are reversed (begin > end)`);
    if (end > bufferLen) bad(`data_offsets end ${end} is beyond the data buffer (${bufferLen} bytes)`);
    // numel * itemSize in BigInt: a shape like [2^40, 2^40] is just a mismatch, never an allocation.
    const expected = byteSize(shape, dtype);
    if (BigInt(end - begin) !== expected) {
      bad(`size mismatch: shape [${shape.join(', ')}] of ${TO_FORMAT[dtype]} needs ${expected} bytes, ` + `data_offsets [${begin}, ${end}] hold ${end - begin}`);
    }
    located.push({ name, dtype, shape, begin, end });
  }

  // The ranges must tile the buffer exactly: sorted, each begins where the previous ended.
  const sorted = located.slice().sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = '';
  for (const e of sorted) {
    if (e.begin < pos) {
      fail(`tensor ${JSON.stringify(e.name)}: data_offsets [${e.begin}, ${e.end}] overlap tensor ` + `${JSON.stringify(prev)} (which ends at ${pos})`);
    }
    if (e.begin > pos) {
      fail(`gap in the data buffer: bytes [${pos}, ${e.begin}) belong to no tensor (before tensor ${JSON.stringify(e.name)})`);
    }
    pos = e.end;
    prev = e.name;
  }
  if (pos !== bufferLen) fail(`gap in the data buffer: bytes [${pos}, ${bufferLen}) at the end belong to no tensor`);
  return { metadata, located };
}

/**
 * Parses a safetensors file held in memory; tensor data are views into `bytes`, not copies.
 * Throws SafetensorsError (naming `source`, the tensor and the problem) on any malformed input.
 *
 * @example
 *   const { metadata, entries } = parseSafetensors(fs.readFileSync('model.safetensors'), 'model.safetensors');
 *   entries[0] // { name: 'w', dtype: 'float32', shape: [3, 4], data: Uint8Array(48) }
 */
export function parseSafetensors(bytes: Uint8Array, source?: string): ParsedSafetensors {
  if (!(bytes instanceof Uint8Array)) failer(source)('expected a Uint8Array');
  const headerLen = headerLength(bytes, bytes.length, source);
  const dataStart = 8 + headerLen;
  const { metadata, located } = parseHeader(bytes.subarray(8, dataStart), bytes.length - dataStart, source);
  const entries = located.map(({ name, dtype, shape, begin, end }) => ({
    name,
    dtype,
    shape,
    data: bytes.subarray(dataStart + begin, dataStart + end),
  }));
  return { metadata, entries };
}

// What the writer needs to know of a tensor before its bytes: name, dtype, shape.
type Spec = Omit<SafetensorsEntry, 'data'>;

// Validates the tensors and builds the padded header; returns it with the specs in file order.
function buildHeader<T extends Spec>(specs: readonly T[], metadata: Record<string, string> | undefined): { header: Uint8Array; sorted: T[]; sizes: number[]; dataLen: number } {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`cannot write safetensors: ${msg}`);
  };
  const sorted = specs.slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) fail(`metadata must be an object of strings; got ${describe(metadata)}`);
    const meta: Record<string, string> = {};
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(`metadata value for ${JSON.stringify(k)} must be a string; got ${describe(v)}`);
      setOwn(meta, k, v);
    }
    if (Object.keys(meta).length > 0) setOwn(header, METADATA_KEY, meta);
  }
  const sizes: number[] = [];
  let offset = 0;
  for (let i = 0; i < sorted.length; i++) {
    const { name, dtype, shape } = sorted[i];
    if (typeof name !== 'string') fail(`tensor name must be a string; got ${describe(name)}`);
    const bad = (msg: string): never => fail(`tensor ${JSON.stringify(name)}: ${msg}`);
    if (name === METADATA_KEY) bad('the name __metadata__ is reserved');
    if (i > 0 && sorted[i - 1].name === name) bad('duplicate tensor name');
    if (!Object.prototype.hasOwnProperty.call(TO_FORMAT, dtype)) bad(`unsupported dtype ${describe(dtype)}`);
    const dims = checkShape(shape, bad);
    const size = byteSize(dims, dtype);
    if (size > BigInt(Number.MAX_SAFE_INTEGER - offset)) bad(`shape [${dims.join(', ')}] is too large`);
    sizes.push(Number(size));
    setOwn(header, name, { dtype: TO_FORMAT[dtype], shape: dims, data_offsets: [offset, offset + Number(size)] });
    offset += Number(size);
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  // Pad with spaces so the data starts 8-byte aligned, as the official writer does.
  const headerLen = Math.ceil(json.length / 8) * 8;
  if (headerLen > MAX_HEADER_BYTES) fail(`header would be ${headerLen} bytes, over the ${MAX_HEADER_BYTES}-byte limit`);
  const out = new Uint8Array(8 + headerLen).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  return { header: out, sorted, sizes, dataLen: offset };
}

function checkData(e: Spec, data: unknown, size: number): Uint8Array {
  if (!(data instanceof Uint8Array)) throw new SafetensorsError(`cannot write safetensors: tensor ${JSON.stringify(e.name)}: data must be a Uint8Array`);
  if (data.length !== size) {
    throw new SafetensorsError(`cannot write safetensors: tensor ${JSON.stringify(e.name)}: shape [${e.shape.join(', ')}] of ${e.dtype} ` + `needs ${size} bytes, data has ${data.length}`);
  }
  return data;
}

/**
 * Serializes tensors (as raw bytes) to the safetensors format: tensors sorted by name, the
 * header padded with spaces to a multiple of 8 bytes, as the official writer does.
 *
 * @example
 *   const bytes = serializeSafetensors([{ name: 'w', dtype: 'float32', shape: [2], data: new Uint8Array(8) }], { step: '10' });
 */
export function serializeSafetensors(entries: readonly SafetensorsEntry[], metadata?: Record<string, string>): Uint8Array {
  const { header, sorted, sizes, dataLen } = buildHeader(entries, metadata);
  const datas = sorted.map((e, i) => checkData(e, e.data, sizes[i]));
  const out = new Uint8Array(header.length + dataLen);
  out.set(header, 0);
  let pos = header.length;
  for (const d of datas) {
    out.set(d, pos);
    pos += d.length;
  }
  return out;
}

// The tensor layer loads the native addon; required lazily so the byte-level API works without it.
function createModule(): typeof import('./create') {
  return require('./create') as typeof import('./create');
}

// Reads exactly `length` bytes at `position` (readSync may return short counts; 1 GiB chunks).
function readExactly(fd: number, length: number, position: number, source: string): Uint8Array {
  const out = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, out, done, Math.min(length - done, 1 << 30), position + done);
    if (n === 0) throw new SafetensorsError(`invalid safetensors file ${source}: file ended early (changed while reading?)`);
    done += n;
  }
  return out;
}

/**
 * Reads a safetensors file into CPU tensors (copies), with its `__metadata__`. The header is
 * validated against the file size before any tensor is read; tensors are read one at a time.
 * Throws SafetensorsError naming the file on any malformed content.
 *
 * @example
 *   const { tensors, metadata } = loadSafetensors('unet.safetensors');
 *   tensors['conv_in.weight'].shape // [320, 4, 3, 3]
 */
export function loadSafetensors(path: string): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const fd = fs.openSync(path, 'r');
  const tensors: Record<string, Tensor> = {};
  try {
    const { metadata, located, dataStart } = readHeader(fd, path);
    const { fromBytes } = createModule();
    // Every range is now known to lie inside the file, so each read is bounded by its size.
    for (const e of located) {
      setOwn(tensors, e.name, fromBytes(readExactly(fd, e.end - e.begin, dataStart + e.begin, path), e.dtype, e.shape));
    }
    return { tensors, metadata };
  } catch (err) {
    for (const t of Object.values(tensors)) t.dispose();
    throw err;
  } finally {
    fs.closeSync(fd);
  }
}

// Reads and checks the header of the open file `fd`: metadata, tensor ranges, and where the data start.
function readHeader(fd: number, path: string): { metadata: Record<string, string>; located: Located[]; dataStart: number } {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) throw new SafetensorsError(`invalid safetensors file ${path}: not a regular file`);
  const fileLen = st.size;
  const headerLen = headerLength(fileLen >= 8 ? readExactly(fd, 8, 0, path) : new Uint8Array(8), fileLen, path);
  const dataStart = 8 + headerLen;
  return { ...parseHeader(readExactly(fd, headerLen, 8, path), fileLen - dataStart, path), dataStart };
}

/**
 * The metadata and tensor names, dtypes and shapes of a safetensors file, without reading
 * the tensor data (the header is checked as loadSafetensors checks it).
 *
 * @example
 *   const { metadata, tensors } = readSafetensorsHeader('snapshot.safetensors');
 *   metadata['phema.sigmaRel']; // '0.05'
 */
export function readSafetensorsHeader(path: string): { metadata: Record<string, string>; tensors: { name: string; dtype: DType; shape: number[] }[] } {
  const fd = fs.openSync(path, 'r');
  try {
    const { metadata, located } = readHeader(fd, path);
    return { metadata, tensors: located.map(({ name, dtype, shape }) => ({ name, dtype, shape })) };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes tensors (and optional string metadata) to a safetensors file, atomically: the bytes
 * go to `${path}.tmp-${pid}`, which is then renamed over `path`. Tensors are copied to the CPU
 * and written one at a time, so the file is never held in memory whole.
 *
 * @example
 *   saveSafetensors('ckpt.safetensors', { w, b }, { step: '1000' });
 */
export function saveSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  const specs = Object.entries(tensors).map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape.slice(), t }));
  const { header, sorted, sizes } = buildHeader(specs, metadata);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      writeAll(fd, header);
      sorted.forEach((e, i) => writeAll(fd, checkData(e, e.t.bytes(), sizes[i])));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written);
}
