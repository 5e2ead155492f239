/**
 * Networks: a residual MLP denoiser for 2-D data (mlp.ts), the DDPM/ADM U-Net (unet.ts)
 * and the EDM2 magnitude-preserving U-Net (edm2.ts). The MLP and the U-Net take
 * (x, cNoise, classLabels?) and leave the meaning of cNoise and of their output to the
 * preconditioner that wraps them into a Denoiser.
 *
 * @example
 *   const mlp = new MLPDenoiserNet({ hidden: 256, depth: 4 });
 *   const unet = new UNet(UNET_BENCH_2M);
 *   unet.forward(x, cNoise); // [B, 1, 32, 32] -> [B, 1, 32, 32]
 */
export { classLabelsOrNull, noiseEmbedding, NoiseEmbeddingKind } from './common';
export * from './mlp';
export * from './unet';
export * from './edm2';
export * from './classifier';
export { unetFlops } from './flops';
export * from './nested-unet';
