/**
 * Distillation (tutorial part 4b): students that sample in a handful of steps. Progressive
 * distillation (Salimans & Ho 2022) and guided distillation (Meng et al. 2023) as tasks on the
 * shared training loop, the record each student checkpoint carries, and the yardstick that
 * measures every student against its teacher.
 *
 * @example
 *   const r = await distill(resolveDistillOptions({ method: 'progressive', teacher: 'models/fashion-mnist', out: 'runs/pd' }));
 */
export * from './record';
export * from './progressive';
export * from './guided';
export * from './task';
export * from './run';
export * from './consistency';
export * from './lcm';
export * from './add';
