/**
 * Engine work off the server's event loop: one worker process (src/lab/worker.ts) per model
 * key, each running one job at a time from its own queue. A job's events (progress with the
 * streamed x0 estimates, then done / error / cancelled) are kept, so a page that subscribes late
 * sees them all. Cancelling a queued job drops it; cancelling the running one kills its worker
 * (a fresh one is forked for the next job).
 *
 * @example
 *   const jobs = new JobManager();
 *   const job = jobs.submit('fashion-mnist', 'sample', params);
 *   job.subscribe((e) => console.log(e.type));     // 'queued', 'started', 'progress', ..., 'done'
 *   await job.result;                               // the 'done' data (rejects on error or cancel)
 *   jobs.close();
 */
import { ChildProcess, fork } from 'node:child_process';
import * as path from 'node:path';

/** An event of a job, as the page receives it. */
export interface JobEvent {
  type: 'queued' | 'started' | 'progress' | 'done' | 'error' | 'cancelled';
  data?: unknown;
  message?: string;
}

export type JobState = 'queued' | 'running' | 'done' | 'error' | 'cancelled';

/** Jobs kept per manager (oldest finished ones are forgotten first). */
const MAX_JOBS = 200;

export class Job {
  state: JobState = 'queued';
  readonly events: JobEvent[] = [];
  readonly result: Promise<unknown>;
  #listeners = new Set<(e: JobEvent) => void>();
  #settle!: { resolve: (v: unknown) => void; reject: (e: Error) => void };

  constructor(
    readonly id: string,
    readonly key: string,
    readonly kind: string,
    readonly params: unknown,
  ) {
    this.result = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    this.result.catch(() => {}); // a job nobody awaits must not be an unhandled rejection
  }

  get finished(): boolean {
    return this.state === 'done' || this.state === 'error' || this.state === 'cancelled';
  }

  /** Calls fn with every past event, then each new one; returns the unsubscribe function. */
  subscribe(fn: (e: JobEvent) => void): () => void {
    this.events.forEach(fn);
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  emit(e: JobEvent): void {
    if (this.finished) return;
    if (e.type === 'started') this.state = 'running';
    if (e.type === 'done' || e.type === 'error' || e.type === 'cancelled') this.state = e.type;
    // Only the latest progress event is kept for late subscribers (the images are large).
    const last = this.events[this.events.length - 1];
    if (e.type === 'progress' && last?.type === 'progress') this.events.pop();
    this.events.push(e);
    this.#listeners.forEach((fn) => fn(e));
    if (e.type === 'done') this.#settle.resolve(e.data);
    else if (e.type === 'error' || e.type === 'cancelled') this.#settle.reject(new Error(e.message ?? e.type));
  }
}

interface Lane {
  worker: ChildProcess | null;
  running: Job | null;
  queue: Job[];
}

export class JobManager {
  readonly jobs = new Map<string, Job>();
  #lanes = new Map<string, Lane>();
  #next = 1;
  #closed = false;

  constructor(readonly opts: { workerScript?: string; threads?: number; cwd?: string } = {}) {}

  /** Queues a job on the lane of `key` (one job per key at a time). */
  submit(key: string, kind: string, params: unknown): Job {
    if (this.#closed) throw new Error('JobManager: closed');
    const job = new Job(String(this.#next++), key, kind, params);
    this.jobs.set(job.id, job);
    this.#forgetOld();
    const lane = this.#lane(key);
    lane.queue.push(job);
    job.emit({ type: 'queued', data: { position: lane.queue.length - 1 + (lane.running ? 1 : 0) } });
    this.#pump(lane);
    return job;
  }

  /** Jobs running or queued on the lane of `key`. */
  pending(key: string): number {
    const lane = this.#lanes.get(key);
    return lane ? lane.queue.length + (lane.running ? 1 : 0) : 0;
  }

  /** Cancels a job: dropped from its queue, or its worker killed when it is running. False when it had already finished. */
  cancel(id: string): boolean {
    const job = this.jobs.get(id);
    if (!job || job.finished) return false;
    const lane = this.#lane(job.key);
    if (lane.running === job) {
      lane.worker?.kill('SIGKILL');
      lane.worker = null;
      lane.running = null;
    } else lane.queue = lane.queue.filter((j) => j !== job);
    job.emit({ type: 'cancelled', message: 'cancelled' });
    this.#pump(lane);
    return true;
  }

  /** Kills every worker and cancels what is left. */
  close(): void {
    this.#closed = true;
    for (const lane of this.#lanes.values()) {
      [lane.running, ...lane.queue].forEach((j) => j?.emit({ type: 'cancelled', message: 'server closed' }));
      lane.queue = [];
      lane.running = null;
      lane.worker?.kill('SIGKILL');
      lane.worker = null;
    }
  }

  #lane(key: string): Lane {
    let lane = this.#lanes.get(key);
    if (!lane) this.#lanes.set(key, (lane = { worker: null, running: null, queue: [] }));
    return lane;
  }

  #spawn(lane: Lane): ChildProcess {
    const script = this.opts.workerScript ?? path.join(__dirname, 'worker.js');
    const w = fork(script, [], { cwd: this.opts.cwd, env: { ...process.env, DIFFUSE_LAB_THREADS: String(this.opts.threads ?? 1) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    w.on('message', (m: { id: string } & JobEvent) => {
      const job = lane.running;
      if (!job || m.id !== job.id) return;
      job.emit({ type: m.type, data: m.data, message: m.message });
      if (job.finished) {
        lane.running = null;
        this.#pump(lane);
      }
    });
    w.on('exit', (code, signal) => {
      if (lane.worker !== w) return; // killed on purpose (cancel, close)
      lane.worker = null;
      const job = lane.running;
      lane.running = null;
      job?.emit({ type: 'error', message: `the worker process stopped (${signal ?? `exit code ${code}`})` });
      this.#pump(lane);
    });
    return w;
  }

  #pump(lane: Lane): void {
    if (this.#closed || lane.running || lane.queue.length === 0) return;
    const job = lane.queue.shift()!;
    lane.running = job;
    lane.worker ??= this.#spawn(lane);
    job.emit({ type: 'started' });
    lane.worker.send({ id: job.id, kind: job.kind, params: job.params });
  }

  #forgetOld(): void {
    for (const [id, job] of this.jobs) {
      if (this.jobs.size <= MAX_JOBS) break;
      if (job.finished) this.jobs.delete(id);
    }
  }
}
