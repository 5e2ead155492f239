/**
 * The shared vocabulary: the Denoiser type, preconditioning adapters that turn
 * networks into denoisers, and noise schedules.
 *
 * @example
 *   const D = edmDenoiser(net);           // EDM preconditioning (Karras 2022, Table 1)
 *   const s = score(D, x, sigma);         // Tweedie
 */
export * from './denoiser';
export * from './precond';
export * from './schedules';
