/**
 * What the lab's panels show, computed with the engine: plain JSON (numbers, and images as PNG
 * data URLs) for the page to draw. The lab's worker process runs these (src/lab/worker.ts), so the
 * server's event loop never waits on a tensor; tests call them directly.
 *
 * - forwardPanel: a real image noised to step t of a schedule (Ho et al. 2020, Eq. 4), the
 *   schedules' log-SNR curves and the image's spectrum fading under the noise floor.
 * - fieldPanel / trajectoriesPanel / posteriorPanel / likelihoodPanel: the 2-D world of the
 *   8-Gaussians mixture, whose denoiser is exact at every sigma, beside a trained MLP.
 * - guidancePanel: a class-conditional mixture under classifier-free, classifier and autoguidance.
 *
 * @example
 *   const f = forwardPanel({ schedule: 'cosine', t: 500, index: 0, resolution: 64, seed: 0 });
 *   f.snr;   // abar_t / (1 - abar_t) of the cosine schedule at t = 500
 */
import { tensor } from '../engine/create';
import { Generator } from '../engine/random';
import { keep, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { cosineBetas, ddpmPosterior, discreteVP, DiscreteVP, karrasSigmas, linearBetas, resolutionShift, shiftDiscreteVP } from '../core/schedules';
import { encodePNG } from '../data/image-codec';
import { fashionMNISTSubset } from '../data/fashion-mnist';
import { GaussianMixture } from '../data/mixture';
import { eightGaussiansMixture } from '../data/toys';
import { autoguidance, classifierFreeGuidance, classifierGuidance } from '../guidance';
import { runSampler } from '../sampling/run';
import { imageGrid } from '../util/image';

/** A PNG as a data URL, for an <img> on the page. */
export function pngDataUrl(png: Uint8Array): string {
  return `data:image/png;base64,${Buffer.from(png).toString('base64')}`;
}

/** Images x [N, C, H, W] in [-1, 1] as one grid PNG data URL. */
export function gridDataUrl(x: Tensor, { ncol, scale = 1 }: { ncol?: number; scale?: number } = {}): string {
  return pngDataUrl(encodePNG(imageGrid(x, { ncol, scale, padding: x.dim(0) > 1 ? 2 : 0 })));
}

// ---- Panel 1: the forward process ------------------------------------------------

export const SCHEDULES = ['linear', 'cosine', 'shifted'] as const;
export type ScheduleName = (typeof SCHEDULES)[number];

/** The discrete schedule (T = 1000) of a name; 'shifted' is the cosine schedule moved from 32 px to `resolution` (Hoogeboom et al. 2023, Sec. 3.1). */
export function panelSchedule(name: ScheduleName, resolution = 64): DiscreteVP {
  if (name === 'linear') return discreteVP(linearBetas(1000));
  const cosine = discreteVP(cosineBetas(1000));
  return name === 'cosine' ? cosine : shiftDiscreteVP(cosine, resolutionShift({ base: 32, resolution }));
}

export interface ForwardParams {
  schedule: ScheduleName;
  /** Step index 0..999. */
  t: number;
  /** Which Fashion-MNIST test image (0..15). */
  index: number;
  /** The resolution the shifted schedule is moved to (base 32). */
  resolution: number;
  seed: number;
}

let images: Tensor | null = null;
/** 16 Fashion-MNIST test images [16, 1, 32, 32] in [-1, 1], loaded once per process. */
function panelImages(): Tensor {
  if (!images) {
    const { x } = fashionMNISTSubset(16, { split: 'test', pad32: true, seed: 0 });
    images = keep(tidy(() => x.to({ dtype: 'float32' }).div(127.5).sub(1))); // kept past any caller's tidy scope
    x.dispose();
  }
  return images;
}

/** Radially averaged power spectrum P(k) = mean |F(u, v)|^2 / (H W) over |(u, v)| in [k, k + 1) of a [H, W] image (naive DFT). */
export function radialSpectrum(img: Float64Array, h: number, w: number): number[] {
  const sums = new Array<number>(Math.floor(Math.min(h, w) / 2)).fill(0);
  const counts = sums.map(() => 0);
  for (let u = 0; u < h; u++)
    for (let v = 0; v < w; v++) {
      let re = 0;
      let im = 0;
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const a = -2 * Math.PI * ((u * y) / h + (v * x) / w);
          re += img[y * w + x] * Math.cos(a);
          im += img[y * w + x] * Math.sin(a);
        }
      const fu = Math.min(u, h - u);
      const fv = Math.min(v, w - v);
      const k = Math.floor(Math.hypot(fu, fv));
      if (k < sums.length) {
        sums[k] += (re * re + im * im) / (h * w);
        counts[k]++;
      }
    }
  return sums.map((s, k) => s / Math.max(counts[k], 1));
}

const spectra = new Map<number, number[]>();

/**
 * Ho et al. 2020, Eq. 4: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. Returns the image pair, the
 * SNR abar_t / (1 - abar_t), every schedule's log-SNR at 100 steps, and the spectrum of the signal
 * part abar_t P_x0(k) against the white noise floor 1 - abar_t (fine detail drowns first).
 */
export function forwardPanel(p: ForwardParams) {
  const s = panelSchedule(p.schedule, p.resolution);
  const abar = s.alphaBar[p.t];
  const x0 = tidy(() => panelImages().narrow(0, p.index, 1)); // [1, 1, 32, 32]
  const xt = noGrad(() => tidy(() => x0.mul(Math.sqrt(abar)).add(new Generator(p.seed).randnLike(x0).mul(Math.sqrt(1 - abar)))));
  try {
    if (!spectra.has(p.index)) spectra.set(p.index, radialSpectrum(x0.toFloat64Array(), 32, 32));
    const spectrum = spectra.get(p.index)!;
    const curves = Object.fromEntries(
      SCHEDULES.map((name) => {
        const sc = panelSchedule(name, p.resolution);
        return [name, Array.from({ length: 100 }, (_, i) => Math.log(sc.alphaBar[i * 10] / (1 - sc.alphaBar[i * 10])))];
      }),
    );
    return {
      t: p.t,
      alphaBar: abar,
      sigma: s.sigmas[p.t],
      snr: abar / (1 - abar),
      clean: gridDataUrl(x0, { scale: 4 }),
      noisy: gridDataUrl(xt, { scale: 4 }),
      logSnr: curves,
      spectrum: { signal: spectrum.map((v) => v * abar), noise: 1 - abar, clean: spectrum },
    };
  } finally {
    x0.dispose();
    xt.dispose();
  }
}

// ---- Panel 2: the 2-D world --------------------------------------------------------

/** The grid of arrow tails: n x n points over [-lim, lim]^2, [n^2, 2]. */
function arrowGrid(n: number, lim = 2.5): number[][] {
  return Array.from({ length: n * n }, (_, i) => [-lim + (2 * lim * (i % n)) / (n - 1), -lim + (2 * lim * Math.floor(i / n)) / (n - 1)]);
}

/** Rows of a [N, 2] tensor as [x, y] pairs. */
function pairs(x: Tensor): number[][] {
  const a = x.toFloat64Array();
  return Array.from({ length: x.dim(0) }, (_, i) => [a[2 * i], a[2 * i + 1]]);
}

/** D(x, sigma) - x at each point, [N, 2] pairs: the denoiser's pull, sigma^2 times the score (Tweedie). */
function pull(D: Denoiser, pts: number[][], sigma: number, cond?: { classLabels: Tensor }): number[][] {
  return noGrad(() =>
    tidy(() => {
      const x = tensor(pts, { dtype: 'float32' });
      return pairs(D(x, tensor(new Array<number>(pts.length).fill(sigma), { dtype: 'float32' }), cond).sub(x));
    }),
  );
}

/** The exact denoiser of a mixture as a Denoiser. */
export function mixtureDenoiser(gmm: GaussianMixture): Denoiser {
  return (x, sigma, cond) => gmm.denoise(x, sigma, cond);
}

export interface FieldParams {
  sigma: number;
  /** Arrows per side. */
  density: number;
}

/** The denoiser field D(x, sigma) - x on a grid, exact (the mixture) and learned (the MLP), and 256 data points. */
export function fieldPanel(p: FieldParams, learned: Denoiser | null) {
  const gmm = eightGaussiansMixture();
  try {
    const pts = arrowGrid(p.density);
    const data = tidy(() => pairs(gmm.sample(256, new Generator(0))));
    const exact = pull(mixtureDenoiser(gmm), pts, p.sigma);
    const model = learned ? pull(learned, pts, p.sigma) : null;
    const err = model ? Math.sqrt(exact.reduce((a, e, i) => a + (e[0] - model[i][0]) ** 2 + (e[1] - model[i][1]) ** 2, 0) / exact.length) : null;
    return { sigma: p.sigma, points: pts, exact, learned: model, rmsError: err, data };
  } finally {
    gmm.dispose();
  }
}

export const TRAJECTORY_SAMPLERS = ['euler', 'heun', 'dpmpp-2m', 'euler-ancestral', 'dpmpp-2m-sde', 'ddpm'] as const;

export interface TrajectoryParams {
  steps: number;
  seed: number;
  /** Trajectories per sampler. */
  n: number;
  denoiser: 'exact' | 'learned';
}

/**
 * Each sampler's path from the same noise x_T ~ N(0, sigma_max^2 I) on the Karras grid
 * (sigma_max = 10): the ODE solvers (euler, heun, dpmpp-2m) follow the probability-flow ODE
 * (Song et al. 2021, Eq. 13), the SDE ones (euler-ancestral, dpmpp-2m-sde, ddpm) add fresh noise.
 * paths[sampler][step][point] = [x, y]; x0[sampler][step] are the Tweedie estimates D(x_i, sigma_i).
 */
export function trajectoriesPanel(p: TrajectoryParams, learned: Denoiser | null) {
  const gmm = eightGaussiansMixture();
  try {
    const D = p.denoiser === 'learned' && learned ? learned : mixtureDenoiser(gmm);
    const sigmas = karrasSigmas(p.steps, { sigmaMax: 10 });
    const out: Record<string, { paths: number[][][]; x0: number[][][] }> = {};
    try {
      for (const name of TRAJECTORY_SAMPLERS) {
        const paths: number[][][] = [];
        const x0: number[][][] = [];
        noGrad(() =>
          tidy(() => {
            const xT = new Generator(p.seed).randn([p.n, 2]).mul(10);
            const end = runSampler(name, D, xT, sigmas, {
              generator: new Generator(p.seed + 1),
              callback: ({ x, denoised }) => {
                paths.push(pairs(x));
                x0.push(pairs(denoised));
              },
            });
            paths.push(pairs(end));
          }),
        );
        out[name] = { paths, x0 };
      }
    } finally {
      sigmas.dispose();
    }
    return { steps: p.steps, samplers: out, data: tidy(() => pairs(gmm.sample(256, new Generator(0)))) };
  } finally {
    gmm.dispose();
  }
}

/**
 * Ho et al. 2020, Eq. 7 on a 2-D point: the posterior mean mu~(x_t, x0) = c0 x0 + ct x_t against
 * the segment from x0 to x_t (VP coordinates, linear schedule). c0 + ct < 1, so the mean leaves
 * the segment; its distance from the line grows with t.
 */
export function posteriorPanel({ t, seed }: { t: number; seed: number }) {
  const s = panelSchedule('linear');
  const x0 = [Math.SQRT2, 0];
  const eps = tidy(() => Array.from(new Generator(seed).randn([2], { dtype: 'float64' }).toFloat64Array()));
  const xt = x0.map((v, i) => Math.sqrt(s.alphaBar[t]) * v + Math.sqrt(1 - s.alphaBar[t]) * eps[i]); // Eq. 4
  const { c0, ct, variance } = ddpmPosterior(s, t);
  const mean = x0.map((v, i) => c0 * v + ct * xt[i]);
  const [dx, dy] = [xt[0] - x0[0], xt[1] - x0[1]];
  const offLine = Math.abs(dx * (mean[1] - x0[1]) - dy * (mean[0] - x0[0])) / Math.max(Math.hypot(dx, dy), 1e-12); // distance of mu~ from the line x0 -- x_t
  const curve = Array.from({ length: 99 }, (_, i) => {
    const q = ddpmPosterior(s, (i + 1) * 10);
    return 1 - q.c0 - q.ct;
  });
  return { t, x0, xt, mean, c0, ct, variance, sum: c0 + ct, offLine, gapCurve: curve };
}

/**
 * Training as maximum likelihood (= minimum KL(p_data || p_model) = maximum similarity): the
 * model family is the 8-Gaussians ring at radius r; the average exact log-likelihood of 2000 data
 * points and KL = E log p_data - E log p_r (a Monte Carlo estimate, exact densities) at each r.
 */
export function likelihoodPanel() {
  const data = eightGaussiansMixture();
  try {
    return tidy(() => {
      const x = data.sample(2000, new Generator(0), { dtype: 'float64' });
      const entropy = -data.logDensity(x).mean().item(); // -E log p_data
      const radii = Array.from({ length: 41 }, (_, i) => 0.4 + (i * 2) / 40);
      const ll = radii.map((r) => {
        const m = GaussianMixture.ring(8, { radius: r, std: 0.2 });
        try {
          return m.logDensity(x).mean().item();
        } finally {
          m.dispose();
        }
      });
      return { radii, logLikelihood: ll, kl: ll.map((v) => -entropy - v), dataRadius: Math.SQRT2 };
    });
  } finally {
    data.dispose();
  }
}

// ---- Panel 3: guidance geometry -----------------------------------------------------

export const GUIDANCE_METHODS = ['cfg', 'classifier', 'auto'] as const;

export interface GuidanceParams {
  /** Guidance scale w (cfg, auto: 1 = the conditional model; classifier: 0 = the unconditional one). */
  w: number;
  sigma: number;
  /** The class steered toward (0 or 1). */
  cls: number;
  seed: number;
}

/** 8 Gaussians in two classes (even and odd components), the ring of the 2-D world. */
export function twoClassMixture(std = 0.2): GaussianMixture {
  const ring = Array.from({ length: 8 }, (_, i) => [Math.SQRT2 * Math.cos((Math.PI * i) / 4), Math.SQRT2 * Math.sin((Math.PI * i) / 4)]);
  return new GaussianMixture(ring, new Array<number>(8).fill(std), undefined, [0, 1, 0, 1, 0, 1, 0, 1]);
}

/**
 * The conditional and unconditional pulls and classifier-free guidance D_u + w (D_c - D_u)
 * (Ho & Salimans 2022) at sigma; and samples (Euler, 24 Karras steps, the same noise) under CFG,
 * classifier guidance with a blurrier classifier (Dhariwal & Nichol 2021: + w sigma^2 grad log p(c|x))
 * and autoguidance by a weaker model with doubled stds (Karras et al. 2024).
 */
export function guidancePanel(p: GuidanceParams) {
  const gmm = twoClassMixture();
  const weak = twoClassMixture(0.4);
  try {
    const D = mixtureDenoiser(gmm);
    const pts = arrowGrid(11);
    const labels = (n: number, c: number) => ({ classLabels: tensor(new Array<number>(n).fill(c), { dtype: 'int64' }) });
    const [cond, uncond, guided] = tidy(() => {
      const c = labels(pts.length, p.cls);
      return [pull(D, pts, p.sigma, c), pull(D, pts, p.sigma, labels(pts.length, 2)), pull(classifierFreeGuidance(D, { scale: p.w, nullClass: 2 }), pts, p.sigma, c)];
    });
    const logProb = (x: Tensor, sigma: Tensor, y: Tensor) => tidy(() => weak.logDensity(x, sigma, { classLabels: y }).sub(weak.logDensity(x, sigma))); // log p(c | x) + const
    const methods: Record<string, Denoiser> = {
      cfg: classifierFreeGuidance(D, { scale: p.w, nullClass: 2 }),
      classifier: classifierGuidance(D, logProb, { scale: p.w }),
      auto: autoguidance(D, mixtureDenoiser(weak), { scale: p.w }),
    };
    const sigmas = karrasSigmas(24, { sigmaMax: 10 });
    try {
      const samples = Object.fromEntries(
        GUIDANCE_METHODS.map((m) => [
          m,
          noGrad(() => tidy(() => pairs(runSampler('euler', methods[m], new Generator(p.seed).randn([128, 2]).mul(10), sigmas, { generator: new Generator(p.seed), cond: labels(128, p.cls) })))),
        ]),
      );
      return { w: p.w, sigma: p.sigma, cls: p.cls, points: pts, cond, uncond, guided, samples, means: tidy(() => pairs(gmm.means)), classes: gmm.classes };
    } finally {
      sigmas.dispose();
    }
  } finally {
    gmm.dispose();
    weak.dispose();
  }
}
