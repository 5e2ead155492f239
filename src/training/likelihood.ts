/**
 * Likelihoods of a denoiser's model, two ways.
 *
 * 1. The discrete variational bound of a T-step VP chain (Ho et al. 2020, Eq. 5):
 *      -log p(x0) <= L_T + sum_{t>1} L_{t-1} + L_0
 *    L_T = KL(q(x_T | x0) || N(0, I)), L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))
 *    between Gaussians (Eq. 6-7), L_0 = -log p(x0 | x1) with a decoder that is either
 *    discretized to 256 levels of [-1, 1] (Sec. 3.3, Eq. 13: a true probability, for
 *    images) or a plain Gaussian density (for continuous data such as the 2-D toys).
 *    The model's x0 estimate is the denoiser at the step's sigma.
 * 2. The exact log-likelihood of the probability-flow ODE (Song et al. 2021, Sec. 4.3 and
 *    App. D.2, Eq. 39), in EDM's form dx/dsigma = (x - D(x, sigma)) / sigma, integrated
 *    with RK4 in tau = ln(sigma) (dx/dtau = x - D) while integrating the divergence:
 *      log p_{sigma_min}(x) = log N(x(sigma_max); 0, sigma_max^2 I) + int div_x (x - D) dtau.
 *    The divergence is exact (one backward pass per dimension) or Hutchinson's estimate
 *    E_v[v^T J v] with Rademacher v (one pass per probe).
 *
 * Bits per dimension are nats / (dims ln 2).
 *
 * @example
 *   const vlb = variationalBound(D, x0, discreteVP(linearBetas()), { generator });  // vlb.bitsPerDim [B]
 *   const ode = odeLogLikelihood(D, x, { trace: 'exact' });                          // ode.logLikelihood [B]
 */
import { grad } from '../engine/autograd';
import { enableGrad, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import { ddpmPosterior, DiscreteVP } from '../core/schedules';
import { full, stack, zeros } from '../engine/create';
import { Noise, randnLike } from '../sampling/noise';

const LN2 = Math.LN2;
const sumFlat = (t: Tensor) => (t.ndim > 1 ? t.flatten(1).sum(1) : t);
const dimsOf = (x: Tensor) => x.size / x.dim(0);

/** KL(N(m1, v1 I) || N(m2, v2 I)) elementwise = (ln(v2 / v1) + v1 / v2 + (m1 - m2)^2 / v2 - 1) / 2. */
export function gaussianKL(m1: Tensor, v1: number, m2: Tensor, v2: number): Tensor {
  return tidy(() =>
    m1
      .sub(m2)
      .square()
      .div(v2)
      .add(Math.log(v2 / v1) + v1 / v2 - 1)
      .mul(0.5),
  );
}

/** log N(x; mean, var) elementwise. */
export function gaussianLogDensity(x: Tensor, mean: Tensor, variance: number | Tensor): Tensor {
  return tidy(() => {
    const lv = variance instanceof Tensor ? variance.log() : Math.log(variance);
    return x
      .sub(mean)
      .square()
      .div(variance)
      .add(lv)
      .add(Math.log(2 * Math.PI))
      .mul(-0.5);
  });
}

const stdNormalCdf = (z: Tensor) => z.mul(Math.SQRT1_2).erf().add(1).mul(0.5);

/**
 * Ho et al. 2020, Eq. 13: log of the probability that N(mean, scale^2) falls in x's bin,
 * for x on the `levels` levels of [-1, 1] (bins of width 2/(levels-1), the outer bins
 * extended to -inf and +inf), floored at 1e-12 as the reference code does. Elementwise.
 */
export function discretizedGaussianLogLikelihood(x: Tensor, mean: Tensor, scale: Tensor | number, { levels = 256 }: { levels?: number } = {}): Tensor {
  return tidy(() => {
    const half = 1 / (levels - 1);
    const c = x.sub(mean);
    const upper = stdNormalCdf(c.add(half).div(scale));
    const lower = stdNormalCdf(c.sub(half).div(scale));
    const edge = 1 - half; // x at the top or bottom level (with slack for rounding)
    const p = x.lt(-edge).where(upper, x.gt(edge).where(lower.rsub(1), upper.sub(lower)));
    return p.clamp(1e-12, null).log();
  });
}

export interface BoundResult {
  /** [B] the bound on -log p(x0) in nats (per sample, summed over dims). */
  nats: Tensor;
  /** [B] the same in bits per dimension. */
  bitsPerDim: Tensor;
  /** [B] each part in nats: L_T, sum_{t>1} L_{t-1}, L_0. */
  prior: Tensor;
  diffusion: Tensor;
  decoder: Tensor;
}

export interface BoundOptions {
  /** Draws x_t ~ q(x_t | x0) for every step: one Generator, or one per sample (the bound of sample i then does not depend on its batch). */
  generator: Noise;
  cond?: Conditioning;
  /** 'discretized' (default; data on 256 levels of [-1, 1]) or 'gaussian' (continuous data: a density). */
  decoder?: 'discretized' | 'gaussian';
  /**
   * The reverse variance of p(x_{t-1} | x_t) (Ho et al. Sec. 3.2): beta_t ('beta', default, the
   * "fixedlarge" of Ho et al.'s CIFAR-10 run) or beta~_t ('posterior'). beta~_t is right where x_t
   * pins x0 down (data far sharper than the noise), beta_t where the data is smooth at that
   * scale; on the tests' mixture and 8-bit data beta_t gives the tighter bound.
   */
  variance?: 'posterior' | 'beta';
}

/**
 * Ho et al. 2020, Eq. 5: the variational bound of the T-step VP chain of `schedule` on x0
 * [B, ...], every term computed (one sample of x_t per step). The model's reverse step uses
 * x0_hat = D(x_t / sqrt(abar_t), sigma_t) in the posterior mean (Eq. 7); the decoder
 * p(x0 | x_1) is N(x0_hat, beta_1) (sigma_1^2 = beta_1, Sec. 3.3).
 */
export function variationalBound(D: Denoiser, x0: Tensor, schedule: DiscreteVP, opts: BoundOptions): BoundResult {
  const { generator, cond, decoder = 'discretized', variance = 'beta' } = opts;
  const { betas, alphaBar, sigmas, T } = schedule;
  if (!(alphaBar[T - 1] > 0)) throw new RangeError('variationalBound: the last alpha_bar is 0 (zero terminal SNR); the bound needs alpha_bar_T > 0');
  return noGrad(() =>
    tidy(() => {
      const x = x0.to({ dtype: 'float64' });
      const B = x.dim(0);
      const dims = dimsOf(x);
      const call = (xt: Tensor, i: number) => {
        // the denoiser sees x = x_t / sqrt(abar) at its sigma, in the data's dtype
        const xIn = xt.div(Math.sqrt(alphaBar[i])).to({ dtype: x0.dtype });
        return D(xIn, full([B], sigmas[i], { dtype: x0.dtype, device: x0.device }), cond).to({ dtype: 'float64' });
      };
      const sample = (i: number) => x.mul(Math.sqrt(alphaBar[i])).add(randnLike(generator, x).mul(Math.sqrt(1 - alphaBar[i]))); // q(x_t | x0), Eq. 4
      // L_T = KL(q(x_T | x0) || N(0, I))
      const prior = sumFlat(gaussianKL(x.mul(Math.sqrt(alphaBar[T - 1])), 1 - alphaBar[T - 1], x.mul(0), 1));
      // L_{t-1}, t = 2..T (index i = t - 1 = 1..T-1): Gaussian posterior (Eq. 6-7) vs the model's step
      let diffusion = zeros([B], { dtype: 'float64', device: x.device });
      for (let i = 1; i < T; i++) {
        const previous = diffusion;
        diffusion = tidy(() => {
          const xt = sample(i);
          const x0Hat = call(xt, i);
          const { c0, ct, variance: postVar } = ddpmPosterior(schedule, i);
          const modelVar = variance === 'posterior' ? postVar : betas[i];
          const mu = xt.mul(ct).add(x.mul(c0));
          const muHat = xt.mul(ct).add(x0Hat.mul(c0));
          return previous.add(sumFlat(gaussianKL(mu, postVar, muHat, modelVar)));
        });
        previous.dispose();
      }
      // L_0 = -log p(x0 | x_1), decoder N(x0_hat, beta_1)
      const x0Hat = call(sample(0), 0);
      const logp = decoder === 'discretized' ? discretizedGaussianLogLikelihood(x, x0Hat, Math.sqrt(betas[0])) : gaussianLogDensity(x, x0Hat, betas[0]);
      const dec = sumFlat(logp).neg();
      const nats = prior.add(diffusion).add(dec);
      return { nats, bitsPerDim: nats.div(dims * LN2), prior, diffusion, decoder: dec };
    }),
  );
}

export interface OdeLikelihoodOptions {
  /** Where the data density is evaluated (default 0.002, EDM's sigma_min). */
  sigmaMin?: number;
  /** Where the prior N(0, sigma_max^2 I) is assumed (default 80). */
  sigmaMax?: number;
  /** RK4 steps, uniform in ln(sigma) (default 64). */
  steps?: number;
  /** 'exact' (a backward pass per dimension; default) or 'hutchinson' (a pass per probe). */
  trace?: 'exact' | 'hutchinson';
  /** Rademacher probes per sample for 'hutchinson', fixed along the path (default 1). */
  probes?: number;
  /** Required for 'hutchinson': one Generator, or one per sample (sample i's probes then do not depend on its batch). */
  generator?: Noise;
  /** log of the prior density at sigma_max, [B] (default log N(x; 0, sigma_max^2 I)). */
  prior?: (x: Tensor, sigmaMax: number) => Tensor;
  cond?: Conditioning;
}

export interface OdeLikelihoodResult {
  /** [B] log p_{sigma_min}(x) in nats. */
  logLikelihood: Tensor;
  /** [B] -logLikelihood / (dims ln 2), of the density (for 8-bit values k mapped to k/127.5 - 1, add log2(127.5), the scaling's Jacobian). */
  bitsPerDim: Tensor;
  /** [B] log prior at the end of the path. */
  priorLogLikelihood: Tensor;
  /** [B] the integrated divergence. */
  deltaLogLikelihood: Tensor;
  /** [B, P] for 'hutchinson': the integrated divergence of each probe alone (their mean is deltaLogLikelihood; their spread is the estimator's noise). */
  deltaPerProbe?: Tensor;
  /** [B, ...] the point x(sigma_max) the ODE reached. */
  xT: Tensor;
}

/**
 * Song et al. 2021, App. D.2, Eq. 39 (instantaneous change of variables along the probability
 * flow), in EDM's variables: the log-density at sigma_min of x [B, ...] from the prior at
 * sigma_max plus the integral of div_x (x - D(x, sigma)) over ln(sigma). Integrates in
 * float64; D is called with x in x's dtype.
 */
export function odeLogLikelihood(D: Denoiser, x: Tensor, opts: OdeLikelihoodOptions = {}): OdeLikelihoodResult {
  const { sigmaMin = 0.002, sigmaMax = 80, steps = 64, trace = 'exact', probes = 1, generator, cond } = opts;
  if (!(sigmaMin > 0 && sigmaMax > sigmaMin)) throw new RangeError(`odeLogLikelihood: need 0 < sigmaMin < sigmaMax, got ${sigmaMin}, ${sigmaMax}`);
  if (!Number.isSafeInteger(steps) || steps < 1) throw new RangeError(`odeLogLikelihood: steps must be a positive integer, got ${steps}`);
  if (trace === 'hutchinson' && !generator) throw new TypeError("odeLogLikelihood: trace 'hutchinson' needs a generator");
  const prior = opts.prior ?? ((xT: Tensor, s: number) => sumFlat(gaussianLogDensity(xT, xT.mul(0), s * s)));
  return tidy(() => {
    const B = x.dim(0);
    const dims = dimsOf(x);
    const dtype = x.dtype;
    if (trace === 'hutchinson' && !(Number.isSafeInteger(probes) && probes >= 1)) throw new RangeError(`odeLogLikelihood: probes must be a positive integer, got ${probes}`);
    // Rademacher probes: the sign of a standard normal draw (+-1 with probability 1/2 each)
    const v =
      trace === 'hutchinson'
        ? Array.from({ length: probes }, () =>
            randnLike(generator!, x.to({ dtype: 'float64' }))
              .ge(0)
              .where(1, -1)
              .to({ dtype }),
          )
        : [];
    // (x, tau) -> [dx/dtau = x - D(x, e^tau), div_x of it], both float64
    const field = (xs: Tensor, tau: number): [Tensor, Tensor] =>
      tidy(() =>
        enableGrad(() => {
          const xr = xs.to({ dtype }).detach().requiresGrad_();
          const sigma = full([B], Math.exp(tau), { dtype, device: x.device });
          const d = D(xr, sigma, cond);
          let divD: Tensor;
          if (trace === 'exact') {
            const flat = d.flatten(1); // [B, dims]
            const parts: Tensor[] = [];
            for (let i = 0; i < dims; i++) {
              const [g] = grad(flat.select(1, i).sum(), xr, { retainGraph: true });
              parts.push(g!.flatten(1).select(1, i));
            }
            divD = parts.reduce((a, b) => a.add(b));
          } else {
            // one estimate v^T (dD/dx) v per probe: [B, P]
            divD = stack(
              v.map((p, k) => {
                const [g] = grad(d.mul(p).sum(), xr, { retainGraph: k < v.length - 1 });
                return sumFlat(g!.mul(p));
              }),
              1,
            );
          }
          const dx = xr.sub(d).detach().to({ dtype: 'float64' });
          return [dx, divD.detach().to({ dtype: 'float64' }).rsub(dims)] as [Tensor, Tensor]; // div(x - D) = dims - div D ([B], or [B, P])
        }),
      );
    // RK4 on (x, integral of the divergence) from tau_min = ln(sigma_min) to tau_max = ln(sigma_max)
    const t0 = Math.log(sigmaMin);
    const h = (Math.log(sigmaMax) - t0) / steps;
    let xs = x.to({ dtype: 'float64' }).detach();
    let acc = zeros(trace === 'hutchinson' ? [B, probes] : [B], { dtype: 'float64', device: x.device });
    for (let k = 0; k < steps; k++) {
      const tau = t0 + k * h;
      const [xPrev, accPrev] = [xs, acc];
      [xs, acc] = tidy(() => {
        const [k1, d1] = field(xPrev, tau);
        const [k2, d2] = field(xPrev.add(k1.mul(h / 2)), tau + h / 2);
        const [k3, d3] = field(xPrev.add(k2.mul(h / 2)), tau + h / 2);
        const [k4, d4] = field(xPrev.add(k3.mul(h)), tau + h);
        const step = (a: Tensor, b: Tensor, c: Tensor, d: Tensor) =>
          a
            .add(b.mul(2))
            .add(c.mul(2))
            .add(d)
            .mul(h / 6);
        return [xPrev.add(step(k1, k2, k3, k4)), accPrev.add(step(d1, d2, d3, d4))];
      });
      xPrev.dispose();
      accPrev.dispose();
    }
    const priorLogLikelihood = prior(xs, sigmaMax).to({ dtype: 'float64' });
    const delta = trace === 'hutchinson' ? acc.mean(1) : acc;
    const logLikelihood = priorLogLikelihood.add(delta);
    const result: OdeLikelihoodResult = { logLikelihood, bitsPerDim: logLikelihood.neg().div(dims * LN2), priorLogLikelihood, deltaLogLikelihood: delta, xT: xs };
    if (trace === 'hutchinson') result.deltaPerProbe = acc;
    return result;
  });
}
