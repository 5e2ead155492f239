/**
 * Seeded random numbers. Every random op takes an explicit Generator, so a run is
 * reproducible from its seeds. Numbers are drawn on the CPU (identical to
 * PyTorch's `torch.Generator().manual_seed(seed)` streams) and then moved to the
 * requested device, so a seed gives the same samples on every device.
 *
 * @example
 *   const g = new Generator(0);
 *   const x = g.randn([2, 3]); // equals torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
 *   const s = g.state();      // save ...
 *   g.setState(s);            // ... and restore (checkpoints)
 */
import { DType, dtypeCode, isFloating } from './dtype';
import { checkShape } from './create';
import { GenHandle, native } from './native';
import { Tensor, TensorOptions } from './tensor';

export class Generator {
  /** @internal */
  readonly handle: GenHandle;
  readonly seed: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`Generator: seed must be a non-negative integer, got ${seed}`);
    this.seed = seed;
    this.handle = native.newGenerator(seed);
  }

  /** Standard normal samples. */
  randn(shape: number[], opts: TensorOptions = {}): Tensor {
    return new Tensor(native.randn(checkShape(shape), this.handle, floatCode('randn', opts.dtype), opts.device ?? 'cpu'));
  }

  /** Uniform samples in [0, 1). */
  rand(shape: number[], opts: TensorOptions = {}): Tensor {
    return new Tensor(native.rand(checkShape(shape), this.handle, floatCode('rand', opts.dtype), opts.device ?? 'cpu'));
  }

  /** Integers uniform in [low, high) (int64 by default). */
  randint(low: number, high: number, shape: number[], opts: TensorOptions = {}): Tensor {
    if (!(Number.isSafeInteger(low) && Number.isSafeInteger(high) && high > low)) throw new RangeError(`randint: need integers low < high, got low=${low}, high=${high}`);
    return new Tensor(native.randint(low, high, checkShape(shape), this.handle, dtypeCode(opts.dtype ?? 'int64'), opts.device ?? 'cpu'));
  }

  /** A random permutation of 0..n-1 (int64). */
  randperm(n: number, opts: TensorOptions = {}): Tensor {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`randperm: n must be a non-negative integer, got ${n}`);
    return new Tensor(native.randperm(n, this.handle, dtypeCode(opts.dtype ?? 'int64'), opts.device ?? 'cpu'));
  }

  /** Normal samples shaped, typed and placed like `t`. */
  randnLike(t: Tensor): Tensor {
    return this.randn(t.shape, { dtype: t.dtype, device: t.device });
  }

  /** Uniform samples shaped, typed and placed like `t`. */
  randLike(t: Tensor): Tensor {
    return this.rand(t.shape, { dtype: t.dtype, device: t.device });
  }

  /** 0/1 samples with probability p, shaped, typed and placed like `t`. */
  bernoulli(like: Tensor, p: number): Tensor {
    if (!(p >= 0 && p <= 1)) throw new RangeError(`bernoulli: p must be in [0, 1], got ${p}`);
    return new Tensor(native.bernoulli(like.handle, p, this.handle));
  }

  /** The full generator state (to store in a checkpoint). */
  state(): Uint8Array {
    return native.generatorState(this.handle);
  }

  /** Restores a state from state(). */
  setState(state: Uint8Array): void {
    native.generatorSetState(this.handle, state);
  }
}

function floatCode(op: string, dtype: DType | undefined): number {
  const d = dtype ?? 'float32';
  if (!isFloating(d)) throw new TypeError(`${op}: dtype must be a floating type, got ${d}`);
  return dtypeCode(d);
}
