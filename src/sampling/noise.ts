/**
 * Where a sampler's random numbers come from: one Generator for the whole batch, or one
 * Generator per sample (EDM's StackedRandomGenerator, generate.py), so that sample i
 * depends only on its own seed, whatever the batch it is drawn in.
 *
 * @example
 *   const noise = seededNoise(100, 8);          // samples 100..107, one stream each
 *   const xT = randnLike(noise, zeros([8, 1, 32, 32])).mul(sigmaMax);
 */
import { stack } from '../engine/create';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';

/** A Generator for the batch, or one per sample (length = batch size). */
export type Noise = Generator | readonly Generator[];

/** Standard normal noise shaped, typed and placed like x [B, ...]. */
export function randnLike(noise: Noise, x: Tensor): Tensor {
  if (noise instanceof Generator) return noise.randnLike(x);
  if (noise.length !== x.dim(0)) throw new RangeError(`randnLike: ${noise.length} generators for a batch of ${x.dim(0)} (give one per sample, or a single Generator)`);
  const shape = x.shape.slice(1);
  return tidy(() =>
    stack(
      noise.map((g) => g.randn(shape, { dtype: x.dtype, device: x.device })),
      0,
    ),
  ); // [B, ...]
}

/** Generators seeded seed, seed + 1, ..., seed + n - 1: sample i of a batch drawn from seed s is the first sample drawn from seed s + i. */
export function seededNoise(seed: number, n: number): Generator[] {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seededNoise: seed must be a non-negative integer, got ${seed}`);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`seededNoise: n must be a non-negative integer, got ${n}`);
  return Array.from({ length: n }, (_, i) => new Generator(seed + i));
}
