/**
 * How well an autoencoder reconstructs held-out images, and what its latents look like
 * (Rombach et al. 2022, Table 8 reports PSNR and SSIM of reconstructions; Sec. 4.3.2 and
 * App. G rescale the latents by 1 / std so they have unit variance before diffusion):
 *
 *   - PSNR and SSIM (src/eval/ssim.ts) of the reconstruction of the posterior mean, on
 *     uint8-quantized images (as they would be written), averaged over the images;
 *   - per latent channel, the mean and std of posterior samples z ~ q(z | x) (seeded), the
 *     mean posterior std exp(logvar / 2), and the scale factor 1 / std(z) over all elements.
 *
 * The caller may add the reconstruction FD (src/cli/autoencoder.ts does, with the frozen
 * emoji evaluator): that is a measurement after training, never a loss.
 *
 * @example
 *   const r = evaluateAutoencoder(net, testImages);  // r.psnr, r.ssim, r.latent.scaleFactor
 *   r.reconstructions.dispose();
 */
import { cat } from '../engine/create';
import { Generator } from '../engine/random';
import { keep, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Autoencoder, sampleLatent } from '../models/autoencoder';
import { LatentStats, summarizeLatents } from '../resolution/latent';
import { quantize } from './evaluate';
import { psnr, ssim } from './ssim';

export type { LatentStats };

export interface AutoencoderEvaluation {
  n: number;
  /** Mean over images of the PSNR in dB (data range 255) and of SSIM. */
  psnr: number;
  ssim: number;
  latent: LatentStats;
  /** The reconstructions, uint8 [N, C, H, W] (the caller disposes them). */
  reconstructions: Tensor;
}

/** Reconstruction quality and latent statistics on uint8 images [N, C, H, W] (see the module comment). */
export function evaluateAutoencoder(net: Autoencoder, images: Tensor, { batchSize = 64, seed = 0 }: { batchSize?: number; seed?: number } = {}): AutoencoderEvaluation {
  if (images.dtype !== 'uint8' || images.ndim !== 4) throw new TypeError(`evaluateAutoencoder: images must be uint8 [N, C, H, W], got ${images.dtype} [${images.shape.join(', ')}]`);
  const n = images.dim(0);
  const g = new Generator(seed);
  return noGrad(() =>
    tidy(() => {
      const recs: Tensor[] = [];
      const zs: Tensor[] = [];
      const sds: Tensor[] = [];
      let psnrSum = 0;
      let ssimSum = 0;
      for (let i = 0; i < n; i += batchSize) {
        const raw = images.narrow(0, i, Math.min(batchSize, n - i));
        const x = raw.float().div(127.5).sub(1); // [b, C, H, W] in [-1, 1]
        const { mean, logvar } = net.encode(x);
        const rec = quantize(net.decode(mean)); // uint8
        const [a, b] = [raw.float(), rec.float()];
        psnrSum += psnr(a, b, { dataRange: 255 }).sum().item();
        ssimSum += ssim(a, b, { dataRange: 255 }).sum().item();
        recs.push(rec);
        zs.push(sampleLatent(mean, logvar, g));
        sds.push(logvar.mul(0.5).exp());
      }
      const latent = summarizeLatents(cat(zs, 0), cat(sds, 0)); // z [N, zc, h, w]
      return { n, psnr: psnrSum / n, ssim: ssimSum / n, latent, reconstructions: keep(cat(recs, 0)) };
    }),
  );
}
