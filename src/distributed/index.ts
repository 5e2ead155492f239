/** Data-parallel training over torch.distributed's c10d (Gloo): process groups, the loop's data parallelism, the launcher. */
export * from './process-group';
export * from './data-parallel';
export * from './launch';
