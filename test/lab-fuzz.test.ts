// The lab's server under a few thousand malformed requests (random paths, methods, query strings,
// bodies, huge numbers, NaN, path traversal in model names): every answer is a 2xx or 4xx with a
// JSON body (no 5xx, no dropped connection), and afterwards the server still answers normally.
// Requests are seeded, so a failure names a request that can be replayed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, startLab } from '../src/lab/server';

const REQUESTS = 3000;

/** A small seeded PRNG (mulberry32), so the fuzz is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PATHS = [
  '/api/forward',
  '/api/field',
  '/api/guidance',
  '/api/trajectories',
  '/api/posterior',
  '/api/jobs',
  '/api/jobs/1',
  '/api/jobs/1/events',
  '/api/models',
  '/api/reports',
  '/api/x',
  '/api',
  '/lab.js/..',
  '/%2e%2e/%2e%2e/etc/passwd',
  '/api/jobs/../../etc',
  '/api/jobs/-1',
  '/api/jobs/1e9',
  '/api//jobs',
  '/api/jobs/999999999999',
];
const NAMES = ['t', 'sigma', 'w', 'steps', 'n', 'seed', 'schedule', 'index', 'resolution', 'cls', 'density', 'denoiser', 'model', 'sampler', 'class', 'guidance', 'x'];
const VALUES = [
  '',
  'NaN',
  'Infinity',
  '-Infinity',
  '1e309',
  '-1',
  '0',
  '1.5',
  '99999999999999999999',
  '0x1f',
  'abc',
  '../../etc/passwd',
  '/etc/passwd',
  '..%2F..%2Fmodels',
  'runs/../models/fashion-mnist',
  '%00',
  'null',
  '[]',
  '{}',
  'linear',
  'cosine',
  'exact',
  'learned',
  '\u00e9\u6f22',
  'a'.repeat(3000),
];
const BODIES = [
  '',
  'null',
  '[]',
  '"x"',
  '{',
  '{"model": "../../../etc"}',
  '{"model": "/etc/passwd"}',
  '{"model": "fashion-mnist", "steps": 1e308}',
  '{"model": "fashion-mnist", "steps": "NaN"}',
  '{"model": "fashion-mnist", "n": -5}',
  '{"model": "fashion-mnist", "sampler": {"a": 1}}',
  '{"model": "fashion-mnist", "class": "../x"}',
  '{"model": "fashion-mnist", "guidance": 1e99}',
  '{"model": "fashion-mnist", "guidance": 2, "guidanceType": "auto", "guide": "../../models/fashion-mnist"}',
  '{"model": ["fashion-mnist"]}',
  '{"__proto__": {"model": "fashion-mnist"}}',
  '{"model": "fashion-mnist", "grid": "karras", "steps": 0}',
];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'];

let lab: Lab;
let cwd: string;
before(async () => {
  cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-lab-fuzz-'));
  lab = await startLab({ port: 0, cwd });
});
after(async () => {
  await lab.close();
  fs.rmSync(cwd, { recursive: true, force: true });
});

/** Request i: a random method, path, query and body, always malformed somewhere (or a bad value for a valid route). */
function request(i: number): { method: string; url: string; body?: string } {
  const r = rng(i);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  const q = new URLSearchParams();
  const k = Math.floor(r() * 4);
  for (let j = 0; j < k; j++) q.append(pick(NAMES), pick(VALUES));
  // at least one value out of range, so no valid engine work is queued by accident
  q.append(pick(['t', 'sigma', 'w', 'steps', 'n', 'density']), pick(['NaN', '-1', '1e309', 'abc', '99999999999999999999']));
  const method = r() < 0.5 ? 'GET' : pick(METHODS);
  const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? pick(BODIES) : undefined;
  return { method, url: `${pick(PATHS)}?${q.toString()}`, body };
}

test(`${REQUESTS} malformed requests get 2xx/4xx JSON answers, and the server keeps answering`, async () => {
  const statuses = new Map<number, number>();
  const batch = 16;
  for (let start = 0; start < REQUESTS; start += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, REQUESTS - start) }, async (_, j) => {
        const i = start + j;
        const { method, url, body } = request(i);
        const res = await fetch(new URL(url, lab.url), { method, body, headers: body !== undefined ? { 'content-type': 'application/json' } : {} });
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        assert.ok(res.status < 500, `request ${i} (${method} ${url.slice(0, 120)} ${body ?? ''}): ${res.status} ${text.slice(0, 200)}`);
        const page = ['/', '/lab.js'].includes(new URL(url, lab.url).pathname) && res.status === 200; // '/lab.js/..' is the page itself
        if (method !== 'HEAD' && !page) {
          assert.match(
            res.headers.get('content-type') ?? '',
            /json|event-stream/,
            `request ${i} (${method} ${url.slice(0, 80)}, ${url.length} chars): ${res.status} ${res.headers.get('content-type')}`,
          );
          if (!/event-stream/.test(res.headers.get('content-type') ?? '')) assert.doesNotThrow(() => JSON.parse(text), `request ${i}: not JSON: ${text.slice(0, 100)}`);
        }
      }),
    );
  }
  assert.ok((statuses.get(400) ?? 0) > REQUESTS / 20, JSON.stringify([...statuses])); // many reach the parameter checks
  const ok = await fetch(new URL('/api/posterior?t=10', lab.url));
  assert.equal(ok.status, 200);
  const models = (await (await fetch(new URL('/api/models', lab.url))).json()) as { models: { name: string }[] };
  assert.ok(models.models.length > 0);
});
