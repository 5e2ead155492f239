/**
 * 2-D toy distributions for diffusion: quick to train on, easy to look at. Each
 * sampler is `(n, generator) -> Tensor [n, 2]` (float32), drawing every random
 * number from the Generator. The shapes follow the usual constructions (sklearn's
 * make_moons and make_swiss_roll, FFJORD's toy_data.py), rescaled to mean ~0 and
 * per-coordinate variance ~1, so sigma_data = 1 fits all of them:
 *
 *   twoMoons        sklearn's moons + N(0, 0.1^2), centered at (0.5, 0.25), times 1.4
 *                   -> variances ~(1.49, 0.50)
 *   swissRoll       (t cos t, t sin t), t ~ U[1.5 pi, 4.5 pi], + N(0, 0.5^2), centered at its
 *                   exact mean (2, 2 / (3 pi)), divided by 7 -> variances ~(0.90, 0.99)
 *   eightGaussians  8 equal components on a circle of radius sqrt(2), std 0.2
 *                   -> variances 1.04; an exact GaussianMixture (eightGaussiansMixture())
 *   checkerboard    uniform on the 8 dark cells of a 4 x 4 board over [-sqrt(3), sqrt(3)]^2
 *                   -> variances exactly 1
 *
 * @example
 *   const g = new Generator(0);
 *   const x0 = twoMoons(512, g);          // [512, 2]
 *   const y = TOYS['checkerboard'](512, g);
 */
import { stack } from '../engine/create';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { GaussianMixture } from './mixture';

/** A 2-D toy sampler: n points [n, 2] (float32). */
export type ToySampler = (n: number, generator: Generator) => Tensor;

const checkN = (op: string, n: number) => {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${op}: n must be a non-negative integer, got ${n}`);
};

/** Two interleaved half circles (sklearn make_moons, noise 0.1), centered and scaled by 1.4. */
export function twoMoons(n: number, generator: Generator, { noise = 0.1 }: { noise?: number } = {}): Tensor {
  checkN('twoMoons', n);
  return tidy(() => {
    const t = generator.rand([n]).mul(Math.PI); // [n], angle on the half circle
    const upper = generator.rand([n]).lt(0.5); // [n], which moon
    const x = upper.where(t.cos(), t.cos().rsub(1)); // outer: cos t, inner: 1 - cos t
    const y = upper.where(t.sin(), t.sin().rsub(0.5)); // outer: sin t, inner: 0.5 - sin t
    const xy = stack([x.sub(0.5), y.sub(0.25)], 1); // [n, 2], centered
    return xy.add(generator.randn([n, 2]).mul(noise)).mul(1.4);
  });
}

/** The 2-D Swiss roll (sklearn make_swiss_roll's x-z plane, noise 0.5), centered and divided by 7. */
export function swissRoll(n: number, generator: Generator, { noise = 0.5 }: { noise?: number } = {}): Tensor {
  checkN('swissRoll', n);
  return tidy(() => {
    const t = generator
      .rand([n])
      .mul(3 * Math.PI)
      .add(1.5 * Math.PI); // [n], t ~ U[1.5 pi, 4.5 pi]
    const xy = stack([t.mul(t.cos()).sub(2), t.mul(t.sin()).sub(2 / (3 * Math.PI))], 1); // [n, 2], minus E[t cos t], E[t sin t]
    return xy.add(generator.randn([n, 2]).mul(noise)).div(7);
  });
}

/** The 8-Gaussians toy as an exact mixture: radius sqrt(2), std 0.2 (call dispose() when done). */
export function eightGaussiansMixture(): GaussianMixture {
  return GaussianMixture.ring(8, { radius: Math.SQRT2, std: 0.2 });
}

/** Eight Gaussians on a circle: samples of eightGaussiansMixture(). */
export function eightGaussians(n: number, generator: Generator): Tensor {
  checkN('eightGaussians', n);
  const gmm = eightGaussiansMixture();
  try {
    return gmm.sample(n, generator);
  } finally {
    gmm.dispose();
  }
}

/** Uniform on the dark cells of a 4 x 4 checkerboard over [-sqrt(3), sqrt(3)]^2 (FFJORD's, rescaled to unit variance). */
export function checkerboard(n: number, generator: Generator): Tensor {
  checkN('checkerboard', n);
  return tidy(() => {
    const x = generator.rand([n]).mul(4).sub(2); // [n], U[-2, 2)
    const row = generator.randint(0, 2, [n]).mul(2).sub(2); // [n], -2 or 0
    const y = generator.rand([n]).add(row).add(x.floor().remainder(2)); // [n]: the cell above or below, shifted on odd columns
    return stack([x, y], 1).mul(Math.sqrt(3) / 2);
  });
}

/** The toys by name, for command lines and configs. */
export const TOYS: Readonly<Record<'two-moons' | 'swiss-roll' | '8gaussians' | 'checkerboard', ToySampler>> = {
  'two-moons': (n, g) => twoMoons(n, g),
  'swiss-roll': (n, g) => swissRoll(n, g),
  '8gaussians': eightGaussians,
  checkerboard,
};
