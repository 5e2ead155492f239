/**
 * Multi-head attention (Vaswani et al. 2017), self- or cross-, with the parameter
 * names and layout of torch.nn.MultiheadAttention (batch first), so weights move
 * between the two unchanged.
 *
 * @example
 *   const attn = new MultiheadAttention(64, 4);
 *   const y = attn.forward(x);                // self-attention, x: [B, L, 64]
 *   const z = attn2.forward(x, context);      // cross-attention (kdim/vdim = context dim)
 */
import { zeros } from '../engine/create';
import * as F from '../engine/functional';
import { noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { initGenerator, xavierUniform } from './init';
import { InitOptions, Linear } from './layers';
import { Module } from './module';

export interface AttentionOptions extends InitOptions {
  /** Key feature size (default embedDim); differs for cross-attention. */
  kdim?: number;
  /** Value feature size (default kdim). */
  vdim?: number;
  bias?: boolean;
}

export class MultiheadAttention extends Module {
  /** [3E, E] when kdim = vdim = E (PyTorch's packed projection). */
  in_proj_weight: Tensor | null = null;
  q_proj_weight: Tensor | null = null;
  k_proj_weight: Tensor | null = null;
  v_proj_weight: Tensor | null = null;
  in_proj_bias: Tensor | null;
  out_proj: Linear;
  readonly headDim: number;

  constructor(
    readonly embedDim: number,
    readonly numHeads: number,
    o: AttentionOptions = {},
  ) {
    super();
    if (embedDim % numHeads) throw new TypeError(`MultiheadAttention: embedDim (${embedDim}) must be divisible by numHeads (${numHeads})`);
    this.headDim = embedDim / numHeads;
    const kdim = o.kdim ?? embedDim;
    const vdim = o.vdim ?? kdim;
    const gen = o.generator ?? initGenerator();
    const E = embedDim;
    if (kdim === E && vdim === E) {
      this.in_proj_weight = this.param('in_proj_weight', xavierUniform([3 * E, E], E, 3 * E, 1, gen));
    } else {
      this.q_proj_weight = this.param('q_proj_weight', xavierUniform([E, E], E, E, 1, gen));
      this.k_proj_weight = this.param('k_proj_weight', xavierUniform([E, kdim], kdim, E, 1, gen));
      this.v_proj_weight = this.param('v_proj_weight', xavierUniform([E, vdim], vdim, E, 1, gen));
    }
    const bias = o.bias ?? true;
    this.in_proj_bias = bias ? this.param('in_proj_bias', zeros([3 * E])) : null;
    this.out_proj = this.child('out_proj', new Linear(E, E, { bias, generator: gen }));
    if (this.out_proj.bias) noGrad(() => this.out_proj.bias!.zero_());
  }

  /**
   * query [B, Lq, E]; key [B, Lk, kdim] and value [B, Lk, vdim] default to query
   * (self-attention). mask: bool (true = attend) or additive, broadcast to [B, H, Lq, Lk].
   */
  forward(query: Tensor, key: Tensor = query, value: Tensor = key, { mask }: { mask?: Tensor } = {}): Tensor {
    return tidy(() => {
      const E = this.embedDim;
      const [wq, wk, wv] = this.in_proj_weight ? this.in_proj_weight.chunk(3, 0) : [this.q_proj_weight!, this.k_proj_weight!, this.v_proj_weight!];
      const [bq, bk, bv] = this.in_proj_bias ? this.in_proj_bias.chunk(3, 0) : [null, null, null];
      const heads = (x: Tensor) => x.reshape([x.dim(0), x.dim(1), this.numHeads, this.headDim]).transpose(1, 2); // [B, H, L, D]
      const q = heads(F.linear(query, wq, bq));
      const k = heads(F.linear(key, wk, bk));
      const v = heads(F.linear(value, wv, bv));
      const o = F.scaledDotProductAttention(q, k, v, { mask }); // [B, H, Lq, D]
      return this.out_proj.forward(o.transpose(1, 2).reshape([query.dim(0), query.dim(1), E]));
    });
  }
}
