/**
 * A process group on torch.distributed's engine (c10d, native/dist.cc): the ranks of a run
 * meet at rank 0's TCPStore (torchrun's env:// rendezvous: MASTER_ADDR, MASTER_PORT, RANK,
 * WORLD_SIZE) and talk through Gloo, on the CPU. Collectives block until every rank has
 * joined them; a rank that died, or one that does not arrive within the timeout, makes them
 * throw a DistributedError naming the op and the rank, so a run never hangs silently.
 *
 * @example
 *   // on each of 2 processes (RANK=0 and RANK=1, WORLD_SIZE=2, MASTER_ADDR=127.0.0.1, MASTER_PORT=29500):
 *   const pg = ProcessGroup.init(rendezvousFromEnv());
 *   const t = tensor([pg.rank + 1]);
 *   pg.allReduce([t]);                 // t = [3] on both ranks ({ op: 'avg' }: [1.5])
 *   const shapes = pg.allGather(tensor([4, 2], { dtype: 'int64' }));  // one [2] tensor per rank
 *   pg.barrier();
 *   pg.destroy();
 */
import { GroupHandle, native } from '../engine/native';
import { Tensor } from '../engine/tensor';

/** A collective or the rendezvous failed: a peer died, hung past the timeout, or the store was unreachable. */
export class DistributedError extends Error {
  override name = 'DistributedError';
  constructor(
    /** 'rendezvous', 'broadcast', 'allReduce', 'allGather', 'barrier', ... */
    readonly op: string,
    readonly rank: number,
    message: string,
  ) {
    super(message);
  }
}

/** Where and how the ranks of a run meet (torchrun's names in the comments). */
export interface Rendezvous {
  /** MASTER_ADDR: the host of rank 0, which runs the TCPStore. */
  masterAddr: string;
  /** MASTER_PORT: the store's TCP port. */
  masterPort: number;
  /** RANK: this process's rank, 0..worldSize-1. */
  rank: number;
  /** WORLD_SIZE: processes in the run. */
  worldSize: number;
  /** LOCAL_RANK: its rank on this machine (default: rank). */
  localRank?: number;
  /** Seconds a rendezvous or a collective may wait for the other ranks (default 300: the step of a large model on a slow peer). */
  timeoutSeconds?: number;
}

/** The environment variables torchrun sets for each rank. */
export const RENDEZVOUS_ENV = ['MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'] as const;

/** The default timeout of rendezvous and collectives, in seconds. */
export const DEFAULT_TIMEOUT_SECONDS = 300;

/**
 * The rendezvous torchrun describes in the environment (MASTER_ADDR, MASTER_PORT, RANK,
 * WORLD_SIZE, LOCAL_RANK; DIFFUSE_DIST_TIMEOUT in seconds), or null when WORLD_SIZE is
 * unset (a single-process run). Errors name the variable and its value.
 *
 * @example
 *   const rv = rendezvousFromEnv(); // null unless launched by diffuse train --nproc-per-node or as torchrun would
 */
export function rendezvousFromEnv(env: NodeJS.ProcessEnv = process.env): Rendezvous | null {
  if (env.WORLD_SIZE === undefined || env.WORLD_SIZE === '') return null;
  const int = (name: string, min: number, fallback?: number): number => {
    const v = env[name];
    if ((v === undefined || v === '') && fallback !== undefined) return fallback;
    const n = Number(v);
    if (v === undefined || v === '' || !Number.isSafeInteger(n) || n < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${JSON.stringify(v ?? null)}`);
    return n;
  };
  const worldSize = int('WORLD_SIZE', 1);
  const rank = int('RANK', 0);
  if (rank >= worldSize) throw new RangeError(`RANK must be below WORLD_SIZE (${worldSize}), got ${rank}`);
  const masterAddr = env.MASTER_ADDR ?? '';
  if (!masterAddr) throw new RangeError('MASTER_ADDR must name the host of rank 0, got nothing');
  const masterPort = int('MASTER_PORT', 1);
  if (masterPort > 65535) throw new RangeError(`MASTER_PORT must be a TCP port (1..65535), got ${masterPort}`);
  const timeout = env.DIFFUSE_DIST_TIMEOUT;
  const timeoutSeconds = timeout === undefined || timeout === '' ? DEFAULT_TIMEOUT_SECONDS : Number(timeout);
  if (!(timeoutSeconds > 0)) throw new RangeError(`DIFFUSE_DIST_TIMEOUT must be a positive number of seconds, got ${JSON.stringify(timeout)}`);
  return { masterAddr, masterPort, rank, worldSize, localRank: int('LOCAL_RANK', 0, rank), timeoutSeconds };
}

/** '' when this addon has c10d's Gloo process group, else why not. */
export function distributedUnavailableReason(): string {
  return native.distAvailable();
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

/** Rethrows a native error as a DistributedError of `op` (the addon's message names the op and rank). */
function guarded<T>(op: string, rank: number, f: () => T): T {
  try {
    return f();
  } catch (e) {
    const msg = (e as Error).message.replace(/^dist\w+: /, '');
    throw new DistributedError(op, rank, msg);
  }
}

export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  /** This process's rank on its machine. */
  readonly localRank: number;
  readonly timeoutSeconds: number;
  #handle: GroupHandle | null;

  private constructor(handle: GroupHandle, rv: Rendezvous) {
    this.#handle = handle;
    this.rank = rv.rank;
    this.worldSize = rv.worldSize;
    this.localRank = rv.localRank ?? rv.rank;
    this.timeoutSeconds = rv.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  }

  /** Joins the run: blocks until every rank has reached the store (or the timeout passes: DistributedError). */
  static init(rv: Rendezvous): ProcessGroup {
    const why = distributedUnavailableReason();
    if (why) throw new DistributedError('rendezvous', rv.rank, `distributed training is unavailable: ${why}`);
    const timeout = rv.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
    const handle = guarded('rendezvous', rv.rank, () => native.distInit(rv.masterAddr, rv.masterPort, rv.rank, rv.worldSize, Math.round(timeout * 1000), LOOPBACK.has(rv.masterAddr)));
    return new ProcessGroup(handle, rv);
  }

  get #group(): GroupHandle {
    if (this.#handle === null) throw new DistributedError('use', this.rank, 'this process group has been destroyed');
    return this.#handle;
  }

  /** Gives every tensor (contiguous, in place) the values it has on rank `root`. */
  broadcast(tensors: readonly Tensor[], root = 0): void {
    guarded('broadcast', this.rank, () =>
      native.distBroadcast(
        this.#group,
        tensors.map((t) => t.handle),
        root,
      ),
    );
  }

  /** Sums each tensor (contiguous, in place) over the ranks; op 'avg' divides the sum by the world size. */
  allReduce(tensors: readonly Tensor[], { op = 'sum' }: { op?: 'sum' | 'avg' } = {}): void {
    if (op !== 'sum' && op !== 'avg') throw new TypeError(`allReduce: op must be 'sum' or 'avg', got ${JSON.stringify(op)}`);
    guarded('allReduce', this.rank, () =>
      native.distAllReduce(
        this.#group,
        tensors.map((t) => t.handle),
        op === 'avg',
      ),
    );
  }

  /** Every rank's copy of `t` (which must have the same shape and dtype on every rank), in rank order: new tensors. */
  allGather(t: Tensor): Tensor[] {
    return guarded('allGather', this.rank, () => native.distAllGather(this.#group, t.handle)).map((h) => new Tensor(h));
  }

  /** Returns once every rank has called it. */
  barrier(): void {
    guarded('barrier', this.rank, () => native.distBarrier(this.#group));
  }

  /**
   * Averages the gradients of `params` over the ranks, in buckets of about `bucketBytes`
   * (DistributedDataParallel's default, 25 MiB); returns the number of buckets. Parameters
   * without a gradient are skipped: every rank must have gradients for the same ones.
   */
  allReduceGradients(params: readonly Tensor[], bucketBytes = 25 * 2 ** 20): number {
    return guarded('allReduce of the gradients', this.rank, () =>
      native.distAllReduceGrads(
        this.#group,
        params.map((p) => p.handle),
        bucketBytes,
      ),
    );
  }

  /** Leaves the group (idempotent). */
  destroy(): void {
    if (this.#handle !== null) native.distDestroy(this.#handle);
    this.#handle = null;
  }
}
