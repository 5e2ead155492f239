/**
 * The tensor engine: libtorch tensors, autograd, scopes and safetensors, from TypeScript.
 *
 * @example
 *   import { tensor, Generator, tidy, grad } from 'diffuse/engine';
 *   const g = new Generator(0);
 *   const x = g.randn([4, 3]).requiresGrad_();
 *   const [dx] = grad(x.square().sum(), x); // 2x
 */
export * from './dtype';
export * from './tensor';
export * from './create';
export * from './random';
export * from './scope';
export * from './autograd';
export * from './runtime';
export * from './profile';
export * as F from './functional';
export * from './safetensors';
