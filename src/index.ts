/** Diffuse: diffusion models in TypeScript on libtorch. */
export * from './engine';
export * as nn from './nn';
export * as optim from './optim';
export * as models from './models';
export * as data from './data';
export * as core from './core';
export * as training from './training';
export * as sampling from './sampling';
export * as guidance from './guidance';
export * as evaluation from './eval';
export * as resolution from './resolution';
export * as distillation from './distillation';
export * as distributed from './distributed';
