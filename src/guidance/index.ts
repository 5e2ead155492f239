/**
 * Guidance (tutorial part 2): functions from denoisers to a denoiser, so every sampler runs
 * every guidance method unchanged (DESIGN.md, "One core type").
 *
 * - classifierFreeGuidance: D_u + w (D_c - D_u), with rescale and a guidance interval.
 * - classifierGuidance: D + s sigma^2 grad_x log p(y | x, sigma).
 * - autoguidance: D_guide + w (D_main - D_guide).
 * - prepareGuidance: any of them from a GuidanceSpec, loading the guide network or classifier once.
 *
 * @example
 *   const G = classifierFreeGuidance(D, { scale: 3, nullClass: 10 });
 *   const x0 = SAMPLERS['dpmpp-2m'].fn(G, xT, karrasSigmas(20), { cond: { classLabels } });
 */
export { guide, guidanceInterval, insideInterval } from './common';
export { classifierFreeGuidance, conditionalPair, rescaleGuided, CFGOptions } from './cfg';
export { classifierGuidance, classifierGradient, ClassLogProb, ClassifierGuidanceOptions } from './classifier';
export { autoguidance, AutoguidanceOptions } from './autoguidance';
export { prepareGuidance, GuidanceSpec, GuidanceType, GUIDANCE_TYPES, Guided, PreparedGuidance, GuideMismatchError } from './load';
