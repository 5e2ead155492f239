/**
 * The log-SNR picture of docs/training.md, section 3: the trainer's discrete cosine schedule
 * (T = 1000) tuned at 32 px and shifted by simple diffusion's 2 ln(32 / d) for d = 16, 32, 64
 * and 128 px (Hoogeboom et al. 2023, Sec. 3.1), with the linear and sigmoid (Chen 2023)
 * schedules unshifted for reference. Each curve comes from buildSchedule, as training builds it.
 *
 * Run: node dist/bench/logsnr-plot.js [--out docs/img/logsnr-shift.png]
 */
import { buildSchedule } from '../src/training/build';
import { resolveTrainConfig } from '../src/training/config';
import { writePNG } from '../src/util/image';
import { linePlotImage, Series } from '../src/util/plot';

const i = process.argv.indexOf('--out');
const out = i >= 0 ? process.argv[i + 1] : 'docs/img/logsnr-shift.png';

/** lambda_t = -2 ln sigma_t at every 10th step, against t / T. */
function curve(name: string, config: object): Series {
  const s = buildSchedule(resolveTrainConfig(config))!;
  const points: [number, number][] = [];
  for (let t = 0; t < s.T; t += 10) points.push([(t + 1) / s.T, -2 * Math.log(s.sigmas[t])]);
  return { name, points };
}

const series: Series[] = [
  ...[16, 32, 64, 128].map((d) =>
    curve(d === 32 ? 'cosine, 32 px (base 32: unshifted)' : `cosine shifted to ${d} px (${d < 32 ? '+' : '-'}${Math.abs(2 * Math.log(32 / d)).toFixed(2)})`, {
      betaSchedule: 'cosine',
      shiftBase: 32,
      imageSize: d,
    }),
  ),
  curve('linear (DDPM), unshifted', { betaSchedule: 'linear' }),
  curve('sigmoid (Chen 2023), unshifted', { betaSchedule: 'sigmoid' }),
];
writePNG(out, linePlotImage(series, { title: 'log-SNR lambda(t) = -2 ln sigma_t, T = 1000: shift 2 ln(base / d), base 32', xLabel: 't / T' }));
console.log(`wrote ${out}`);
