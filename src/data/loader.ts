/**
 * Batches from an in-memory dataset, reproducible from a seed and resumable at
 * any step. Epoch e visits the samples in the order randperm(N) drawn from a
 * Generator seeded by hash(seed, e), so batch k depends only on (seed, k) and the
 * options: a trainer resumed at step k sees the batches an uninterrupted run would
 * have seen (batchAt(k), or state()/setState() around next()). Random horizontal
 * flips come from the same per-epoch generator, one coin per position.
 *
 * A batch is one indexSelect of the uint8 images plus a conversion to float in
 * [-1, 1]: microseconds per batch (bench/data.ts), so loading never starves training.
 *
 * @example
 *   const loader = new DataLoader(loadFashionMNIST({ pad32: true }), { batchSize: 64, seed: 1, flip: true });
 *   for (let step = 0; step < 1000; step++) tidy(() => {
 *     const { x, labels } = loader.next(); // x float32 [64, 1, 32, 32] in [-1, 1], labels int64 [64]
 *     ...
 *   });
 */
import { arange } from '../engine/create';
import { DType, isFloating } from '../engine/dtype';
import { Generator } from '../engine/random';
import { keep, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

/** An in-memory labeled image dataset, as the dataset loaders return it. */
export interface ImageDataset {
  /** uint8 [N, C, H, W]. */
  images: Tensor;
  /** int64 [N], values 0..classNames.length - 1. */
  labels: Tensor;
  /** The name of each label. */
  classNames: string[];
}

/**
 * n images of a dataset, a seeded random subset (all of them, in order, when n is the
 * dataset's size), as uint8 images and plain labels; errors name --n and the split's size.
 *
 * @example
 *   const { x, labels } = imageSubset(loadEmoji({ split: 'test' }), 500, { seed: 0, what: 'the emoji test split' });
 */
export function imageSubset(ds: ImageDataset, n: number, { seed = 0, what = 'the dataset' }: { seed?: number; what?: string } = {}): { x: Tensor; labels: number[] } {
  const total = ds.images.dim(0);
  if (!(Number.isSafeInteger(n) && n >= 1 && n <= total)) throw new RangeError(`--n ${n}: ${what} has ${total} images`);
  return tidy(() => {
    const idx = n === total ? null : new Generator(seed).randperm(total).narrow(0, 0, n);
    const x = idx ? ds.images.indexSelect(0, idx) : ds.images.clone();
    const labels = Array.from((idx ? ds.labels.indexSelect(0, idx) : ds.labels).toFloat64Array());
    return { x, labels };
  });
}

export interface DataLoaderOptions {
  /** Samples per batch. */
  batchSize: number;
  /** Seed of the shuffles and flips (default 0). */
  seed?: number;
  /** Shuffle each epoch (default true); false visits samples in order. */
  shuffle?: boolean;
  /** Flip each sample left-right with probability 1/2 (default false; needs [N, ..., W] data with 3+ dims). */
  flip?: boolean;
  /** Drop the last incomplete batch of each epoch (default true, so every batch has batchSize samples). */
  dropLast?: boolean;
  /** dtype of x (default float32). */
  dtype?: DType;
  /** Device of the batches (default 'cpu'). */
  device?: string;
}

export interface Batch {
  /** [B, ...] data: uint8 images scaled to [-1, 1] (x / 127.5 - 1), float data as is. */
  x: Tensor;
  /** [B] int64 labels (absent when the dataset has none). */
  labels?: Tensor;
  /** [B] int64 dataset indices of the samples. */
  indices: Tensor;
  /** [B] bool: which samples were flipped left-right (present with flip on; a latent run picks the flipped image's cached encoding by it). */
  flipped?: Tensor;
  /** Epoch of this batch. */
  epoch: number;
}

/** Where a loader is: the next step next() will return. */
export interface DataLoaderState {
  step: number;
}

/** A 53-bit generator seed for (seed, epoch): splitmix64 of the pair, so nearby seeds and epochs are unrelated. */
export function epochSeed(seed: number, epoch: number): number {
  let z = (BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(epoch) + 0x632be59bd9b4e019n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  return Number((z ^ (z >> 31n)) & 0x1fffffffffffffn);
}

export class DataLoader {
  readonly size: number;
  readonly batchSize: number;
  /** Batches per epoch. */
  readonly stepsPerEpoch: number;
  readonly seed: number;
  /** The step next() returns next. */
  step = 0;
  readonly #data: Tensor;
  readonly #labels: Tensor | undefined;
  readonly #o: Required<Omit<DataLoaderOptions, 'batchSize' | 'seed'>>;
  #order: { epoch: number; perm: Tensor; flips: Tensor | null } | null = null;

  /** data: images uint8 [N, C, H, W] (or any [N, ...] tensor) with optional int64 labels [N]. */
  constructor(data: { images: Tensor; labels?: Tensor }, { batchSize, seed = 0, shuffle = true, flip = false, dropLast = true, dtype = 'float32', device = 'cpu' }: DataLoaderOptions) {
    const { images, labels } = data;
    if (!(images instanceof Tensor) || images.ndim < 1) throw new TypeError('DataLoader: images must be a tensor [N, ...]');
    const n = images.dim(0);
    if (labels !== undefined && (labels.ndim !== 1 || labels.dim(0) !== n))
      throw new TypeError(`DataLoader: labels must have shape [${n}] to match images [${images.shape.join(', ')}], got [${labels.shape.join(', ')}]`);
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`DataLoader: batchSize must be a positive integer, got ${batchSize}`);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`DataLoader: seed must be a non-negative integer, got ${seed}`);
    if (!isFloating(dtype)) throw new TypeError(`DataLoader: dtype must be a floating type, got ${dtype}`);
    if (flip && images.ndim < 3) throw new TypeError(`DataLoader: flip needs image-like data [N, ..., H, W], got [${images.shape.join(', ')}]`);
    this.stepsPerEpoch = dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
    if (this.stepsPerEpoch === 0) throw new RangeError(`DataLoader: ${n} samples make no full batch of ${batchSize} (use a smaller batchSize or dropLast: false)`);
    this.size = n;
    this.batchSize = batchSize;
    this.seed = seed;
    this.#data = images;
    this.#labels = labels;
    this.#o = { shuffle, flip, dropLast, dtype, device };
  }

  /** The epoch a step falls in. */
  epochOf(step: number): number {
    return Math.floor(step / this.stepsPerEpoch);
  }

  /** The batch at a global step (pure: the same step always gives the same batch). */
  batchAt(step: number): Batch {
    if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`DataLoader.batchAt: step must be a non-negative integer, got ${step}`);
    const epoch = this.epochOf(step);
    const { perm, flips } = this.#orderOf(epoch);
    const start = (step % this.stepsPerEpoch) * this.batchSize;
    const len = Math.min(this.batchSize, this.size - start);
    const { dtype, device } = this.#o;
    return tidy(() => {
      const indices = perm.narrow(0, start, len); // [B]
      const raw = this.#data.indexSelect(0, indices); // [B, C, H, W]
      let x = raw.dtype === 'uint8' ? raw.to({ dtype }).div(127.5).sub(1) : raw.to({ dtype });
      const flipped = flips?.narrow(0, start, len); // [B] bool
      if (flipped) x = flipped.reshape([len, ...new Array<number>(x.ndim - 1).fill(1)]).where(x.flip(-1), x);
      const labels = this.#labels?.indexSelect(0, indices);
      const dev = (t: Tensor) => (device === 'cpu' ? t : t.to({ device }));
      return { x: dev(x), ...(labels !== undefined && { labels: dev(labels) }), indices, epoch, ...(flipped && { flipped: flipped.contiguous() }) };
    });
  }

  /** The batch at the current step, then advances the step. */
  next(): Batch {
    return this.batchAt(this.step++);
  }

  /** The batches of one epoch, in order. */
  *epoch(e: number): IterableIterator<Batch> {
    for (let i = 0; i < this.stepsPerEpoch; i++) yield this.batchAt(e * this.stepsPerEpoch + i);
  }

  /** The position to store in a checkpoint. */
  state(): DataLoaderState {
    return { step: this.step };
  }

  /** Resumes at a stored position. */
  setState(s: DataLoaderState): void {
    if (!Number.isSafeInteger(s.step) || s.step < 0) throw new RangeError(`DataLoader.setState: step must be a non-negative integer, got ${s.step}`);
    this.step = s.step;
  }

  /** Frees the cached epoch order (the dataset tensors belong to the caller). */
  dispose(): void {
    this.#order?.perm.dispose();
    this.#order?.flips?.dispose();
    this.#order = null;
  }

  /** The sample order [N] and flip coins [N] of an epoch, cached for the current one. */
  #orderOf(epoch: number): { perm: Tensor; flips: Tensor | null } {
    if (this.#order?.epoch === epoch) return this.#order;
    this.dispose();
    const g = new Generator(epochSeed(this.seed, epoch));
    const perm = this.#o.shuffle ? g.randperm(this.size) : arange(this.size);
    const flips = this.#o.flip ? tidy(() => g.rand([this.size]).lt(0.5)) : null;
    this.#order = keep({ epoch, perm, flips });
    return this.#order;
  }
}
