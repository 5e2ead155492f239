/**
 * Data parallelism as the training loop uses it: the run's global batch of step k is split
 * into `worldSize` equal shards, one per rank, and the gradients are averaged over the ranks
 * (bucketed all-reduce, as DistributedDataParallel) before the optimizer step.
 *
 * Every rank builds the global batch of a step (a pure function of the seed and the step,
 * src/data/loader.ts) and keeps its rows; every per-sample random draw (noise levels, noise,
 * label dropout) is drawn for the whole global batch from the same generator, and each rank
 * keeps its rows (ShardedGenerator). So the ranks' generators stay in the same state, rank
 * 0's checkpoint resumes every rank, and N ranks with batch B take the steps one process
 * with batch N x B takes (up to float rounding; test/distributed.test.ts).
 *
 * @example
 *   const dp = new DataParallel(ProcessGroup.init(rendezvousFromEnv()!));
 *   dp.syncStart(net.stateDict(), 0);                 // same shapes and step everywhere, rank 0's weights
 *   const x = dp.shard(globalBatch);                   // [B, ...] of [worldSize * B, ...]
 *   const loss = lossOf(x, dp.shardedGenerator(gen, x.dim(0)));
 *   loss.backward();
 *   dp.averageGradients(net.parameters());
 */
import { empty, tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor, TensorOptions } from '../engine/tensor';
import { ProcessGroup } from './process-group';

/** Time spent in the gradient all-reduce, for the benchmark and the log. */
export interface CommStats {
  /** All-reduces of the gradients so far. */
  calls: number;
  /** Seconds spent in them (waiting for the slowest rank included). */
  seconds: number;
  /** Buckets in the last one. */
  buckets: number;
}

/** 32-bit FNV-1a of a string (with a seed, for two independent halves of a fingerprint). */
function fnv1a(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export class DataParallel {
  readonly group: ProcessGroup;
  /** Bytes per all-reduce bucket of the gradients (default 25 MiB, DistributedDataParallel's). */
  readonly bucketBytes: number;
  readonly comm: CommStats = { calls: 0, seconds: 0, buckets: 0 };

  constructor(group: ProcessGroup, { bucketBytes = 25 * 2 ** 20 }: { bucketBytes?: number } = {}) {
    if (!(Number.isSafeInteger(bucketBytes) && bucketBytes >= 1)) throw new RangeError(`DataParallel: bucketBytes must be a positive integer, got ${bucketBytes}`);
    this.group = group;
    this.bucketBytes = bucketBytes;
  }

  get rank(): number {
    return this.group.rank;
  }

  get worldSize(): number {
    return this.group.worldSize;
  }

  /** Rank 0: the one that writes checkpoints, previews and logs. */
  get isMain(): boolean {
    return this.group.rank === 0;
  }

  /** This rank's rows of a global batch [worldSize * B, ...]: [B, ...] (a view). */
  shard(t: Tensor): Tensor {
    const n = t.dim(0);
    if (n % this.worldSize !== 0) throw new RangeError(`DataParallel.shard: a global batch of ${n} does not split into ${this.worldSize} equal shards`);
    const b = n / this.worldSize;
    return t.narrow(0, this.rank * b, b);
  }

  /** A view of `g` whose per-sample draws [B, ...] are this rank's rows of the global draw [worldSize * B, ...] (see ShardedGenerator). */
  shardedGenerator(g: Generator, batch: number): Generator {
    return new ShardedGenerator(g, this, batch);
  }

  /**
   * The start of a run: checks that every rank has the same tensors (names, shapes, dtypes)
   * and is at the same step (a rank resumed from another checkpoint), then gives every rank
   * rank 0's values (parameters, buffers, EMA averages).
   */
  syncStart(tensors: Record<string, Tensor>, step: number): void {
    const entries = Object.entries(tensors);
    const layout = entries.map(([n, t]) => `${n}:${t.dtype}[${t.shape.join(',')}]`).join(';');
    const numel = entries.reduce((a, [, t]) => a + t.size, 0);
    const mine = [step, entries.length, numel, fnv1a(layout, 0), fnv1a(layout, 0x9e3779b9)];
    const all = tidy(() => this.group.allGather(tensor(mine, { dtype: 'float64' })).map((t) => Array.from(t.toFloat64Array())));
    for (let r = 0; r < all.length; r++) {
      const [s, n, e] = all[r];
      if (s !== mine[0])
        throw new RangeError(`data parallel: rank ${r} is at step ${s} but rank ${this.rank} is at step ${step}: every rank must start from the same checkpoint (resume with the same run folder)`);
      if (all[r].some((v, i) => v !== mine[i]))
        throw new RangeError(
          `data parallel: rank ${r}'s model (${n} tensors, ${e} elements) does not match rank ${this.rank}'s (${mine[1]} tensors, ${numel} elements, or the same counts with other names or shapes): every rank must build the same model`,
        );
    }
    this.group.broadcast(
      entries.map(([, t]) => t),
      0,
    );
  }

  /** Averages the gradients of `params` over the ranks (bucketed all-reduce), timing it in `comm`. */
  averageGradients(params: readonly Tensor[]): void {
    const t0 = performance.now();
    this.comm.buckets = this.group.allReduceGradients(params, this.bucketBytes);
    this.comm.seconds += (performance.now() - t0) / 1000;
    this.comm.calls++;
  }

  /** The mean of a scalar over the ranks and whether any rank asked to stop: every rank gets the same answer. */
  agree(value: number, stop: boolean): { mean: number; stop: boolean } {
    const [sum, stops] = tidy(() => {
      const t = tensor([value, stop ? 1 : 0], { dtype: 'float64' });
      this.group.allReduce([t]);
      return Array.from(t.toFloat64Array());
    });
    return { mean: sum / this.worldSize, stop: stops > 0 };
  }

  /** Every rank waits for the others (at the end of a run, so it ends once rank 0's checkpoint is committed). */
  barrier(): void {
    this.group.barrier();
  }
}

/**
 * A generator whose draws are per sample: a draw of shape [B, ...] (B this rank's batch)
 * draws [worldSize * B, ...] from the wrapped generator and returns this rank's rows, so every
 * rank advances the generator alike and together they draw what one process with the global
 * batch would. Draws not shaped [B, ...] are an error; randperm and the state pass through.
 */
export class ShardedGenerator implements Generator {
  readonly #g: Generator;
  readonly #dp: DataParallel;
  readonly #batch: number;

  constructor(g: Generator, dp: DataParallel, batch: number) {
    this.#g = g;
    this.#dp = dp;
    this.#batch = batch;
  }

  get handle(): Generator['handle'] {
    return this.#g.handle;
  }

  get seed(): number {
    return this.#g.seed;
  }

  #global(shape: number[], op: string): number[] {
    if (shape[0] !== this.#batch) throw new RangeError(`ShardedGenerator.${op}: draws must be per sample, shaped [${this.#batch}, ...], got [${shape.join(', ')}]`);
    return [this.#batch * this.#dp.worldSize, ...shape.slice(1)];
  }

  #mine(f: () => Tensor): Tensor {
    return tidy(() => this.#dp.shard(f()).contiguous());
  }

  randn(shape: number[], opts: TensorOptions = {}): Tensor {
    return this.#mine(() => this.#g.randn(this.#global(shape, 'randn'), opts));
  }

  rand(shape: number[], opts: TensorOptions = {}): Tensor {
    return this.#mine(() => this.#g.rand(this.#global(shape, 'rand'), opts));
  }

  randint(low: number, high: number, shape: number[], opts: TensorOptions = {}): Tensor {
    return this.#mine(() => this.#g.randint(low, high, this.#global(shape, 'randint'), opts));
  }

  randperm(n: number, opts: TensorOptions = {}): Tensor {
    return this.#g.randperm(n, opts);
  }

  randnLike(t: Tensor): Tensor {
    return this.randn(t.shape, { dtype: t.dtype, device: t.device });
  }

  randLike(t: Tensor): Tensor {
    return this.rand(t.shape, { dtype: t.dtype, device: t.device });
  }

  bernoulli(like: Tensor, p: number): Tensor {
    return this.#mine(() => this.#g.bernoulli(empty(this.#global(like.shape, 'bernoulli'), { dtype: like.dtype, device: like.device }), p));
  }

  state(): Uint8Array {
    return this.#g.state();
  }

  setState(state: Uint8Array): void {
    this.#g.setState(state);
  }
}
