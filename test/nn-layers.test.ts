// Every layer of src/nn (and the U-Net's blocks) against PyTorch 1.13: the same weights,
// loaded strictly from test/fixtures/nn.safetensors (scripts/fixtures/nn.py), give the same
// outputs and the same gradients w.r.t. inputs and parameters, to float32 tolerance:
//   max |actual - expected| <= 1e-4 * (1 + max |expected|)   (see test/nn-fixture.ts)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, setNumThreads } from '../src/engine';
import { Conv2d, ConvTranspose2d, Downsample, Embedding, FourierFeatures, GroupNorm, LayerNorm, Linear, Module, MultiheadAttention, SinusoidalEmbedding, Upsample } from '../src/nn';
import { AttentionBlock, ResBlock } from '../src/models';
import { checkCase, fixture, spec } from './nn-fixture';

// Tiny tensors: one thread beats OpenMP's overhead (and its spinning when cores are busy).
setNumThreads(1);

/* eslint-disable @typescript-eslint/no-explicit-any -- fixture specs are JSON */
type Build = (args: any[], opts: any) => Module & { forward(...xs: unknown[]): any };
const BUILD: Record<string, Build> = {
  Linear: ([i, o], opts) => new Linear(i, o, opts),
  Conv2d: ([i, o, k], opts) => new Conv2d(i, o, k, opts),
  ConvTranspose2d: ([i, o, k], opts) => new ConvTranspose2d(i, o, k, opts),
  GroupNorm: ([g, c], opts) => new GroupNorm(g, c, opts),
  LayerNorm: ([shape], opts) => new LayerNorm(shape, opts),
  Embedding: ([n, d], opts) => new Embedding(n, d, opts),
  MultiheadAttention: ([e, h], opts) => new MultiheadAttention(e, h, opts),
  SinusoidalEmbedding: ([d], opts) => new SinusoidalEmbedding(d, opts),
  FourierFeatures: ([d, scale], opts) => new FourierFeatures(d, scale, opts),
  Downsample: ([c], opts) => new Downsample(c, opts),
  Upsample: ([c], opts) => new Upsample(c, opts),
  ResBlock: ([i, o, e], opts) => new ResBlock(i, o, e, { ...opts, dropoutGenerator: new Generator(0) }),
  AttentionBlock: ([c, h], opts) => new AttentionBlock(c, h, opts),
};

const LAYER_CASES = Object.keys(fixture().metadata).filter((k) => {
  const s = fixture().metadata[k];
  return s.startsWith('{') && (JSON.parse(s) as { kind: string }).kind in BUILD;
});

test('the fixture covers every layer kind', () => {
  const kinds = new Set(LAYER_CASES.map((k) => spec(k).kind));
  assert.deepEqual([...kinds].sort(), Object.keys(BUILD).sort());
});

for (const name of LAYER_CASES) {
  test(`${name}: output and gradients match PyTorch`, () => {
    const s = spec(name);
    const m = BUILD[s.kind](s.args ?? [], s.opts ?? {});
    checkCase(name, m);
    m.dispose();
  });
}
