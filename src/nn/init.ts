/**
 * Weight initializations. Randomness comes from a Generator: pass one, or the
 * layers use the shared init generator (seed it with `setInitSeed`, as
 * torch.manual_seed does for PyTorch's layers).
 *
 * @example
 *   setInitSeed(0);
 *   const w = kaimingUniform([64, 32], 32); // PyTorch's default Linear/Conv init
 */
import { Generator } from '../engine/random';
import { Tensor, TensorOptions } from '../engine/tensor';
import { tidy } from '../engine/scope';

let shared = new Generator(0);

/** Reseeds the generator layers use when none is passed. */
export function setInitSeed(seed: number): void {
  shared = new Generator(seed);
}

/** The generator layers use when none is passed. */
export function initGenerator(): Generator {
  return shared;
}

/** U(-bound, bound). */
export function uniform(shape: number[], bound: number, gen: Generator = shared, opts: TensorOptions = {}): Tensor {
  return tidy(() =>
    gen
      .rand(shape, opts)
      .mul(2 * bound)
      .sub(bound),
  );
}

/** N(0, std^2). */
export function normal(shape: number[], std: number, gen: Generator = shared, opts: TensorOptions = {}): Tensor {
  return tidy(() => gen.randn(shape, opts).mul(std));
}

/**
 * PyTorch's default for Linear and Conv weights: kaiming_uniform with a = sqrt(5),
 * i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); biases use the same bound.
 */
export function kaimingUniform(shape: number[], fanIn: number, gen: Generator = shared, opts: TensorOptions = {}): Tensor {
  return uniform(shape, fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0, gen, opts);
}

/** Glorot & Bengio 2010: U(-b, b), b = gain sqrt(6 / (fan_in + fan_out)). */
export function xavierUniform(shape: number[], fanIn: number, fanOut: number, gain = 1, gen: Generator = shared, opts: TensorOptions = {}): Tensor {
  return uniform(shape, gain * Math.sqrt(6 / (fanIn + fanOut)), gen, opts);
}
