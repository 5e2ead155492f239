/**
 * The lab's HTTP server (Node's http): the page (dist/lab/lab.js, bundled at build time by
 * `npm run build:lab`), and a JSON API whose every parameter is checked (src/lab/validate.ts;
 * a bad request gets a 4xx { error, param }). Engine work runs in worker processes
 * (src/lab/jobs.ts): the panels' computations on one lane, each model's sampling jobs on its own;
 * a job streams its progress as server-sent events.
 *
 * Routes: GET / (the page), GET /lab.js, GET /api/models, GET /api/reports, GET /api/forward,
 * /api/field, /api/trajectories, /api/posterior, /api/likelihood, /api/guidance (panel data),
 * POST /api/jobs (a sampling job), GET /api/jobs/ID, GET /api/jobs/ID/events (SSE),
 * DELETE /api/jobs/ID (cancel).
 *
 * @example
 *   const lab = await startLab({ port: 0 });
 *   console.log(lab.url);   // http://127.0.0.1:PORT/
 *   await lab.close();
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { GUIDANCE_TYPES } from '../guidance/load';
import { GRIDS } from '../sampling/grids';
import { SAMPLERS } from '../sampling/index';
import { JobManager, JobEvent } from './jobs';
import { pageHtml } from './page-html';
import { SCHEDULES } from './panels';
import { findReports } from './reports';
import { BadRequest, findModel, listModels, Params } from './validate';
import { SampleParams } from './worker';
import { readCheckpointMeta } from '../training/checkpoint';

/** Where the page bundle is: dist/lab/lab.js beside dist/src/. */
export const BUNDLE = path.resolve(__dirname, '..', '..', 'lab', 'lab.js');

/** Request bodies larger than this are refused (413). */
const MAX_BODY = 64 * 1024;
/** Panel requests waiting beyond this are refused (429) so a flood cannot queue unbounded work. */
const MAX_PANEL_QUEUE = 16;

export interface LabOptions {
  port?: number;
  host?: string;
  /** Where runs/ is looked for (default process.cwd()). */
  cwd?: string;
  /** CPU threads of each worker process (default 1). */
  threads?: number;
}

export interface Lab {
  url: string;
  port: number;
  server: http.Server;
  jobs: JobManager;
  close(): Promise<void>;
}

type Json = Record<string, unknown> | unknown[];

/** A model as /api/models lists it: a distilled student carries its own sampling (sampler, grid, steps), which the sampling panel applies. */
function modelEntry(m: { name: string; dir: string; shipped: boolean }): { name: string; shipped: boolean; sampling: { sampler: string; grid: string; steps: number } | null; method: string | null } {
  let rec;
  try {
    rec = readCheckpointMeta(m.dir).distillation;
  } catch {
    rec = undefined; // an unreadable checkpoint is listed; sampling it reports the problem
  }
  return { name: m.name, shipped: m.shipped, sampling: rec?.sampling ?? null, method: rec?.method ?? null };
}

function sendJson(res: http.ServerResponse, status: number, body: Json): void {
  if (res.writableEnded || res.destroyed) return; // the client left (or the server is closing)
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** The request body as a JSON object (at most MAX_BODY bytes). */
function readJsonBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c); // past the limit the rest is read and dropped, so the client gets its answer
    });
    req.on('error', reject);
    req.on('end', () => {
      if (size > MAX_BODY) return reject(new BadRequest(null, `request body over ${MAX_BODY} bytes`, 413));
      let v: unknown;
      try {
        v = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
      } catch {
        return reject(new BadRequest('body', 'is not valid JSON'));
      }
      if (!v || typeof v !== 'object' || Array.isArray(v)) return reject(new BadRequest('body', 'must be a JSON object'));
      resolve(v as Record<string, unknown>);
    });
  });
}

/** The checked parameters of each panel request. */
const PANELS: Record<string, (q: Params) => object> = {
  forward: (q) => ({
    schedule: q.choice('schedule', SCHEDULES, 'cosine'),
    t: q.int('t', { min: 0, max: 999, def: 500 }),
    index: q.int('index', { min: 0, max: 15, def: 0 }),
    resolution: q.int('resolution', { min: 8, max: 1024, def: 128 }),
    seed: q.int('seed', { min: 0, max: 2 ** 31, def: 0 }),
  }),
  field: (q) => ({ sigma: q.number('sigma', { min: 0.002, max: 20, def: 0.5 }), density: q.int('density', { min: 3, max: 31, def: 15 }) }),
  trajectories: (q) => ({
    steps: q.int('steps', { min: 1, max: 100, def: 12 }),
    seed: q.int('seed', { min: 0, max: 2 ** 31, def: 0 }),
    n: q.int('n', { min: 1, max: 64, def: 16 }),
    denoiser: q.choice('denoiser', ['exact', 'learned'] as const, 'exact'),
  }),
  posterior: (q) => ({ t: q.int('t', { min: 1, max: 999, def: 500 }), seed: q.int('seed', { min: 0, max: 2 ** 31, def: 0 }) }),
  likelihood: () => ({}),
  guidance: (q) => ({
    w: q.number('w', { min: 0, max: 20, def: 3 }),
    sigma: q.number('sigma', { min: 0.002, max: 20, def: 0.5 }),
    cls: q.int('cls', { min: 0, max: 1, def: 0 }),
    seed: q.int('seed', { min: 0, max: 2 ** 31, def: 0 }),
  }),
};

/** The checked parameters of a sampling job (body of POST /api/jobs). */
export function sampleParams(q: Params, cwd: string): { key: string; params: SampleParams } {
  const model = findModel(cwd, q.raw('model'));
  const cls = q.raw('class');
  const guidanceType = q.choice('guidanceType', GUIDANCE_TYPES, 'cfg');
  const scale = q.raw('guidance') === undefined || q.raw('guidance') === null ? null : q.number('guidance', { min: 0, max: 20 });
  const guide = guidanceType === 'auto' && scale !== null ? findModel(cwd, q.raw('guide'), 'guide').dir : undefined;
  return {
    key: `model:${model.name}`,
    params: {
      dir: model.dir,
      sampler: q.choice('sampler', Object.keys(SAMPLERS), 'dpmpp-2m'),
      grid: q.raw('grid') === undefined ? undefined : q.choice('grid', Object.keys(GRIDS)),
      steps: q.int('steps', { min: 1, max: 1000, def: 20 }),
      seed: q.int('seed', { min: 0, max: 2 ** 31, def: 0 }),
      n: q.int('n', { min: 1, max: 64, def: 16 }),
      cls: cls === undefined || cls === null ? null : cls === 'none' ? 'none' : q.int('class', { min: 0, max: 999 }),
      guidance: scale === null ? null : { type: guidanceType, scale, guide },
    },
  };
}

/** Streams a job's events as server-sent events until it finishes or the page leaves. */
function streamEvents(req: http.IncomingMessage, res: http.ServerResponse, job: { subscribe(fn: (e: JobEvent) => void): () => void }): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  let unsubscribe = () => {};
  unsubscribe = job.subscribe((e) => {
    if (res.writableEnded || res.destroyed) return;
    res.write(`event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    if (e.type === 'done' || e.type === 'error' || e.type === 'cancelled') {
      queueMicrotask(() => unsubscribe());
      res.end();
    }
  });
  res.on('close', () => unsubscribe()); // the page left (req's 'close' fires once its empty body is read)
}

/** One request: route, check, answer. */
async function route(req: http.IncomingMessage, res: http.ServerResponse, ctx: { cwd: string; jobs: JobManager }): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://lab.invalid');
  const method = req.method ?? 'GET';
  const q = new Params(url.searchParams);
  const parts = url.pathname.split('/').filter(Boolean);
  if (!(url.pathname === '/api/jobs' && method === 'POST')) req.resume(); // a body nobody reads is drained, so the connection stays in step
  const only = (...methods: string[]) => {
    if (!methods.includes(method)) throw new BadRequest(null, `${method} not allowed on ${url.pathname} (use ${methods.join(' or ')})`, 405);
  };
  if (url.pathname === '/' || url.pathname === '/index.html') {
    only('GET', 'HEAD');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    return void res.end(pageHtml(Object.values(SAMPLERS).map((s) => s.info))); // the sampling panel offers every registered sampler
  }
  if (url.pathname === '/lab.js') {
    only('GET', 'HEAD');
    if (!fs.existsSync(BUNDLE)) return sendJson(res, 503, { error: `the page bundle ${BUNDLE} is missing: run npm run build:lab` });
    res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
    return void fs.createReadStream(BUNDLE).pipe(res);
  }
  if (parts[0] !== 'api') throw new BadRequest(null, `no such page ${JSON.stringify(url.pathname.slice(0, 80))}`, 404);
  const what = parts[1];
  if (what === 'models' && parts.length === 2) {
    only('GET');
    return sendJson(res, 200, { models: listModels(ctx.cwd).map(modelEntry) });
  }
  if (what === 'reports' && parts.length === 2) {
    only('GET');
    return sendJson(res, 200, { reports: findReports(ctx.cwd) });
  }
  if (what && Object.prototype.hasOwnProperty.call(PANELS, what) && parts.length === 2) {
    only('GET');
    const params = PANELS[what](q);
    if (ctx.jobs.pending('panels') >= MAX_PANEL_QUEUE) return sendJson(res, 429, { error: 'busy: too many panel requests waiting, try again' });
    const job = ctx.jobs.submit('panels', what, params);
    try {
      return sendJson(res, 200, (await job.result) as Json);
    } catch (e) {
      return sendJson(res, 500, { error: (e as Error).message });
    }
  }
  if (what === 'jobs') {
    if (parts.length === 2) {
      only('POST');
      const { key, params } = sampleParams(new Params(await readJsonBody(req)), ctx.cwd);
      const job = ctx.jobs.submit(key, 'sample', params);
      return sendJson(res, 202, { id: job.id, state: job.state });
    }
    const job = /^\d{1,9}$/.test(parts[2]) ? ctx.jobs.jobs.get(parts[2]) : undefined;
    if (!job) throw new BadRequest('id', `no job ${JSON.stringify(parts[2].slice(0, 20))}`, 404);
    if (parts.length === 3) {
      only('GET', 'DELETE');
      if (method === 'DELETE') return sendJson(res, 200, { id: job.id, cancelled: ctx.jobs.cancel(job.id), state: job.state });
      const last = job.events[job.events.length - 1];
      return sendJson(res, 200, { id: job.id, state: job.state, last: last?.type === 'done' ? last.data : (last ?? null) });
    }
    if (parts.length === 4 && parts[3] === 'events') {
      only('GET');
      return streamEvents(req, res, job);
    }
  }
  throw new BadRequest(null, `no such API route ${JSON.stringify(url.pathname.slice(0, 80))}`, 404);
}

/**
 * Starts the lab on host:port (port 0: any free port). Binds 127.0.0.1 unless told otherwise;
 * the CLI refuses a non-loopback host without --allow-remote.
 */
export function startLab({ port = 7860, host = '127.0.0.1', cwd = process.cwd(), threads = 1 }: LabOptions = {}): Promise<Lab> {
  const jobs = new JobManager({ threads, cwd });
  const ctx = { cwd, jobs };
  const server = http.createServer((req, res) => {
    route(req, res, ctx).catch((e: unknown) => {
      if (res.headersSent) return void res.end();
      if (e instanceof BadRequest) return sendJson(res, e.status, { error: e.message, param: e.param });
      sendJson(res, 500, { error: (e as Error).message ?? String(e) });
    });
  });
  // A request Node's parser rejects (oversized headers, a broken request line) still gets a JSON answer.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    const body = JSON.stringify({ error: `malformed HTTP request (${err.code ?? err.message})` });
    socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const addr = server.address() as AddressInfo;
      const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      resolve({
        url: `http://${shown}:${addr.port}/`,
        port: addr.port,
        server,
        jobs,
        close: () =>
          new Promise<void>((done) => {
            jobs.close();
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
