/**
 * The two views of sampling (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
 * Sec. 4), in the sigma parametrization x = x0 + sigma n (Karras et al. 2022, Eq. 4 and 6 with sigma(t) = t):
 *
 *   probability-flow ODE   dx = (x - D(x, sigma)) / sigma dsigma                      (deterministic)
 *   reverse-time SDE       dx = 2 (x - D(x, sigma)) / sigma dsigma + sqrt(2 sigma) dW  (sigma decreasing)
 *
 * Both have the data distribution at sigma = 0 when started from p_sigmaMax; from the same xT they
 * draw different paths. Each view runs a sampler (the ODE with Heun, the SDE with its ancestral
 * step at eta = 1: the DDPM posterior with x0 = D, which is exact for a point-mass D) and records
 * the sample at every grid point, so the lab can plot both trajectories from one start.
 *
 * @example
 *   const ode = probabilityFlowODE(D, xT, karrasSigmas(40));                  // path [41, B, 2]
 *   const sde = reverseSDE(D, xT, karrasSigmas(40), { generator: new Generator(0) });
 */
import { stack } from '../engine/create';
import { keep, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { Sampler, SamplerOptions } from './common';
import { sampleEulerAncestral } from './euler-ancestral';
import { sampleHeun } from './heun';

/** A sampling run with its path: the sample and the x0 estimate at each step. */
export interface Trajectory {
  /** The final sample [B, ...]. */
  x: Tensor;
  /** The sample at each grid point where a step started, then the final sample: [N + 1, B, ...]. */
  path: Tensor;
  /** The denoiser's x0 estimate at each step [N, B, ...]. */
  denoised: Tensor;
  /** The noise level of each row of path (the step's sigma, sigma_hat after churn; 0 last). */
  sigmas: number[];
}

/** Runs any sampler and records its path through the callback (the caller frees the returned tensors). */
export function trajectory<O extends SamplerOptions>(sampler: Sampler<O>, D: Denoiser, xT: Tensor, sigmas: Tensor, opts: O): Trajectory {
  const xs: Tensor[] = [];
  const ds: Tensor[] = [];
  const levels: number[] = [];
  try {
    const x = sampler(D, xT, sigmas, {
      ...opts,
      callback: (info) => {
        xs.push(keep(info.x.clone()));
        ds.push(keep(info.denoised.clone()));
        levels.push(info.sigma);
        opts.callback?.(info);
      },
    });
    return { x, ...tidy(() => ({ path: stack([...xs, x], 0), denoised: stack(ds, 0) })), sigmas: [...levels, 0] };
  } finally {
    xs.forEach((t) => t.dispose());
    ds.forEach((t) => t.dispose());
  }
}

/** The probability-flow ODE's path from xT, solved with Heun (EDM Algorithm 1). */
export function probabilityFlowODE(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: SamplerOptions = {}): Trajectory {
  return trajectory(sampleHeun, D, xT, sigmas, opts);
}

/** The reverse-time SDE's path from xT (ancestral steps, eta = 1); needs opts.generator. */
export function reverseSDE(D: Denoiser, xT: Tensor, sigmas: Tensor, opts: SamplerOptions = {}): Trajectory {
  return trajectory(sampleEulerAncestral, D, xT, sigmas, { ...opts, eta: 1 });
}
