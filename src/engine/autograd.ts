/**
 * Vector-Jacobian products and gradient checking.
 *
 * `grad(outputs, inputs)` returns d(outputs)/d(inputs) without touching `.grad`,
 * as torch.autograd.grad does; with `createGraph` the result is itself
 * differentiable (for Hutchinson trace estimates and gradient penalties).
 *
 * @example
 *   const x = tensor([1, 2, 3]).requiresGrad_();
 *   const [g] = grad(x.square().sum(), x); // 2x
 */
import { arange, fromBytes } from './create';
import { native } from './native';
import { tidy } from './scope';
import { Tensor } from './tensor';

export interface GradOptions {
  /** v in the VJP v^T J; required when an output is not a scalar. */
  gradOutputs?: Tensor | Tensor[];
  /** Keep the graph for another backward pass (default: createGraph). */
  retainGraph?: boolean;
  /** Record the gradient computation so it can be differentiated again. */
  createGraph?: boolean;
  /** Return null for inputs the outputs do not depend on instead of failing. */
  allowUnused?: boolean;
}

const list = (x: Tensor | Tensor[]): Tensor[] => (Array.isArray(x) ? x : [x]);

/** Gradients of outputs with respect to inputs (sum of VJPs over outputs). */
export function grad(outputs: Tensor | Tensor[], inputs: Tensor | Tensor[], opts: GradOptions = {}): (Tensor | null)[] {
  const outs = list(outputs);
  const ins = list(inputs);
  const gos = opts.gradOutputs === undefined ? null : list(opts.gradOutputs).map((t) => t.handle);
  const gs = native.grad(
    outs.map((t) => t.handle),
    ins.map((t) => t.handle),
    gos,
    opts.retainGraph ?? null,
    opts.createGraph ?? false,
    opts.allowUnused ?? false,
  );
  return gs.map((g) => (g === null ? null : new Tensor(g)));
}

export interface GradcheckResult {
  ok: boolean;
  /** Largest |analytic - numeric| over all inputs and elements. */
  maxError: number;
}

/**
 * Compares autograd gradients of sum(fn(inputs) * w) (w fixed random weights) with
 * central finite differences. Use float64 inputs; eps and tolerances as PyTorch's
 * gradcheck (eps 1e-6, atol 1e-5, rtol 1e-3).
 */
export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], { eps = 1e-6, atol = 1e-5, rtol = 1e-3 } = {}): GradcheckResult {
  for (const x of inputs) if (x.dtype !== 'float64') throw new TypeError(`gradcheck: inputs must be float64 for accurate finite differences, got ${x.dtype}`);
  return tidy(() => {
    const xs = inputs.map((x) => x.detach().clone().requiresGrad_());
    const out0 = fn(...xs);
    // A fixed, non-symmetric weighting makes the scalar sensitive to every output.
    const n = out0.size;
    const w = arange(1, n + 1, 1, { dtype: 'float64' })
      .div(n)
      .sin()
      .reshape(out0.shape);
    const analytic = grad(out0.mul(w).sum(), xs, { allowUnused: true });
    let maxError = 0;
    let ok = true;
    xs.forEach((x, i) => {
      const base = x.detach().clone();
      const flat = Float64Array.from(base.data() as Float64Array);
      const a = analytic[i] ? (analytic[i].data() as Float64Array) : new Float64Array(flat.length);
      const evalAt = (vals: Float64Array) =>
        tidy(() => {
          const args = xs.map((y, j) => (j === i ? fromBytes(vals, 'float64', base.shape) : y.detach()));
          return fn(...args)
            .mul(w)
            .sum()
            .item();
        });
      for (let k = 0; k < flat.length; k++) {
        const v = flat[k];
        flat[k] = v + eps;
        const fp = evalAt(flat);
        flat[k] = v - eps;
        const fm = evalAt(flat);
        flat[k] = v;
        const numeric = (fp - fm) / (2 * eps);
        const err = Math.abs(a[k] - numeric);
        maxError = Math.max(maxError, err);
        if (err > atol + rtol * Math.abs(numeric)) ok = false;
      }
    });
    return { ok, maxError };
  });
}
