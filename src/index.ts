/** Diffuse: diffusion models in TypeScript on libtorch. */
export * from './engine';
export * as nn from './nn';
