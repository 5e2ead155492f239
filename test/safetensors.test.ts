// Safetensors: byte-level and tensor-level round trips, a corpus of malformed files (each a
// clear SafetensorsError, never a crash or a big allocation), and interop with PyTorch both ways
// through scripts/fixtures/safetensors_interop.py (an independent Python implementation).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DType, itemSize } from '../src/engine/dtype';
import { loadSafetensors, MAX_HEADER_BYTES, parseSafetensors, saveSafetensors, SafetensorsEntry, SafetensorsError, serializeSafetensors } from '../src/engine/safetensors';
import type { Tensor } from '../src/engine/tensor';

const ROOT = path.resolve(__dirname, '../..');
const PYTHON = '/usr/bin/python3';
const INTEROP = path.join(ROOT, 'scripts/fixtures/safetensors_interop.py');
const ALL: DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'];
const FORMAT: Record<DType, string> = {
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
const DTYPE_OF: Record<string, DType> = Object.fromEntries(ALL.map((d) => [FORMAT[d], d]));

// The tensor layer loads the native addon: required lazily so the byte-level tests run without it.
function engine(): typeof import('../src/engine/create') {
  return require('../src/engine/create') as typeof import('../src/engine/create');
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-safetensors-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

// ---- value <-> byte helpers, written independently of the code under test ----

type Value = number | boolean | string; // int64 as decimal strings

function f16Bits(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  let bits: number;
  if (Number.isNaN(x)) bits = 0x7e00;
  else if (a === Infinity) bits = sign | 0x7c00;
  else if (a === 0) bits = sign;
  else if (a < 2 ** -14) bits = sign | Math.round(a / 2 ** -24);
  else {
    let e = Math.floor(Math.log2(a));
    if (2 ** e > a) e--;
    if (2 ** (e + 1) <= a) e++;
    bits = sign | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
  }
  if (!Number.isNaN(x) && f16Value(bits) !== x) throw new Error(`${x} is not exactly a float16`);
  return bits;
}

function f16Value(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function encode(dtype: DType, values: readonly Value[]): Uint8Array {
  const out = new Uint8Array(values.length * itemSize(dtype));
  const v = new DataView(out.buffer);
  values.forEach((x, i) => {
    const o = i * itemSize(dtype);
    switch (dtype) {
      case 'float32':
        v.setFloat32(o, x as number, true);
        break;
      case 'float64':
        v.setFloat64(o, x as number, true);
        break;
      case 'float16':
        v.setUint16(o, f16Bits(x as number), true);
        break;
      case 'bfloat16': {
        const w = new DataView(new ArrayBuffer(4));
        w.setFloat32(0, x as number, true);
        if (w.getUint16(0, true) !== 0 && !Number.isNaN(x)) throw new Error(`${x} is not exactly a bfloat16`);
        v.setUint16(o, w.getUint16(2, true), true);
        break;
      }
      case 'int64':
        v.setBigInt64(o, BigInt(x), true);
        break;
      case 'int32':
        v.setInt32(o, x as number, true);
        break;
      case 'int16':
        v.setInt16(o, x as number, true);
        break;
      case 'int8':
        v.setInt8(o, x as number);
        break;
      case 'uint8':
        v.setUint8(o, x as number);
        break;
      case 'bool':
        v.setUint8(o, x ? 1 : 0);
        break;
    }
  });
  return out;
}

function decode(dtype: DType, bytes: Uint8Array): Value[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length / itemSize(dtype);
  const out: Value[] = [];
  for (let i = 0; i < n; i++) {
    const o = i * itemSize(dtype);
    switch (dtype) {
      case 'float32':
        out.push(v.getFloat32(o, true));
        break;
      case 'float64':
        out.push(v.getFloat64(o, true));
        break;
      case 'float16':
        out.push(f16Value(v.getUint16(o, true)));
        break;
      case 'bfloat16': {
        const w = new DataView(new ArrayBuffer(4));
        w.setUint16(2, v.getUint16(o, true), true);
        out.push(w.getFloat32(0, true));
        break;
      }
      case 'int64':
        out.push(v.getBigInt64(o, true).toString());
        break;
      case 'int32':
        out.push(v.getInt32(o, true));
        break;
      case 'int16':
        out.push(v.getInt16(o, true));
        break;
      case 'int8':
        out.push(v.getInt8(o));
        break;
      case 'uint8':
        out.push(v.getUint8(o));
        break;
      case 'bool':
        out.push(v.getUint8(o) !== 0);
        break;
    }
  }
  return out;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

// Exactly representable sample values of each dtype, including edge cases.
function sampleValues(dtype: DType, n: number, seed: number): Value[] {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo));
  const out: Value[] = [];
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case 'float32':
        out.push(Math.fround(r() * 8 - 4));
        break;
      case 'float64':
        out.push(r() * 8 - 4);
        break;
      case 'float16':
        out.push(f16Value(int(0, 0x7c00) | (r() < 0.5 ? 0x8000 : 0)));
        break;
      case 'bfloat16':
        out.push(decode('bfloat16', new Uint8Array([int(0, 256), int(0, 0x7f) | (r() < 0.5 ? 0x80 : 0)]))[0]);
        break;
      case 'int64':
        out.push((BigInt(int(-(2 ** 31), 2 ** 31)) * BigInt(int(0, 2 ** 31))).toString());
        break;
      case 'int32':
        out.push(int(-(2 ** 31), 2 ** 31));
        break;
      case 'int16':
        out.push(int(-(2 ** 15), 2 ** 15));
        break;
      case 'int8':
        out.push(int(-128, 128));
        break;
      case 'uint8':
        out.push(int(0, 256));
        break;
      case 'bool':
        out.push(r() < 0.5);
        break;
    }
  }
  if (dtype.startsWith('float') || dtype === 'bfloat16') out.splice(0, 3, -0, Infinity, -Infinity);
  if (dtype === 'int64') out.splice(0, 2, '9223372036854775807', '-9223372036854775808');
  return out.slice(0, n);
}

const SHAPES: number[][] = [[2, 3], [5], [], [0, 4], [2, 1, 3]];

function sampleEntries(): SafetensorsEntry[] {
  const entries: SafetensorsEntry[] = [];
  ALL.forEach((dtype, i) => {
    const shape = SHAPES[i % SHAPES.length];
    const numel = shape.reduce((a, b) => a * b, 1);
    entries.push({ name: `t.${dtype}`, dtype, shape, data: encode(dtype, sampleValues(dtype, numel, i + 1)) });
    entries.push({ name: `big.${dtype}`, dtype, shape: [4, 3], data: encode(dtype, sampleValues(dtype, 12, i + 100)) });
  });
  return entries;
}

// A file from a header (object or raw JSON text) and a data buffer, with an optional forced length field.
function build(header: unknown, data: Uint8Array | number = 0, lengthField?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const buf = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + buf.length);
  new DataView(out.buffer).setBigUint64(0, lengthField ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(buf, 8 + json.length);
  return out;
}

function writeTmp(name: string, bytes: Uint8Array): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, bytes);
  return p;
}

// ---- byte-level round trips ----

test('the byte-level API works without loading the native addon', () => {
  parseSafetensors(serializeSafetensors([{ name: 'x', dtype: 'uint8', shape: [1], data: new Uint8Array([1]) }]));
  assert.deepEqual(
    Object.keys(require.cache).filter((k) => /engine[\\/](native|tensor|create)\.js$/.test(k)),
    [],
  );
});

test('serialize/parse round trip of every dtype, with metadata', () => {
  const entries = sampleEntries();
  const metadata = { format: 'pt', step: '1200', note: 'héllo ✓ 世界', ['__proto__']: 'not a prototype' };
  const bytes = serializeSafetensors(entries, metadata);
  const parsed = parseSafetensors(bytes, 'mem');
  assert.deepEqual(parsed.metadata, metadata);
  assert.equal(Object.getPrototypeOf(parsed.metadata), Object.prototype);
  assert.deepEqual(
    parsed.entries.map((e) => e.name),
    entries.map((e) => e.name).sort(),
  );
  for (const want of entries) {
    const got = parsed.entries.find((e) => e.name === want.name)!;
    assert.equal(got.dtype, want.dtype, want.name);
    assert.deepEqual(got.shape, want.shape, want.name);
    assert.deepEqual(Buffer.from(got.data), Buffer.from(want.data), want.name);
    assert.equal(got.data.buffer, bytes.buffer, 'data are views, not copies');
  }
});

test('writer output: header padded with spaces to 8 bytes, tensors sorted by name, deterministic', () => {
  const entries = sampleEntries();
  const bytes = serializeSafetensors(entries, { a: 'b' });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const text = Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8');
  assert.match(text, /^\{"__metadata__":\{"a":"b"\},.*\} *$/);
  const header = JSON.parse(text) as Record<string, { data_offsets: [number, number] }>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  assert.deepEqual(names, names.slice().sort());
  const begins = names.map((k) => header[k].data_offsets[0]);
  assert.deepEqual(
    begins,
    begins.slice().sort((a, b) => a - b),
    'data laid out in name order',
  );
  // Same bytes whatever the input order, and parse -> serialize is the identity.
  assert.deepEqual(Buffer.from(serializeSafetensors(entries.slice().reverse(), { a: 'b' })), Buffer.from(bytes));
  const again = parseSafetensors(bytes);
  assert.deepEqual(Buffer.from(serializeSafetensors(again.entries, again.metadata)), Buffer.from(bytes));
});

test('empty file (no tensors, no metadata) round trips', () => {
  const bytes = serializeSafetensors([]);
  assert.equal(bytes.length, 16);
  assert.deepEqual(parseSafetensors(bytes), { metadata: {}, entries: [] });
});

test('the reader accepts any order, null metadata, whitespace and zero-size tensors sharing an offset', () => {
  const header = {
    b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
    __metadata__: null,
    e1: { dtype: 'I64', shape: [0], data_offsets: [4, 4] },
    a: { dtype: 'U8', shape: [2, 2], data_offsets: [0, 4] },
    e2: { dtype: 'BOOL', shape: [3, 0], data_offsets: [4, 4] },
  };
  const parsed = parseSafetensors(build('\n ' + JSON.stringify(header) + '   ', new Uint8Array([1, 2, 3, 4, 0, 0, 128, 63])));
  assert.deepEqual(parsed.metadata, {});
  assert.deepEqual(
    parsed.entries.map((e) => [e.name, e.dtype, e.shape, [...e.data]]),
    [
      ['b', 'float32', [1], [0, 0, 128, 63]],
      ['e1', 'int64', [0], []],
      ['a', 'uint8', [2, 2], [1, 2, 3, 4]],
      ['e2', 'bool', [3, 0], []],
    ],
  );
});

test('a tensor named __proto__ is an own entry, not a prototype', () => {
  const bytes = build('{"__proto__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', new Uint8Array([7]));
  const parsed = parseSafetensors(bytes);
  assert.deepEqual(
    parsed.entries.map((e) => e.name),
    ['__proto__'],
  );
});

test('the writer rejects invalid input with a clear error', () => {
  const ok = { name: 'w', dtype: 'float32' as DType, shape: [2], data: new Uint8Array(8) };
  const cases: [string, SafetensorsEntry[], Record<string, string> | undefined, RegExp][] = [
    ['size mismatch', [{ ...ok, data: new Uint8Array(7) }], undefined, /tensor "w".*needs 8 bytes, data has 7/],
    ['bad dtype', [{ ...ok, dtype: 'complex64' as DType }], undefined, /tensor "w": unsupported dtype "complex64"/],
    ['bad shape', [{ ...ok, shape: [-2] }], undefined, /tensor "w": shape must be/],
    ['duplicate', [ok, { ...ok }], undefined, /tensor "w": duplicate tensor name/],
    ['reserved', [{ ...ok, name: '__metadata__' }], undefined, /reserved/],
    ['metadata', [ok], { step: 3 as unknown as string }, /metadata value for "step" must be a string/],
  ];
  for (const [what, entries, meta, re] of cases) {
    assert.throws(
      () => serializeSafetensors(entries, meta),
      (e: unknown) => e instanceof SafetensorsError && re.test(e.message),
      what,
    );
  }
});

// ---- malformed files ----

const W = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
const MALFORMED: { name: string; bytes: () => Uint8Array; error: RegExp }[] = [
  { name: 'empty file', bytes: () => new Uint8Array(0), error: /0 bytes, shorter than the 8-byte header length/ },
  { name: 'truncated (<8 bytes)', bytes: () => new Uint8Array([16, 0, 0, 0, 0]), error: /5 bytes, shorter than the 8-byte header length/ },
  { name: 'huge header length 2^60', bytes: () => build({}, 0, 2n ** 60n), error: /header length 1152921504606846976 exceeds the 100000000-byte limit/ },
  { name: 'header length 2^64-1', bytes: () => build({}, 0, 2n ** 64n - 1n), error: /header length 18446744073709551615 exceeds/ },
  { name: 'header length beyond the file', bytes: () => build({ w: W }, 8, 1000n), error: /header length 1000 is beyond the end of the file \(\d+ bytes\)/ },
  { name: 'header length just over the cap', bytes: () => build({}, 0, BigInt(MAX_HEADER_BYTES + 1)), error: /exceeds the 100000000-byte limit/ },
  { name: 'header length 0', bytes: () => build('', 0), error: /header length 0 is too small/ },
  { name: 'invalid UTF-8', bytes: () => build('{"a":1}').map((b, i) => (i === 10 ? 0xff : b)), error: /header is not valid UTF-8/ },
  { name: 'invalid JSON', bytes: () => build('{"w": {"dtype": "F32",', 8), error: /header is not valid JSON/ },
  { name: 'JSON array instead of object', bytes: () => build('[1, 2, 3]'), error: /header must be a JSON object; got an array/ },
  { name: 'JSON null', bytes: () => build('null'), error: /header must be a JSON object; got null/ },
  { name: 'JSON string', bytes: () => build('"abc"'), error: /header must be a JSON object; got "abc"/ },
  { name: 'entry not an object', bytes: () => build({ w: [1, 2] }), error: /tensor "w": entry must be an object/ },
  { name: 'unknown field', bytes: () => build({ w: { ...W, extra: 1 } }, 8), error: /tensor "w": unexpected field "extra"/ },
  { name: 'unknown dtype F8', bytes: () => build({ w: { ...W, dtype: 'F8' } }, 8), error: /tensor "w": unknown dtype "F8"/ },
  { name: 'dtype not a string', bytes: () => build({ w: { ...W, dtype: 4 } }, 8), error: /tensor "w": unknown dtype 4/ },
  { name: 'missing dtype', bytes: () => build({ w: { shape: [2], data_offsets: [0, 8] } }, 8), error: /tensor "w": unknown dtype undefined/ },
  { name: 'negative shape', bytes: () => build({ w: { ...W, shape: [-2] } }, 8), error: /tensor "w": shape must be an array of non-negative integers; got \[-2\]/ },
  { name: 'fractional shape', bytes: () => build({ w: { ...W, shape: [1.5, 2] } }, 8), error: /tensor "w": shape must be an array of non-negative integers; got \[1.5,2\]/ },
  { name: 'shape not an array', bytes: () => build({ w: { ...W, shape: 2 } }, 8), error: /tensor "w": shape must be an array/ },
  { name: 'shape with a string', bytes: () => build({ w: { ...W, shape: ['2'] } }, 8), error: /tensor "w": shape must be an array/ },
  { name: 'shape beyond safe integers', bytes: () => build({ w: { ...W, shape: [2 ** 60] } }, 8), error: /tensor "w": shape must be/ },
  { name: 'offsets reversed', bytes: () => build({ w: { ...W, data_offsets: [8, 0] } }, 8), error: /tensor "w": data_offsets \[8, 0\] are reversed/ },
  { name: 'offsets past the end', bytes: () => build({ w: { ...W, data_offsets: [0, 400] } }, 8), error: /tensor "w": data_offsets end 400 is beyond the data buffer \(8 bytes\)/ },
  { name: 'offsets huge', bytes: () => build('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,1e300]}}', 8), error: /tensor "w": data_offsets must be two non-negative integers/ },
  { name: 'offsets negative', bytes: () => build({ w: { ...W, data_offsets: [-8, 0] } }, 8), error: /tensor "w": data_offsets must be two non-negative integers/ },
  { name: 'offsets of wrong length', bytes: () => build({ w: { ...W, data_offsets: [0, 4, 8] } }, 8), error: /tensor "w": data_offsets must be two/ },
  { name: 'size mismatch with shape', bytes: () => build({ w: { ...W, shape: [3] } }, 8), error: /tensor "w": size mismatch: shape \[3\] of F32 needs 12 bytes, data_offsets \[0, 8\] hold 8/ },
  {
    name: 'huge shape [2^40, 2^40] with small offsets',
    bytes: () => build({ w: { ...W, shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } }, 4),
    error: /tensor "w": size mismatch: shape \[1099511627776, 1099511627776\] of F32 needs 4835703278458516698824704 bytes/,
  },
  {
    name: 'overlapping tensors',
    bytes: () => build({ a: W, b: { ...W, data_offsets: [4, 12] } }, 12),
    error: /tensor "b": data_offsets \[4, 12\] overlap tensor "a"/,
  },
  {
    name: 'identical ranges',
    bytes: () => build({ a: W, b: W }, 8),
    error: /data_offsets \[0, 8\] overlap tensor/,
  },
  {
    name: 'gap between tensors',
    bytes: () => build({ a: { ...W, shape: [1], data_offsets: [0, 4] }, b: { ...W, shape: [1], data_offsets: [8, 12] } }, 12),
    error: /gap in the data buffer: bytes \[4, 8\) belong to no tensor \(before tensor "b"\)/,
  },
  { name: 'gap at the start', bytes: () => build({ a: { ...W, data_offsets: [4, 12] } }, 12), error: /gap in the data buffer: bytes \[0, 4\)/ },
  { name: 'trailing bytes', bytes: () => build({ a: W }, 12), error: /gap in the data buffer: bytes \[8, 12\) at the end/ },
  { name: 'data but no tensors', bytes: () => build({}, 3), error: /gap in the data buffer: bytes \[0, 3\)/ },
  { name: 'non-string metadata', bytes: () => build({ __metadata__: { step: 10 }, w: W }, 8), error: /__metadata__ value for "step" must be a string; got 10/ },
  { name: 'metadata an array', bytes: () => build({ __metadata__: ['a'] }), error: /__metadata__ must be an object of strings/ },
];

for (const c of MALFORMED) {
  test(`malformed: ${c.name} -> clear error`, () => {
    const bytes = c.bytes();
    assert.throws(
      () => parseSafetensors(bytes, 'bad.safetensors'),
      (e: unknown) => {
        assert.ok(e instanceof SafetensorsError, `expected a SafetensorsError, got ${String(e)}`);
        assert.match(e.message, /^invalid safetensors file bad\.safetensors: /);
        assert.match(e.message, c.error);
        return true;
      },
    );
    // From disk: the same error, naming the path (rejected before any tensor is read).
    const file = writeTmp(`${c.name.replace(/\W+/g, '_')}.safetensors`, bytes);
    assert.throws(
      () => loadSafetensors(file),
      (e: unknown) => e instanceof SafetensorsError && e.message.includes(file) && c.error.test(e.message),
    );
  });
}

test('fuzz: random corruptions of a valid file give a SafetensorsError or a valid parse, never another error', () => {
  const good = serializeSafetensors(sampleEntries(), { k: 'v' });
  const n = Number(new DataView(good.buffer).getBigUint64(0, true));
  const r = rng(42);
  let rejected = 0;
  for (let i = 0; i < 3000; i++) {
    let bytes: Uint8Array = good.slice();
    const kind = i % 4;
    if (kind === 0) bytes = bytes.subarray(0, Math.floor(r() * bytes.length));
    else if (kind === 1) for (let k = 0; k < 1 + r() * 4; k++) bytes[Math.floor(r() * (8 + n))] = Math.floor(r() * 256);
    else if (kind === 2) bytes[Math.floor(r() * 8)] = Math.floor(r() * 256);
    else {
      // Replace one digit in the header with another: plausible-looking but wrong numbers.
      const at = 8 + Math.floor(r() * n);
      if (bytes[at] >= 0x30 && bytes[at] <= 0x39) bytes[at] = 0x30 + Math.floor(r() * 10);
    }
    try {
      const p = parseSafetensors(bytes);
      for (const e of p.entries) assert.equal(e.data.length, e.shape.reduce((a, b) => a * b, 1) * itemSize(e.dtype));
    } catch (e) {
      assert.ok(e instanceof SafetensorsError, `iteration ${i}: ${String(e)}`);
      rejected++;
    }
  }
  assert.ok(rejected > 1000, `only ${rejected} corruptions were rejected`);
});

test('loadSafetensors on a missing path or a directory fails cleanly', () => {
  assert.throws(() => loadSafetensors(path.join(tmp, 'nope.safetensors')), /ENOENT/);
  assert.throws(
    () => loadSafetensors(tmp),
    (e: unknown) => e instanceof Error && /EISDIR|not a regular file/.test(e.message),
  );
});

// ---- tensor level (needs the native addon) ----

function disposeAll(ts: Record<string, Tensor>): void {
  for (const t of Object.values(ts)) t.dispose();
}

test('saveSafetensors/loadSafetensors round trip of every dtype, with metadata', () => {
  const { fromBytes } = engine();
  const tensors: Record<string, Tensor> = {};
  for (const e of sampleEntries()) tensors[e.name] = fromBytes(e.data, e.dtype, e.shape);
  const file = path.join(tmp, 'roundtrip.safetensors');
  const metadata = { format: 'pt', epoch: '3', empty: '' };
  try {
    saveSafetensors(file, tensors, metadata);
    assert.deepEqual(
      fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
      [],
      'no temporary file left behind',
    );
    const loaded = loadSafetensors(file);
    try {
      assert.deepEqual(loaded.metadata, metadata);
      assert.deepEqual(Object.keys(loaded.tensors).sort(), Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(tensors)) {
        const u = loaded.tensors[name];
        assert.equal(u.dtype, t.dtype, name);
        assert.deepEqual(u.shape, t.shape, name);
        assert.deepEqual(Buffer.from(u.bytes()), Buffer.from(t.bytes()), name);
      }
    } finally {
      disposeAll(loaded.tensors);
    }
    // Overwriting an existing file works (rename over it).
    saveSafetensors(file, { only: tensors['t.float32'] });
    const again = loadSafetensors(file);
    assert.deepEqual(Object.keys(again.tensors), ['only']);
    assert.deepEqual(again.metadata, {});
    disposeAll(again.tensors);
  } finally {
    disposeAll(tensors);
  }
});

test('saveSafetensors is atomic: a failure leaves the old file intact and no temporary file', () => {
  const { fromBytes } = engine();
  const file = path.join(tmp, 'atomic.safetensors');
  const t = fromBytes(encode('float32', [1, 2]), 'float32', [2]);
  // Tensor-shaped stand-ins whose bytes() fails or lies, to fail after the header is written.
  const throwing = {
    dtype: 'float32',
    shape: [1],
    bytes: () => {
      throw new Error('device lost');
    },
  } as unknown as Tensor;
  const lying = { dtype: 'float32', shape: [3], bytes: () => new Uint8Array(4) } as unknown as Tensor;
  try {
    saveSafetensors(file, { t });
    const before = fs.readFileSync(file);
    assert.throws(() => saveSafetensors(file, { t, z: throwing }), /device lost/);
    assert.throws(() => saveSafetensors(file, { t, z: lying }), /tensor "z": shape \[3\] of float32 needs 12 bytes, data has 4/);
    assert.throws(() => saveSafetensors(file, { t }, { bad: 1 as unknown as string }), /metadata value for "bad" must be a string/);
    assert.deepEqual(fs.readFileSync(file), before);
    assert.deepEqual(
      fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
      [],
    );
    assert.throws(() => saveSafetensors(path.join(tmp, 'no-such-dir', 'x.safetensors'), { t }), /ENOENT/);
  } finally {
    t.dispose();
  }
});

// ---- interop with PyTorch (scripts/fixtures/safetensors_interop.py) ----

interface PyDump {
  metadata: Record<string, string>;
  tensors: Record<string, { dtype: string; shape: number[]; values: Value[] }>;
}

// Runs the fixture script. A missing interpreter or PyTorch (exit 3) fails the test: never a skip.
function python(args: string[]): { status: number; stdout: string; stderr: string } {
  let r: { status: number; stdout: string; stderr: string };
  try {
    r = { status: 0, stdout: execFileSync(PYTHON, [INTEROP, ...args], { encoding: 'utf8', stdio: 'pipe' }), stderr: '' };
  } catch (e) {
    const err = e as { code?: string; status?: number; stdout?: string; stderr?: string; message: string };
    if (err.code === 'ENOENT') {
      assert.fail(`${PYTHON} not found: the safetensors interop test needs Debian's python3-torch there. Run \`npm run setup\`.`);
    }
    if (err.status === 3) assert.fail(`safetensors interop test: ${(err.stderr ?? '').trim()}`);
    r = { status: err.status ?? -1, stdout: err.stdout ?? '', stderr: err.stderr || err.message };
  }
  return r;
}

let reference: { file: string; dump: PyDump } | undefined;
// The file Python writes (once per run) and the values it printed for it.
function pyReference(): { file: string; dump: PyDump } {
  if (!reference) {
    const file = path.join(tmp, 'from-python.safetensors');
    const r = python(['write', file]);
    assert.equal(r.status, 0, `safetensors_interop.py write failed: ${r.stderr}`);
    reference = { file, dump: JSON.parse(r.stdout) as PyDump };
  }
  return reference;
}

// Asserts that Python's check accepts every file.
function pyCheckPasses(...files: string[]): void {
  const r = python(['check', ...files]);
  assert.equal(r.status, 0, `PyTorch rejected the file(s) written here: ${r.stderr}`);
  for (const f of files) assert.ok(r.stdout.includes(`ok ${f}:`), r.stdout);
}

const EXPECTED_NAMES = ['bf16', 'bool', 'empty', 'empty_i64', 'f16', 'f32', 'f64', 'i16', 'i32', 'i64', 'i64_big', 'i8', 'scalar', 'u8'];
const EXPECTED_METADATA = { format: 'pt', source: 'diffuse safetensors interop', unicode: 'héllo ✓ 世界' };

// Entries rebuilt in TypeScript from the values Python printed (not from its file's bytes).
function entriesFromDump(dump: PyDump): SafetensorsEntry[] {
  return Object.entries(dump.tensors).map(([name, t]) => {
    const dtype = DTYPE_OF[t.dtype];
    return { name, dtype, shape: t.shape, data: encode(dtype, t.values) };
  });
}

test('interop: PyTorch writes, TypeScript parses (byte level)', () => {
  const { file, dump } = pyReference();
  const { metadata, entries } = parseSafetensors(fs.readFileSync(file), file);
  assert.deepEqual(metadata, EXPECTED_METADATA);
  assert.deepEqual(dump.metadata, EXPECTED_METADATA);
  assert.deepEqual(entries.map((e) => e.name).sort(), EXPECTED_NAMES);
  for (const e of entries) {
    const want = dump.tensors[e.name];
    assert.equal(FORMAT[e.dtype], want.dtype, e.name);
    assert.deepEqual(e.shape, want.shape, e.name);
    assert.deepEqual(decode(e.dtype, e.data), want.values, e.name);
  }
  // The simple ones, computed here from arithmetic rather than taken from Python.
  const get = (n: string) => entries.find((e) => e.name === n)!;
  assert.deepEqual(get('i64').shape, [3, 4]);
  assert.deepEqual(
    decode('int64', get('i64').data),
    Array.from({ length: 12 }, (_, i) => String(i - 6)),
  );
  assert.deepEqual(decode('int64', get('i64_big').data), [String(2n ** 62n + 1n), String(-(2n ** 63n)), String(2n ** 63n - 1n)]);
  assert.deepEqual([get('scalar').dtype, get('scalar').shape, get('scalar').data.length], ['float32', [], 4]);
  assert.deepEqual([get('empty').dtype, get('empty').shape, get('empty').data.length], ['float32', [0, 3], 0]);
  assert.deepEqual([get('empty_i64').dtype, get('empty_i64').shape, get('empty_i64').data.length], ['int64', [2, 0], 0]);
  const bools = decode('bool', get('bool').data);
  assert.ok(bools.includes(true) && bools.includes(false));
});

test('interop: TypeScript writes, PyTorch checks (byte level)', () => {
  const { dump } = pyReference();
  const good = path.join(tmp, 'from-ts.safetensors');
  fs.writeFileSync(good, serializeSafetensors(entriesFromDump(dump), EXPECTED_METADATA));
  pyCheckPasses(good);
  // The check is not vacuous: one flipped bit, a changed dtype or missing metadata each fail it.
  const flipped = path.join(tmp, 'flipped.safetensors');
  const retyped = path.join(tmp, 'retyped.safetensors');
  const nometa = path.join(tmp, 'nometa.safetensors');
  const flip = (e: SafetensorsEntry) => (e.name === 'i16' ? { ...e, data: e.data.map((b, i) => (i === 0 ? b ^ 1 : b)) } : e);
  const retype = (e: SafetensorsEntry) => (e.name === 'u8' ? { ...e, dtype: 'int8' as DType } : e);
  fs.writeFileSync(flipped, serializeSafetensors(entriesFromDump(dump).map(flip), EXPECTED_METADATA));
  fs.writeFileSync(retyped, serializeSafetensors(entriesFromDump(dump).map(retype), EXPECTED_METADATA));
  fs.writeFileSync(nometa, serializeSafetensors(entriesFromDump(dump)));
  const r = python(['check', flipped, retyped, nometa]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`check ${flipped}: i16: values differ`));
  assert.match(r.stderr, new RegExp(`check ${retyped}: u8: torch.int8 \\[2, 2, 2\\] != torch.uint8`));
  assert.match(r.stderr, new RegExp(`check ${nometa}: metadata \\{\\} != `));
});

test('interop: PyTorch -> loadSafetensors -> saveSafetensors -> PyTorch (tensor level)', () => {
  const { fromBytes } = engine();
  const { file, dump } = pyReference();
  const resaved = path.join(tmp, 'ts-resaved.safetensors');
  const made = path.join(tmp, 'ts-made.safetensors');
  const { tensors, metadata } = loadSafetensors(file);
  try {
    assert.deepEqual(metadata, EXPECTED_METADATA);
    assert.deepEqual(Object.keys(tensors).sort(), EXPECTED_NAMES);
    for (const [name, t] of Object.entries(tensors)) {
      const want = dump.tensors[name];
      assert.equal(FORMAT[t.dtype], want.dtype, name);
      assert.deepEqual(t.shape, want.shape, name);
      assert.deepEqual(decode(t.dtype, t.bytes()), want.values, name);
    }
    assert.deepEqual(Array.from(tensors.f32.data() as Float32Array), dump.tensors.f32.values);
    assert.deepEqual(Array.from(tensors.f16.data() as Float32Array), dump.tensors.f16.values);
    assert.deepEqual(Array.from(tensors.i32.data() as Int32Array), dump.tensors.i32.values);
    saveSafetensors(resaved, tensors, metadata);
  } finally {
    disposeAll(tensors);
  }
  // Tensors made in TypeScript from the printed values (not from Python's bytes) too.
  const fresh: Record<string, Tensor> = {};
  try {
    for (const e of entriesFromDump(dump)) fresh[e.name] = fromBytes(e.data, e.dtype, e.shape);
    saveSafetensors(made, fresh, EXPECTED_METADATA);
  } finally {
    disposeAll(fresh);
  }
  pyCheckPasses(resaved, made);
});
