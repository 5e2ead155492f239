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
  let [h, w] = [H, W];
  let total = convFlops(net.conv_in, h, w) + convFlops(net.out_conv, h, w);
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
