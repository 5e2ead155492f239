/**
 * The cost of a U-Net forward pass in floating-point operations (2 per multiply-add), counted
 * from its layers: every convolution (C_out C_in k^2 per output pixel), linear layer, and
 * attention's two matrix products (2 (HW)^2 C each); normalizations and activations are left
 * out (a few per element, under 1% here). Training costs about 3x the forward (forward plus a
 * backward of twice its cost), so training compute is ~3 x images x unetFlops. Used to compare
 * a cascade with a direct model at matched compute (docs/resolution.md).
 *
 * @example
 *   unetFlops(new UNet({ inChannels: 3, imageSize: 64, modelChannels: 16, channelMult: [1, 2, 4, 4] }), 64); // ~1e9
 */
import { Conv2d, Linear } from '../nn/layers';
import { NestedUNet } from './nested-unet';
import { Downsample } from '../nn/resample';
import { AttentionBlock, ResBlock, UNet, UNetBlock } from './unet';

/** 2 C_out C_in/groups k_h k_w per output pixel, over h x w output pixels. */
function convFlops(m: Conv2d, h: number, w: number): number {
  return 2 * m.weight.size * h * w;
}

/** 2 in out per row. */
function linearFlops(m: Linear | null, rows = 1): number {
  return m ? 2 * m.weight.size * rows : 0;
}

function resFlops(b: ResBlock, h: number, w: number): number {
  return convFlops(b.conv1, h, w) + convFlops(b.conv2, h, w) + (b.skip ? convFlops(b.skip, h, w) : 0) + linearFlops(b.emb_proj);
}

/** qkv and proj_out (1 x 1 convs), and Q K^T and A V: 2 (HW)^2 C each. */
function attentionFlops(a: AttentionBlock, h: number, w: number): number {
  return convFlops(a.qkv, h, w) + convFlops(a.proj_out, h, w) + 2 * 2 * (h * w) ** 2 * a.channels;
}

/** A stage: its residual block and attention at h x w, and its upsampling conv at 2h x 2w. */
function blockFlops(b: UNetBlock, h: number, w: number): number {
  return resFlops(b.res, h, w) + (b.attn ? attentionFlops(b.attn, h, w) : 0) + (b.up?.conv ? convFlops(b.up.conv, 2 * h, 2 * w) : 0);
}

/** Forward FLOPs of one image of size H x W (batch 1), the noise, class, guidance and augmentation embeddings included. */
export function unetFlops(net: UNet, H: number, W = H): number {
  return coreFlops(net, H, W) + convFlops(net.out_conv, H, W);
}

/**
 * Forward FLOPs of a nested (Matryoshka) U-Net on one sample of its first `levels` resolutions
 * (default all): the core at the smallest, plus each outer level's convolutions and output head.
 *
 * @example
 *   nestedUnetFlops(new NestedUNet({ core: { inChannels: 3, imageSize: 16, modelChannels: 32, channelMult: [1, 2, 2] }, resolutions: [16, 32, 64] })); // ~1.1e9
 */
export function nestedUnetFlops(net: NestedUNet, levels = net.resolutions.length): number {
  const r = net.resolutions;
  let total = unetFlops(net.core, r[0]);
  for (let l = 1; l < levels; l++) {
    const o = net.outer[l - 1];
    const [h, half] = [r[l], r[l] / 2];
    total += convFlops(o.conv_in, h, h) + convFlops(o.out_conv, h, h) + convFlops(o.to_inner, half, half);
    for (const b of [...o.enc, ...o.dec]) total += resFlops(b, h, h);
    if (o.down.conv) total += convFlops(o.down.conv, half, half);
    if (o.up.conv) total += convFlops(o.up.conv, h, h);
  }
  return total;
}

/** The U-Net without its output conv (the nested network's core shares this count). */
function coreFlops(net: UNet, H: number, W: number): number {
  let [h, w] = [H, W];
  let total = convFlops(net.conv_in, h, w);
  for (const m of [net.map_layer0, net.map_layer1, net.map_guidance0, net.map_guidance1, net.map_aug0, net.map_aug1]) total += linearFlops(m);
  for (const b of net.enc) {
    if (b instanceof Downsample) {
      [h, w] = [h / 2, w / 2];
      if (b.conv) total += convFlops(b.conv, h, w);
    } else total += blockFlops(b, h, w);
  }
  for (const b of net.mid) total += blockFlops(b, h, w);
  for (const b of net.dec) {
    total += blockFlops(b, h, w);
    if (b.up) [h, w] = [2 * h, 2 * w];
  }
  return total;
}
