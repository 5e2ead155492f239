/**
 * Gradient clipping by global norm (Pascanu et al. 2013, "On the difficulty of
 * training recurrent neural networks", Algorithm 1), as torch.nn.utils.clip_grad_norm_:
 * the norm of all gradients together, as if they were one vector, and every gradient
 * scaled by maxNorm / (norm + 1e-6) when that is below 1. One native call for the
 * whole list.
 */
import { native } from '../engine/native';
import { Tensor } from '../engine/tensor';
import { checkOption, paramTensors, Params } from './params';

export interface ClipOptions {
  /** The p of the p-norm (default 2; Infinity for the largest magnitude). */
  normType?: number;
  /** Throw instead of scaling when the total norm is NaN or infinite (default false, as PyTorch 1.13). */
  errorIfNonfinite?: boolean;
}

function clip(who: string, tensors: Tensor[], fromParams: boolean, maxNorm: number, opts: ClipOptions): number {
  checkOption(who, 'maxNorm', maxNorm, (x) => typeof x === 'number' && x >= 0, 'a number >= 0');
  const normType = checkOption(who, 'normType', opts.normType ?? 2, (x) => typeof x === 'number' && x > 0, 'a number > 0 (or Infinity)');
  return native.clipGradNorm(
    tensors.map((t) => t.handle),
    fromParams,
    maxNorm,
    normType,
    opts.errorIfNonfinite ?? false,
  );
}

/**
 * Scales the parameters' gradients (`.grad`, in place) so that their global norm is at
 * most maxNorm; returns the norm before clipping (0 when no parameter has a gradient).
 *
 * @example
 *   loss.backward();
 *   const gradNorm = clipGradNorm(opt.params, 1.0);
 *   opt.step();
 */
export function clipGradNorm(params: Params, maxNorm: number, opts: ClipOptions = {}): number {
  return clip('clipGradNorm', paramTensors(params), true, maxNorm, opts);
}

/**
 * The same for a list of gradient tensors themselves (e.g. from `grad()`), scaled in place.
 *
 * @example
 *   const gs = grad(loss, params) as Tensor[];
 *   clipNorm(gs, 1.0);
 */
export function clipNorm(tensors: readonly Tensor[], maxNorm: number, opts: ClipOptions = {}): number {
  return clip('clipNorm', [...tensors], false, maxNorm, opts);
}
