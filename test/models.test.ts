// The networks of src/models against their PyTorch twins in scripts/fixtures/nn.py:
// - outputs and gradients (input, c_noise, every parameter) on fixture weights, to
//   max |actual - expected| <= 1e-4 * (1 + max |expected|) (float32; see test/nn-fixture.ts);
// - float64 gradcheck w.r.t. the input on a tiny U-Net and MLP;
// - state dict round trip Diffuse -> PyTorch (load_state_dict strict) -> Diffuse;
// - the benchmark preset's parameter count, derived from the PyTorch model;
// - clear errors for bad input sizes and configs; no leak over 50 training passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { autocast, dispose, Generator, gradcheck, loadSafetensors, memory, noGrad, setNumThreads, tensor, tidy } from '../src/engine';
import { Module, saveModule } from '../src/nn';
import { MLP_DENOISER_DEFAULTS, MLPDenoiserNet, resolveUNetConfig, UNET_BENCH_2M, UNET_DEFAULTS, UNet, UNetConfig } from '../src/models';
import { assertClose, checkCase, fixture, NN_PY, PYTHON, spec } from './nn-fixture';

// Tiny tensors: one thread beats OpenMP's overhead (and its spinning when cores are busy).
setNumThreads(1);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-models-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function build(kind: string, config: Record<string, unknown>): UNet | MLPDenoiserNet {
  if (kind === 'UNet') return new UNet(config);
  if (kind === 'MLPDenoiserNet') return new MLPDenoiserNet(config);
  throw new Error(`unknown network kind ${kind}`);
}

/** Moves every parameter off its init (zero-inits included) so comparisons are not trivially zero. */
function perturb(m: Module, seed: number, std = 0.1): void {
  const g = new Generator(seed);
  noGrad(() => {
    for (const p of m.parameters()) tidy(() => p.add_(g.randn(p.shape, { dtype: p.dtype }).mul(std)));
  });
}

// ------------------------------------------------------------------ against PyTorch
for (const name of ['unet_rgb', 'unet_gray', 'mlp', 'mlp_fourier']) {
  test(`${name}: output and gradients match PyTorch`, () => {
    const s = spec(name);
    const net = build(s.kind, s.config!);
    checkCase(name, net);
    net.dispose();
  });
}

test('the fixture cases cover grayscale and RGB, classes, both resamplers and both embeddings', () => {
  const rgb = spec('unet_rgb').config as unknown as UNetConfig;
  const gray = spec('unet_gray').config as unknown as UNetConfig;
  assert.deepEqual([rgb.inChannels, gray.inChannels].sort(), [1, 3]);
  assert.ok(rgb.numClasses !== null && gray.numClasses === null);
  assert.deepEqual(new Set([rgb.resample, gray.resample]), new Set(['conv', 'avgpool']));
  assert.deepEqual(new Set([rgb.noiseEmbedding, gray.noiseEmbedding]), new Set(['sinusoidal', 'fourier']));
  assert.deepEqual(fixture().tensors['unet_rgb.input.x'].shape.slice(2), [8, 12], 'a non-square input other than imageSize');
});

// ------------------------------------------------------------------ sizes and defaults
function manifest(name: string): { config: UNetConfig; shapes: Record<string, number[]>; numParameters: number } {
  return JSON.parse(fixture().metadata[name]);
}

function assertSameStructure(net: UNet, m: ReturnType<typeof manifest>): void {
  const shapes = Object.fromEntries(Object.entries(net.stateDict()).map(([k, t]) => [k, t.shape]));
  assert.deepEqual(shapes, m.shapes);
  assert.equal(net.numParameters(), m.numParameters);
}

test('UNET_BENCH_2M: about 2M parameters, the same count and shapes as the PyTorch model', () => {
  const m = manifest('unet_bench2m');
  assert.deepEqual(resolveUNetConfig(UNET_BENCH_2M), m.config, 'scripts/fixtures/nn.py UNET_BENCH_2M must mirror src/models/unet.ts');
  const net = new UNet(UNET_BENCH_2M);
  assertSameStructure(net, m);
  const n = net.numParameters();
  assert.ok(n > 1.5e6 && n < 2.5e6, `about 2M parameters, got ${n}`);
  assert.equal(net.config.inChannels, 1);
  assert.equal(net.config.imageSize, 32);
  net.dispose();
});

test('UNet defaults match the PyTorch twin (config and parameter shapes)', () => {
  const m = manifest('unet_default');
  assert.deepEqual({ ...UNET_DEFAULTS }, m.config);
  const net = new UNet();
  assertSameStructure(net, m);
  net.dispose();
});

test('MLPDenoiserNet defaults', () => {
  const net = new MLPDenoiserNet();
  assert.deepEqual(net.config, { ...MLP_DENOISER_DEFAULTS });
  assert.deepEqual({ hidden: net.config.hidden, depth: net.config.depth, embedDim: net.config.embedDim }, { hidden: 256, depth: 4, embedDim: 64 });
  // proj_in + map_layer0 + depth hidden layers + proj_out
  assert.equal(net.numParameters(), 2 * 256 + 256 + (64 * 256 + 256) + 4 * (256 * 256 + 256) + (256 * 2 + 2));
  net.dispose();
});

test('UNet works at sizes other than imageSize (attention stays at its level) and zero-inits its output', () => {
  const net = new UNet({ modelChannels: 32, channelMult: [1, 2], attentionResolutions: [16], imageSize: 32, inChannels: 3, numClasses: 5 });
  const g = new Generator(1);
  const out = noGrad(() => tidy(() => net.forward(g.randn([2, 3, 24, 40]), tensor([1, 500]), tensor([0, 5], { dtype: 'int64' }))));
  assert.deepEqual(out.shape, [2, 3, 24, 40]);
  assert.equal(
    noGrad(() => tidy(() => out.abs().max().item())),
    0,
    'ADM zero-initializes the last conv',
  );
  assert.equal(net.nullClass, 5);
  out.dispose();
  net.dispose();
});

test('UNet under autocast: bf16 convs, GroupNorm in float32 (ADM GroupNorm32), close to the float32 output', () => {
  const net = new UNet({ modelChannels: 16, channelMult: [1, 2], attentionResolutions: [16], imageSize: 32, groups: 4, numClasses: 2 }).eval();
  perturb(net, 11);
  const g = new Generator(12);
  noGrad(() =>
    tidy(() => {
      const x = g.randn([2, 1, 16, 16]);
      const c = tensor([3, 600]);
      const ref = net.forward(x, c);
      const bf = autocast(() => net.forward(x, c));
      assert.equal(bf.dtype, 'bfloat16');
      const err = bf.float().sub(ref).abs().max().item();
      const scale = ref.abs().max().item();
      assert.ok(err <= 0.05 * (1 + scale), `bf16 error ${err} vs scale ${scale}`);
    }),
  );
  net.dispose();
});

test('UNet dropout: random in training mode (from net.dropoutGenerator), off in eval mode', () => {
  const net = new UNet({ modelChannels: 8, channelMult: [1, 2], attentionResolutions: [], imageSize: 8, groups: 4, dropout: 0.3 });
  perturb(net, 13);
  noGrad(() =>
    tidy(() => {
      const x = new Generator(14).randn([1, 1, 8, 8]);
      const c = tensor([5]);
      const a = net.train().forward(x, c);
      const b = net.forward(x, c);
      assert.ok(a.sub(b).abs().max().item() > 0, 'two training passes draw different masks');
      const e1 = net.eval().forward(x, c);
      assert.deepEqual(e1.toFloat64Array(), net.forward(x, c).toFloat64Array());
    }),
  );
  net.dispose();
});

// ------------------------------------------------------------------ gradcheck (float64)
const TINY_UNET: Partial<UNetConfig> = {
  inChannels: 2,
  imageSize: 4,
  modelChannels: 4,
  channelMult: [1, 2],
  numResBlocks: 1,
  attentionResolutions: [2],
  numHeads: 2,
  groups: 2,
  numClasses: 3,
};

test('gradcheck (float64): tiny U-Net w.r.t. its input', () => {
  const net = new UNet(TINY_UNET).to({ dtype: 'float64' });
  perturb(net, 3);
  const g = new Generator(4);
  const x = g.randn([1, 2, 4, 4], { dtype: 'float64' });
  const c = tensor([700], { dtype: 'float64' });
  const labels = tensor([1], { dtype: 'int64' });
  const r = gradcheck((xx) => net.forward(xx, c, labels), [x]);
  assert.ok(r.ok, `max error ${r.maxError}`);
  dispose([x, c, labels]);
  net.dispose();
});

test('gradcheck (float64): MLP denoiser w.r.t. its input', () => {
  const net = new MLPDenoiserNet({ hidden: 16, depth: 2, embedDim: 8, numClasses: 2, embedding: 'fourier' }).to({ dtype: 'float64' });
  perturb(net, 5);
  const g = new Generator(6);
  const x = g.randn([4, 2], { dtype: 'float64' });
  const c = tensor([-1, 0, 0.5, 1], { dtype: 'float64' });
  const labels = tensor([0, 1, 2, 2], { dtype: 'int64' });
  const r = gradcheck((xx) => net.forward(xx, c, labels), [x]);
  assert.ok(r.ok, `max error ${r.maxError}`);
  dispose([x, c, labels]);
  net.dispose();
});

// ------------------------------------------------------------------ round trip
const inPath = (kind: string) => path.join(tmp, `${kind}.in.safetensors`);
const outPath = (kind: string) => path.join(tmp, `${kind}.out.safetensors`);

/** Checks what PyTorch wrote back for `net`: the same state (bit for bit, strict load) and the same function. */
function checkRoundtrip(kind: string, net: UNet | MLPDenoiserNet): void {
  const { tensors, metadata } = loadSafetensors(outPath(kind));
  try {
    const state = Object.fromEntries(
      Object.entries(tensors)
        .filter(([k]) => k.startsWith('state.'))
        .map(([k, t]) => [k.slice(6), t]),
    );
    const back = build(kind, JSON.parse(metadata.config));
    back.loadStateDict(state, { strict: true });
    const mine = net.stateDict();
    assert.deepEqual(Object.keys(back.stateDict()).sort(), Object.keys(mine).sort());
    for (const [k, t] of Object.entries(back.stateDict())) {
      assert.equal(t.dtype, mine[k].dtype, k);
      assert.deepEqual(Buffer.from(t.bytes()), Buffer.from(mine[k].bytes()), `${k} changed in the round trip`);
    }
    const [x, c, labels] = (JSON.parse(metadata.inputs) as string[]).map((k) => tensors[`input.${k}`]);
    noGrad(() =>
      tidy(() => {
        const ours = net.forward(x, c, labels);
        assertClose(`${kind} round trip output (PyTorch ran the Diffuse weights)`, ours, tensors.output);
        assert.deepEqual(Buffer.from(back.forward(x, c, labels).bytes()), Buffer.from(ours.bytes()), 'the reloaded network computes the same bits');
      }),
    );
    back.dispose();
  } finally {
    dispose(tensors);
  }
}

test('state dict round trip Diffuse -> PyTorch -> Diffuse (U-Net and MLP denoiser)', () => {
  const unet = new UNet({ ...TINY_UNET, inChannels: 3, imageSize: 8, modelChannels: 8, groups: 4, attentionResolutions: [4], noiseEmbedding: 'fourier', resample: 'avgpool' });
  const mlp = new MLPDenoiserNet({ hidden: 32, depth: 3, embedDim: 16, numClasses: 4 });
  const nets = { UNet: unet, MLPDenoiserNet: mlp };
  for (const [kind, net] of Object.entries(nets)) {
    perturb(net, kind.length);
    net.eval();
    saveModule(net, inPath(kind), { kind, config: JSON.stringify(net.config) });
  }
  // One PyTorch start for both: load_state_dict(strict=True), run, save its own state_dict().
  execFileSync(PYTHON, [NN_PY, 'roundtrip', ...Object.keys(nets).flatMap((k) => [inPath(k), outPath(k)])], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const [kind, net] of Object.entries(nets)) checkRoundtrip(kind, net);
  unet.dispose();
  mlp.dispose();
});

// ------------------------------------------------------------------ errors
test('UNet: a bad input size is a clear error naming the size', () => {
  const net = new UNet({ modelChannels: 32, channelMult: [1, 2, 2], attentionResolutions: [] });
  const g = new Generator(0);
  const c = tensor([1]);
  tidy(() => {
    assert.throws(() => net.forward(g.randn([1, 1, 30, 32]), c), /input size 30x32 is not divisible by 4 \(2\^\(levels-1\) with 3 levels\)/);
    assert.throws(() => net.forward(g.randn([1, 1, 32, 18]), c), /input size 32x18/);
    assert.throws(() => net.forward(g.randn([1, 3, 32, 32]), c), /x must have shape \[B, 1, H, W\], got \[1, 3, 32, 32\]/);
    assert.throws(() => net.forward(g.randn([1, 32, 32]), c), /x must have shape/);
    assert.throws(() => net.forward(g.randn([2, 1, 8, 8]), c), /cNoise must have shape \[2\]/);
    assert.throws(() => net.forward(g.randn([1, 1, 8, 8]), c, tensor([0], { dtype: 'int64' })), /no class embedding/);
  });
  c.dispose();
  net.dispose();
});

test('UNet: bad configs are clear errors naming the field', () => {
  const bad: [Partial<UNetConfig> & Record<string, unknown>, RegExp][] = [
    [{ modelChannels: 48 }, /groups \(32\) must divide every level's channels, but level 0 has 48/],
    [{ modelChannels: 32, channelMult: [1, 1.5] }, /channelMult\[1\] must be a positive integer/],
    [{ attentionResolutions: [12] }, /attentionResolutions has 12, which is not a feature-map size of this U-Net \(sizes 32, 16, 8/],
    [{ numHeads: 3 }, /numHeads \(3\) must divide the channels of every attention block, got 128/],
    [{ headChannels: 48 }, /headChannels \(48\) must divide/],
    [{ imageSize: 30 }, /imageSize 30 is not divisible by 4/],
    [{ channelMult: [] }, /channelMult must be a non-empty list/],
    [{ dropout: 1 }, /dropout must be in \[0, 1\)/],
    [{ resample: 'bilinear' as 'conv' }, /resample must be 'conv' or 'avgpool'/],
    [{ numClasses: 0 }, /numClasses must be a positive integer/],
    [{ inChannels: 0 }, /inChannels must be a positive integer/],
    [{ channelMults: [1, 2] }, /unknown config field\(s\) channelMults/],
  ];
  for (const [cfg, re] of bad) assert.throws(() => new UNet(cfg), re, JSON.stringify(cfg));
});

test('MLPDenoiserNet: bad configs, inputs and labels are clear errors', () => {
  assert.throws(() => new MLPDenoiserNet({ embedDim: 7 }), /embedDim must be even/);
  assert.throws(() => new MLPDenoiserNet({ depth: 0 }), /depth must be a positive integer/);
  assert.throws(() => new MLPDenoiserNet({ embedding: 'learned' as 'fourier' }), /embedding must be 'sinusoidal' or 'fourier'/);
  const net = new MLPDenoiserNet({ hidden: 8, depth: 1, embedDim: 4, numClasses: 3 });
  tidy(() => {
    const x = tensor([
      [0, 1],
      [2, 3],
    ]);
    const c = tensor([0, 1]);
    assert.throws(() => net.forward(tensor([[0, 1, 2]]), tensor([0])), /x must have shape \[B, 2\], got \[1, 3\]/);
    assert.throws(() => net.forward(x, c, tensor([0, 4], { dtype: 'int64' })), /class labels must be in \[0, 3\] \(3 = the null class\), got values in \[0, 4\]/);
    assert.throws(() => net.forward(x, c, tensor([0, 1])), /class labels must be int64/);
    assert.throws(() => net.forward(x, c, tensor([0], { dtype: 'int64' })), /class labels must have shape \[2\]/);
    // Omitted labels are the null class.
    const none = noGrad(() => net.forward(x, c));
    const nul = noGrad(() => net.forward(x, c, tensor([3, 3], { dtype: 'int64' })));
    assert.deepEqual(none.toFloat64Array(), nul.toFloat64Array());
  });
  net.dispose();
});

// ------------------------------------------------------------------ memory
test('no leak across 50 forward/backward passes (U-Net and MLP)', () => {
  const unet = new UNet(TINY_UNET);
  const mlp = new MLPDenoiserNet({ hidden: 16, depth: 2, embedDim: 8 });
  const g = new Generator(9);
  const x = g.randn([2, 2, 4, 4]);
  const c = tensor([10, 900]);
  const labels = tensor([0, 3], { dtype: 'int64' });
  const p = g.randn([5, 2]);
  const pc = g.randn([5]);
  const step = () =>
    tidy(() => {
      unet.forward(x, c, labels).square().mean().backward();
      mlp.forward(p, pc).square().mean().backward();
      noGrad(() => unet.forward(x, c));
    });
  step(); // allocates the .grad tensors
  const before = memory();
  for (let i = 0; i < 50; i++) step();
  const after = memory();
  assert.equal(after.tensors, before.tensors, 'live tensors');
  assert.equal(after.bytes, before.bytes, 'live bytes');
  dispose([x, c, labels, p, pc]);
  unet.dispose();
  mlp.dispose();
});
