/**
 * The nested U-Net of Matryoshka diffusion (Gu et al. 2023, "Matryoshka Diffusion Models",
 * Sec. 3.2 and Fig. 2): a U-Net for the smallest resolution (the core, models/unet.ts) sits
 * inside a shallow U-Net level for twice its size, which sits inside one for twice that, and
 * so on. Each level takes its own noisy image x^r and returns its own output; a level's
 * encoder features, downsampled, are added to the next-inner level's input features, and the
 * inner level's last decoder features, upsampled, enter the outer decoder. So information flows
 * both ways: the inner network's features reach every outer output, and the outer inputs reach
 * the inner outputs. Without the outer levels the core is a plain U-Net, so the first L levels
 * alone are a complete, smaller nested model: progressive training (MDM Sec. 3.3) runs only them.
 *
 * All levels share one conditioning vector (the core's noise and class embedding): the
 * resolutions share the time t, each on its own shifted schedule (resolution/matryoshka.ts).
 *
 * Parameter names: core.* (the UNet's own), outer.i.* for level i + 1 (conv_in, enc.j,
 * down, to_inner, up, dec.j, out_norm, out_conv).
 *
 * @example
 *   const net = new NestedUNet({ core: { inChannels: 3, imageSize: 16, modelChannels: 16, groups: 8 }, resolutions: [16, 32, 64] });
 *   const [y16, y32, y64] = net.forward([x16, x32, x64], cNoise); // each [B, 3, r, r]
 *   const [z16] = net.forward([x16], cNoise);                      // the core alone (progressive training)
 */
import { cat } from '../engine/create';
import { Generator } from '../engine/random';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Conv2d, InitOptions } from '../nn/layers';
import { Module } from '../nn/module';
import { Downsample, Upsample } from '../nn/resample';
import { positiveInt, rejectUnknownKeys } from './common';
import { GroupNorm32, resolveUNetConfig, ResBlock, UNet, UNetConfig, zeroInit } from './unet';

export interface NestedUNetConfig {
  /** The core U-Net at the smallest resolution (its imageSize must be resolutions[0]). */
  core: UNetConfig;
  /** The nested resolutions, smallest first, each twice the one before (e.g. [16, 32, 64]). */
  resolutions: number[];
  /** Channels of every outer level; null = the core's first-level width (modelChannels x channelMult[0]). Default null. */
  outerChannels: number | null;
  /** Residual blocks per outer level in the encoder (the decoder has one more); null = the core's numResBlocks. Default null. */
  outerResBlocks: number | null;
}

/**
 * Fills defaults and checks every field; errors name the field and the value.
 *
 * @example
 *   resolveNestedUNetConfig({ core: { imageSize: 16, inChannels: 3 }, resolutions: [16, 32] }).outerChannels // 64
 */
export function resolveNestedUNetConfig(config: Partial<Omit<NestedUNetConfig, 'core'>> & { core?: Partial<UNetConfig> }): NestedUNetConfig {
  const who = 'NestedUNet';
  rejectUnknownKeys(who, config, { core: 0, resolutions: 0, outerChannels: 0, outerResBlocks: 0 });
  const core = resolveUNetConfig(config.core ?? {});
  const res = config.resolutions;
  if (!Array.isArray(res) || res.length === 0) throw new TypeError(`${who}: resolutions must be a non-empty list such as [16, 32, 64], got ${JSON.stringify(res)}`);
  res.forEach((r, i) => positiveInt(who, `resolutions[${i}]`, r));
  res.forEach((r, i) => {
    if (i > 0 && r !== 2 * res[i - 1]) throw new TypeError(`${who}: each resolution must be twice the one before, got ${JSON.stringify(res)}`);
  });
  if (core.imageSize !== res[0]) throw new TypeError(`${who}: the core's imageSize (${core.imageSize}) must be the smallest resolution (${res[0]})`);
  const outerChannels = config.outerChannels ?? null;
  const outerResBlocks = config.outerResBlocks ?? null;
  if (outerChannels !== null) positiveInt(who, 'outerChannels', outerChannels);
  if (outerResBlocks !== null) positiveInt(who, 'outerResBlocks', outerResBlocks);
  const ch = outerChannels ?? core.modelChannels * core.channelMult[0];
  if (ch % core.groups) throw new TypeError(`${who}: the core's groups (${core.groups}) must divide outerChannels, got ${ch}`);
  return { core, resolutions: [...res], outerChannels, outerResBlocks };
}

/** A level's result: its last decoder features (what the next-outer level upsamples) and the outputs of it and every inner level, smallest first. */
interface LevelOut {
  features: Tensor;
  outs: Tensor[];
}

/**
 * One outer level at resolution r around an inner network at r / 2 (MDM Fig. 2): encoder blocks at
 * r, a 2x downsample whose features (projected to the inner width) are added to the inner level's
 * input features, the inner level's features upsampled and concatenated with the encoder skips.
 */
class OuterLevel extends Module {
  conv_in: Conv2d;
  enc: ResBlock[];
  down: Downsample;
  to_inner: Conv2d;
  up: Upsample;
  dec: ResBlock[];
  out_norm: GroupNorm32;
  out_conv: Conv2d;

  constructor(inChannels: number, ch: number, innerCh: number, blocks: number, embDim: number, o: InitOptions & { groups: number; dropout: number; dropoutGenerator: Generator; resample: 'conv' | 'avgpool' }) {
    super();
    const { generator } = o;
    const res = (i: number, j: number) => new ResBlock(i, j, embDim, o);
    this.conv_in = this.child('conv_in', new Conv2d(inChannels, ch, 3, { padding: 1, generator }));
    this.enc = this.children(
      'enc',
      Array.from({ length: blocks }, () => res(ch, ch)),
    );
    this.down = this.child('down', new Downsample(ch, { mode: o.resample, generator }));
    this.to_inner = this.child('to_inner', new Conv2d(ch, innerCh, 1, { generator }));
    this.up = this.child('up', new Upsample(innerCh, { withConv: o.resample === 'conv', generator }));
    this.dec = this.children(
      'dec',
      Array.from({ length: blocks + 1 }, (_, k) => res((k === 0 ? innerCh : ch) + ch, ch)),
    );
    this.out_norm = this.child('out_norm', new GroupNorm32(o.groups, ch));
    this.out_conv = this.child('out_conv', zeroInit(new Conv2d(ch, inChannels, 3, { padding: 1, generator })));
  }

  /** x: [B, C, r, r]; inner: the inner levels, given the features to add to their input ([B, innerCh, r/2, r/2]); inject: the next-outer level's features to add to this one's ([B, ch, r, r]) or null. */
  forward(x: Tensor, emb: Tensor, inner: (inject: Tensor) => LevelOut, inject: Tensor | null): LevelOut {
    return tidy(() => {
      let h = this.conv_in.forward(x); // [B, ch, r, r]
      if (inject) h = h.add(inject);
      const skips = [h];
      for (const b of this.enc) skips.push((h = b.forward(h, emb)));
      const { features, outs } = inner(this.to_inner.forward(this.down.forward(h))); // [B, innerCh, r/2, r/2]
      h = this.up.forward(features); // [B, innerCh, r, r]
      for (const b of this.dec) h = b.forward(cat([h, skips.pop()!], 1), emb); // [B, ch, r, r]
      return { features: h, outs: [...outs, this.out_conv.forward(this.out_norm.forward(h).silu())] };
    });
  }
}

/** The nested U-Net (see the file comment). */
export class NestedUNet extends Module {
  readonly config: NestedUNetConfig;
  core: UNet;
  outer: OuterLevel[];

  constructor(config: Parameters<typeof resolveNestedUNetConfig>[0], { generator, dropoutGenerator = new Generator(0) }: InitOptions & { dropoutGenerator?: Generator } = {}) {
    super();
    const c = (this.config = resolveNestedUNetConfig(config));
    this.core = this.child('core', new UNet(c.core, { generator, dropoutGenerator }));
    const { core } = c;
    const ch = c.outerChannels ?? core.modelChannels * core.channelMult[0];
    const blocks = c.outerResBlocks ?? core.numResBlocks;
    const o = { generator, groups: core.groups, dropout: core.dropout, dropoutGenerator, resample: core.resample };
    this.outer = this.children(
      'outer',
      c.resolutions.slice(1).map((_, i) => new OuterLevel(core.inChannels, ch, i === 0 ? core.modelChannels * core.channelMult[0] : ch, blocks, 4 * core.modelChannels, o)),
    );
  }

  /** The class id that means "no label"; null without classes. */
  get nullClass(): number | null {
    return this.core.nullClass;
  }

  /** The nested resolutions, smallest first. */
  get resolutions(): number[] {
    return this.config.resolutions;
  }

  /** The parameters of level l (0: the core; l > 0: outer level l), for progressive training. */
  levelParameters(l: number): Tensor[] {
    if (!(Number.isInteger(l) && l >= 0 && l < this.resolutions.length)) throw new RangeError(`NestedUNet.levelParameters: level must be in 0..${this.resolutions.length - 1}, got ${l}`);
    return l === 0 ? this.core.parameters() : this.outer[l - 1].parameters();
  }

  /**
   * xs: the noisy inputs of the first L levels, smallest first, xs[l] [B, C, r_l, r_l] (already
   * scaled by the preconditioner's c_in); cNoise [B] the shared noise level; classLabels [B]
   * int64 (default the null class). Returns the L outputs, each [B, C, r_l, r_l].
   */
  forward(xs: Tensor[], cNoise: Tensor, classLabels?: Tensor, guidance?: Tensor): Tensor[] {
    const L = xs.length;
    if (L < 1 || L > this.resolutions.length) throw new TypeError(`NestedUNet: expected 1..${this.resolutions.length} inputs (resolutions ${this.resolutions.join(', ')}), got ${L}`);
    xs.forEach((x, l) => {
      const r = this.resolutions[l];
      if (x.ndim !== 4 || x.dim(1) !== this.config.core.inChannels || x.dim(2) !== r || x.dim(3) !== r)
        throw new TypeError(`NestedUNet: input ${l} must have shape [B, ${this.config.core.inChannels}, ${r}, ${r}], got [${x.shape.join(', ')}]`);
    });
    return tidy(() => {
      const emb = this.core.embed(cNoise, classLabels, xs[0], guidance); // [B, 4C], shared by every level
      let run = (inject: Tensor | null): LevelOut => this.#core(xs[0], emb, inject);
      for (let l = 1; l < L; l++) {
        const inner = run;
        const level = this.outer[l - 1];
        run = (inject) => level.forward(xs[l], emb, inner, inject);
      }
      return run(null).outs;
    });
  }

  /** The core U-Net's forward (UNet.forward) with the outer level's features added after conv_in, returning its last features too. */
  #core(x: Tensor, emb: Tensor, inject: Tensor | null): LevelOut {
    const net = this.core;
    let h = net.conv_in.forward(x); // [B, C mult_0, r0, r0]
    if (inject) h = h.add(inject);
    const skips = [h];
    for (const b of net.enc) {
      h = b instanceof Downsample ? b.forward(h) : b.forward(h, emb);
      skips.push(h);
    }
    for (const b of net.mid) h = b.forward(h, emb);
    for (const b of net.dec) h = b.forward(cat([h, skips.pop()!], 1), emb);
    return { features: h, outs: [net.out_conv.forward(net.out_norm.forward(h).silu())] };
  }
}
