/**
 * Down- and upsampling by 2, the three ways the U-Nets of the papers do it.
 *
 * @example
 *   new Downsample(64, { mode: 'conv' }).forward(x);   // strided 3x3 conv
 *   new Downsample(64, { mode: 'avgpool' }).forward(x);
 *   new Upsample(64).forward(x);                        // nearest x2, then 3x3 conv
 */
import * as F from '../engine/functional';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conv2d, InitOptions } from './layers';
import { Module } from './module';

export class Downsample extends Module {
  conv: Conv2d | null;
  constructor(
    readonly channels: number,
    { mode = 'conv', outChannels = channels, generator }: InitOptions & { mode?: 'conv' | 'avgpool'; outChannels?: number } = {},
  ) {
    super();
    if (mode !== 'conv' && mode !== 'avgpool') throw new TypeError(`Downsample: mode must be conv or avgpool, got ${mode}`);
    if (mode === 'avgpool' && outChannels !== channels) throw new TypeError('Downsample: avgpool keeps the channel count');
    this.conv = mode === 'conv' ? this.child('conv', new Conv2d(channels, outChannels, 3, { stride: 2, padding: 1, generator })) : null;
  }
  forward(x: Tensor): Tensor {
    return this.conv ? this.conv.forward(x) : F.avgPool2d(x, 2);
  }
}

export class Upsample extends Module {
  conv: Conv2d | null;
  constructor(
    readonly channels: number,
    { withConv = true, outChannels = channels, generator }: InitOptions & { withConv?: boolean; outChannels?: number } = {},
  ) {
    super();
    this.conv = withConv ? this.child('conv', new Conv2d(channels, outChannels, 3, { padding: 1, generator })) : null;
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const up = F.interpolate(x, { scaleFactor: 2, mode: 'nearest' });
      return this.conv ? this.conv.forward(up) : up;
    });
  }
}
