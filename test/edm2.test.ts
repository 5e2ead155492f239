// EDM2's magnitude-preserving U-Net (src/models/edm2.ts):
// - the mp functions against closed forms (exact where the algebra allows, sampled otherwise);
// - forced weight normalization: weights re-normalized in place in training mode, untouched in eval;
// - functions, layers and the network against PyTorch (scripts/fixtures/edm2.py, the same weights
//   loaded strictly from test/fixtures/edm2.safetensors): outputs and gradients;
// - float64 gradchecks, the state-dict round trip Diffuse -> PyTorch -> Diffuse, errors, memory.
//
// Float32 tolerance: both sides run libtorch's float32 kernels in a different order (box filter vs
// depthwise conv, matmul vs einsum), so differences are rounding: PyTorch's own float32 output is
// ~1e-6 (relative to its max) away from its float64 output (the fixture records it). We require
//   max |actual - expected| <= TOL * max |expected|,  TOL = 1e-4 (outputs and gradients),
// ~100x the measured differences (0.2-1.7e-6), and far below any real bug (a wrong constant or
// branch moves outputs by >1e-2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Generator, grad, gradcheck, loadSafetensors, memory, noGrad, setNumThreads, tensor, Tensor, tidy, zeros } from '../src/engine';
import { loadModule, Module, saveModule } from '../src/nn';
import { Block, EDM2Config, EDM2UNet, MPConv, MPFourier, mpCat, mpSilu, mpSum, mpWeight, normalize } from '../src/models/edm2';

// The tensors here are tiny: one thread avoids OpenMP spin-waits that make this file 5-10x slower on a busy machine.
setNumThreads(1);

const ROOT = path.resolve(__dirname, '../..');
const PYTHON = '/usr/bin/python3';
const SCRIPT = path.join(ROOT, 'scripts/fixtures/edm2.py');
const FIXTURE = path.join(ROOT, 'test/fixtures/edm2.safetensors');
const TOL_OUT = 1e-4;
const TOL_GRAD = 1e-4;

const fx = loadSafetensors(FIXTURE);
/* eslint-disable @typescript-eslint/no-explicit-any -- fixture specs are JSON */
const CASES = JSON.parse(fx.metadata.cases) as Record<string, any>;
const T = (k: string): Tensor => {
  const t = fx.tensors[k];
  assert.ok(t, `fixture has no tensor ${k}: rerun /usr/bin/python3 scripts/fixtures/edm2.py`);
  return t;
};
const group = (prefix: string): Record<string, Tensor> =>
  Object.fromEntries(
    Object.entries(fx.tensors)
      .filter(([k]) => k.startsWith(prefix))
      .map(([k, t]) => [k.slice(prefix.length), t]),
  );

/** max |a - e| / max |e| (shapes must agree). */
function relErr(actual: Tensor, expected: Tensor): number {
  assert.deepEqual(actual.shape, expected.shape);
  const a = actual.toFloat64Array();
  const e = expected.toFloat64Array();
  let err = 0;
  let scale = 0;
  for (let i = 0; i < e.length; i++) {
    err = Math.max(err, Math.abs(a[i] - e[i]));
    scale = Math.max(scale, Math.abs(e[i]));
  }
  return err / Math.max(scale, 1e-30);
}
function assertClose(what: string, actual: Tensor, expected: Tensor, tol: number): void {
  const r = relErr(actual, expected);
  assert.ok(r <= tol, `${what}: max abs error / max |expected| = ${r.toExponential(3)} > ${tol}`);
}
const bitwiseEqual = (a: Tensor, b: Tensor) => a.dtype === b.dtype && Buffer.from(a.bytes()).equals(Buffer.from(b.bytes()));
const meanSquare = (t: Tensor) => tidy(() => t.double().square().mean().item());

const TINY = CASES.unet.config as EDM2Config;
/** A very small configuration with every kind of block (enc conv/down, attention, dec up/in0/in1, labels). */
const MICRO: EDM2Config = { imgResolution: 4, imgChannels: 1, labelDim: 2, modelChannels: 4, channelMult: [1, 2], numBlocks: 1, attnResolutions: [2], channelsPerHead: 4, logvarChannels: 4 };

/** Sets every zero-initialized gain to a non-zero value (so gradients reach every weight). */
function perturbGains(m: Module, g: Generator): void {
  noGrad(() => {
    for (const [k, p] of m.namedParameters()) if (k.endsWith('_gain')) p.copy_(tidy(() => g.rand([], { dtype: p.dtype }).add(0.5)));
  });
}
const mpConvs = (m: Module) => m.namedModules().filter(([, x]) => x instanceof MPConv) as [string, MPConv][];

// ---------------------------------------------------------------- closed forms

test('mpSum keeps unit magnitude for any t (exact for orthogonal inputs, sampled for independent ones)', () => {
  tidy(() => {
    // Rows of a Hadamard matrix: exactly orthogonal, mean square exactly 1.
    const n = 1024;
    const a = tensor(
      Array.from({ length: n }, (_, i) => (i % 2 ? -1 : 1)),
      { dtype: 'float64' },
    );
    const b = tensor(
      Array.from({ length: n }, (_, i) => ((i >> 1) % 2 ? -1 : 1)),
      { dtype: 'float64' },
    );
    const g = new Generator(1);
    const [x, y] = [g.randn([1 << 20], { dtype: 'float64' }), g.randn([1 << 20], { dtype: 'float64' })];
    for (const t of [0, 0.1, 0.3, 0.5, 0.8, 1]) {
      assert.ok(Math.abs(meanSquare(mpSum(a, b, t)) - 1) < 1e-12, `orthogonal, t=${t}`);
      // Independent N(0, 1): the sample mean square has std ~ sqrt(2/n) = 0.0014; 0.01 is 7 std.
      assert.ok(Math.abs(meanSquare(mpSum(x, y, t)) - 1) < 0.01, `independent, t=${t}`);
    }
    assert.equal(mpSum(a, b, 0).sub(a).abs().max().item(), 0); // t = 0 is a
  });
});

test('mpSilu of N(0, 1) has unit second moment (quadrature, and a sample within 6 standard errors)', () => {
  // E[silu(x)^2] by Simpson's rule on [-12, 12] (the tails beyond are < 1e-30).
  const silu = (x: number) => x / (1 + Math.exp(-x));
  const phi = (x: number) => Math.exp((-x * x) / 2) / Math.sqrt(2 * Math.PI);
  const N = 24000;
  const h = 24 / N;
  let s = 0;
  for (let i = 0; i <= N; i++) {
    const x = -12 + i * h;
    s += (i === 0 || i === N ? 1 : i % 2 ? 4 : 2) * silu(x) ** 2 * phi(x);
  }
  const exact = (s * h) / 3 / 0.596 ** 2;
  // 0.596 is sqrt(E[silu^2]) = 0.59641... rounded to 3 digits, so the second moment is 1 to 0.2%.
  assert.ok(Math.abs(exact - 1) < 2e-3, `E[mpSilu(x)^2] = ${exact}`);
  tidy(() => {
    const y2 = mpSilu(new Generator(2).randn([1 << 20], { dtype: 'float64' })).square();
    const m = y2.mean().item();
    const se = Math.sqrt(y2.var().item() / y2.size);
    assert.ok(Math.abs(m - exact) < 6 * se, `sample ${m} vs ${exact} (standard error ${se})`);
  });
});

test('mpCat has unit magnitude and gives b the share t^2 / ((1-t)^2 + t^2) of it, for any channel counts', () => {
  tidy(() => {
    const g = new Generator(3);
    const unit = (t: Tensor) => t.div(Math.sqrt(meanSquare(t))); // mean square exactly 1
    const a = unit(g.randn([2, 3, 4, 4], { dtype: 'float64' }));
    const b = unit(g.randn([2, 13, 4, 4], { dtype: 'float64' }));
    for (const t of [0.2, 0.5, 0.9]) {
      const y = mpCat(a, b, { t });
      assert.deepEqual(y.shape, [2, 16, 4, 4]);
      assert.ok(Math.abs(meanSquare(y) - 1) < 1e-12);
      const share = y.narrow(1, 3, 13).square().sum().item() / y.square().sum().item();
      assert.ok(Math.abs(share - t ** 2 / ((1 - t) ** 2 + t ** 2)) < 1e-12, `t=${t}: share ${share}`);
    }
  });
});

test('normalize gives every output channel unit magnitude (norm sqrt(fan_in)); mpWeight gives norm |gain|', () => {
  tidy(() => {
    const g = new Generator(4);
    const w = g.randn([6, 5, 3, 3], { dtype: 'float64' }).mul(g.rand([6, 1, 1, 1], { dtype: 'float64' }).mul(10)); // rows of varied norms
    const rms = w.square().mean([1, 2, 3]).sqrt().toFloat64Array();
    const norms = normalize(w).norm(2, [1, 2, 3]).toFloat64Array();
    norms.forEach((n, i) => assert.ok(Math.abs(n - Math.sqrt(45) * (rms[i] / (1e-4 + rms[i]))) < 1e-12)); // eps = 1e-4 in the denominator
    mpWeight(w, 0.7)
      .norm(2, [1, 2, 3])
      .toFloat64Array()
      .forEach((n, i) => assert.ok(Math.abs(n - 0.7 * (rms[i] / (1e-4 + rms[i]))) < 1e-12));
    // Pixel norm: unit RMS over channels at every pixel.
    const px = normalize(g.randn([2, 8, 3, 3], { dtype: 'float64' }), 1)
      .square()
      .mean(1);
    assert.ok(px.sub(1).abs().max().item() < 1e-3);
  });
});

test('MPFourier features have unit magnitude (mean square over channels ~ 1 for any input)', () => {
  tidy(() => {
    const f = new MPFourier(4096, { generator: new Generator(5) });
    const y = f.forward(tensor([-3, -0.5, 0, 0.25, 2]));
    assert.deepEqual(y.shape, [5, 4096]);
    // Each feature is sqrt(2) cos(uniform phase): mean square 1, std of the mean sqrt(0.5/4096) = 0.011.
    y.square()
      .mean(1)
      .toFloat64Array()
      .forEach((m) => assert.ok(Math.abs(m - 1) < 0.07, `mean square ${m}`));
    f.dispose();
  });
});

// ---------------------------------------------------------------- forced weight normalization

test('forced weight normalization: training mode re-normalizes stored weights in place, eval leaves them alone', () => {
  const g = new Generator(6);
  const net = new EDM2UNet(MICRO, { generator: g });
  perturbGains(net, g);
  const before = Object.fromEntries(Object.entries(net.stateDict()).map(([k, t]) => [k, t.clone()]));
  const x = g.randn([2, 1, 4, 4]);
  const cn = tensor([-1, 0.5]);
  net.eval();
  noGrad(() => net.forward(x, cn, tensor([0, 2], { dtype: 'int64' })).dispose());
  net.logvar(cn).dispose();
  for (const [k, t] of Object.entries(net.stateDict())) assert.ok(bitwiseEqual(t, before[k]), `${k} changed in eval mode`);

  net.train();
  tidy(() => net.forward(x, cn).sum().backward());
  for (const [name, conv] of mpConvs(net)) {
    const w0 = before[`${name}.weight`];
    if (name.startsWith('logvar')) {
      assert.ok(bitwiseEqual(conv.weight, w0), `${name} is not used by forward and must be untouched`);
      continue;
    }
    assert.ok(
      relErr(
        conv.weight,
        tidy(() => normalize(w0)),
      ) < 1e-6,
      `${name}.weight is not normalize(w0)`,
    );
    // Every output channel now has unit magnitude: norm sqrt(fan_in) rms / (eps + rms), rms that of the row before.
    const fanIn = w0.size / w0.dim(0);
    const dims = Array.from({ length: w0.ndim - 1 }, (_, i) => i + 1);
    const rms = tidy(() => w0.double().square().mean(dims).sqrt().toFloat64Array());
    tidy(() => conv.weight.norm(2, dims).toFloat64Array()).forEach((n, i) => assert.ok(Math.abs(n / Math.sqrt(fanIn) - rms[i] / (1e-4 + rms[i])) < 1e-6, `${name}: row norm ${n}, fan_in ${fanIn}`));
  }
  // An update that grows a weight is undone by the next training-mode forward.
  net.zeroGrad();
  const w = (net.enc.get('4x4_conv') as MPConv).weight;
  noGrad(() => w.mul_(3));
  tidy(() => net.forward(x, cn).sum().backward());
  tidy(() => w.norm(2, [1, 2, 3]).toFloat64Array()).forEach((n) => assert.ok(Math.abs(n / Math.sqrt(w.size / w.dim(0)) - 1) < 1e-3));
  net.dispose();
  for (const t of Object.values(before)) t.dispose();
  x.dispose();
  cn.dispose();
});

test('dropout (used by EDM2 for its larger models): active only in training mode, reproducible from its generator', () => {
  const mk = () => new Block(8, 8, 4, { dropout: 0.5, generator: new Generator(15), dropoutGenerator: new Generator(16) });
  const [a, b] = [mk(), mk()];
  perturbGains(a, new Generator(17));
  perturbGains(b, new Generator(17));
  tidy(() => {
    const g = new Generator(18);
    const [x, emb] = [g.randn([2, 8, 4, 4]), g.randn([2, 4])];
    const ya = a.train().forward(x, emb);
    assert.ok(relErr(ya, b.train().forward(x, emb)) === 0, 'same seeds, same dropout mask');
    assert.ok(relErr(ya, a.forward(x, emb)) > 1e-3, 'a new mask on the next call');
    const plain = new Block(8, 8, 4, { dropout: 0 });
    plain.loadStateDict(a.stateDict());
    assert.ok(relErr(a.eval().forward(x, emb), plain.eval().forward(x, emb)) === 0, 'eval: no dropout');
    plain.dispose();
  });
  a.dispose();
  b.dispose();
});

// ---------------------------------------------------------------- against PyTorch

const FN: Record<string, (xs: Tensor[], o: any) => Tensor> = {
  normalize: ([x], o) => normalize(x, o.dim ?? undefined),
  mp_silu: ([x]) => mpSilu(x),
  mp_sum: ([a, b], o) => mpSum(a, b, o.t),
  mp_cat: ([a, b], o) => mpCat(a, b, { t: o.t }),
};
type Layer = Module & { forward(...xs: (Tensor | number)[]): Tensor };
const LAYER: Record<string, (args: any[], opts: any) => Layer> = {
  MPConv: ([i, o, k]) => new MPConv(i, o, k),
  MPFourier: ([c]) => new MPFourier(c),
  Block: ([i, o, e], opts) => new Block(i, o, e, opts),
};

for (const [name, s] of Object.entries(CASES)) {
  if (!(s.kind in FN) && !(s.kind in LAYER)) continue;
  test(`${name}: output and gradients match PyTorch`, () => {
    const m = s.kind in LAYER ? LAYER[s.kind](s.args, s.opts) : null;
    if (m) {
      m.loadStateDict(group(`${name}.state.`), { strict: true });
      m.train(s.mode === 'train');
    }
    tidy(() => {
      const xs = (s.inputs as string[]).map((k) =>
        T(`${name}.input.${k}`)
          .detach()
          .clone()
          .requiresGrad_(s.kind !== 'MPFourier'),
      );
      const out = m ? m.forward(...xs, ...(s.gain === undefined ? [] : [s.gain])) : FN[s.kind](xs, s.opts);
      assertClose(`${name} output`, out, T(`${name}.output`), TOL_OUT);
      const want = group(`${name}.grad.`);
      if (Object.keys(want).length === 0) return;
      const params = m ? m.namedParameters() : [];
      const gs = grad(out.mul(T(`${name}.r`)).sum(), [...xs, ...params.map(([, p]) => p)]);
      xs.forEach((_, i) => assertClose(`${name} d/d${s.inputs[i]}`, gs[i]!, want[`input.${s.inputs[i]}`], TOL_GRAD));
      params.forEach(([k], i) => assertClose(`${name} d/d${k}`, gs[xs.length + i]!, want[`state.${k}`], TOL_GRAD));
    });
    if (m) {
      for (const [k, t] of Object.entries(m.stateDict())) assertClose(`${name} ${k} after forward`, t, T(`${name}.after.${k}`), 1e-6);
      m.dispose();
    }
  });
}

test('EDM2UNet: state-dict names and shapes are those of the PyTorch network (networks_edm2.py names)', () => {
  const net = new EDM2UNet(TINY);
  const ours = Object.entries(net.stateDict())
    .map(([k, t]) => `${k} [${t.shape}]`)
    .sort();
  const theirs = Object.entries(group('unet.state.'))
    .map(([k, t]) => `${k} [${t.shape}]`)
    .sort();
  assert.deepEqual(ours, theirs);
  assert.ok(ours.includes('enc.8x8_block0.attn_qkv.weight [96,32,1,1]'));
  net.dispose();
});

test('EDM2UNet: eval output and u(sigma) match PyTorch; int labels with the null class equal one-hot rows', () => {
  const net = new EDM2UNet(TINY);
  net.loadStateDict(group('unet.state.'), { strict: true });
  net.eval();
  noGrad(() =>
    tidy(() => {
      const [x, cn, labels] = ['x', 'noise', 'labels'].map((k) => T(`unet.input.${k}`));
      const out = net.forward(x, cn, labels);
      assertClose('eval output', out, T('unet.eval.output'), TOL_OUT);
      // Against PyTorch's float64 run: our float32 error is of the size of PyTorch's own.
      const ref = Number(fx.metadata['unet.f32_vs_f64']);
      assert.ok(relErr(out, T('unet.eval.output64')) < 20 * ref, `vs float64: ${relErr(out, T('unet.eval.output64'))} (PyTorch float32: ${ref})`);
      assertClose('logvar', net.logvar(cn), T('unet.eval.logvar'), TOL_OUT);
      assert.equal(net.nullClass, 3);
      const ints = net.forward(x, cn, tensor([0, 2, 3], { dtype: 'int64' })); // 3 = labelDim: the null class
      assert.ok(relErr(ints, out) < 1e-6);
      // No labels = every sample the null class.
      assert.ok(relErr(net.forward(x, cn), net.forward(x, cn, tensor([3, 3, 3], { dtype: 'int64' }))) < 1e-6);
    }),
  );
  net.dispose();
});

test('EDM2UNet: training-mode output, input gradient, parameter gradients and re-normalized weights match PyTorch', () => {
  const net = new EDM2UNet(TINY);
  net.loadStateDict(group('unet.state.'), { strict: true });
  net.train();
  tidy(() => {
    const x = T('unet.input.x').detach().clone().requiresGrad_();
    const out = net.forward(x, T('unet.input.noise'), T('unet.input.labels'));
    assertClose('train output', out, T('unet.train.output'), TOL_OUT);
    const want = group('unet.train.grad.state.');
    const sd = net.stateDict();
    const names = Object.keys(want);
    const gs = grad(out.mul(T('unet.r')).sum(), [x, ...names.map((k) => sd[k])]);
    assertClose('d/dx', gs[0]!, T('unet.train.grad.input.x'), TOL_GRAD);
    names.forEach((k, i) => assertClose(`d/d${k}`, gs[i + 1]!, want[k], TOL_GRAD));
    for (const [k, t] of Object.entries(group('unet.train.after.'))) assertClose(`${k} after forward`, sd[k], t, 1e-6);
  });
  net.dispose();
});

// ---------------------------------------------------------------- gradchecks (float64)

test('gradcheck (float64): the mp functions, mpWeight with a learned gain, and MPConv', () => {
  const g = new Generator(7);
  const r = (s: number[]) => g.randn(s, { dtype: 'float64' });
  const checks: [string, (...xs: Tensor[]) => Tensor, Tensor[]][] = [
    ['normalize', (x) => normalize(x), [r([3, 4, 2])]],
    ['pixel norm', (x) => normalize(x, 1), [r([2, 3, 2, 2])]],
    ['mpSilu', (x) => mpSilu(x), [r([10])]],
    ['mpSum', (a, b) => mpSum(a, b, 0.3), [r([5]), r([5])]],
    ['mpCat', (a, b) => mpCat(a, b, { t: 0.7 }), [r([2, 2, 3]), r([2, 3, 3])]],
    ['mpWeight', (w, gain) => mpWeight(w, gain), [r([3, 2, 3, 3]), r([])]],
  ];
  const conv = new MPConv(2, 3, [3, 3], { generator: g }).to({ dtype: 'float64' });
  checks.push(['MPConv (eval)', (x) => conv.eval().forward(x, 0.8), [r([2, 2, 4, 4])]]);
  for (const [what, fn, xs] of checks) {
    const res = gradcheck(fn, xs);
    assert.ok(res.ok, `${what}: max error ${res.maxError}`);
  }
  conv.dispose();
});

test('gradcheck (float64): the whole network w.r.t. x, cNoise and soft class labels, and u(sigma)', () => {
  const g = new Generator(8);
  const net = new EDM2UNet(MICRO, { generator: g }).to({ dtype: 'float64' }).eval();
  perturbGains(net, g);
  const x = g.randn([2, 1, 4, 4], { dtype: 'float64' });
  const cn = tensor([-0.7, 0.4], { dtype: 'float64' });
  const labels = g.rand([2, 2], { dtype: 'float64' });
  const res = gradcheck((a, b, c) => net.forward(a, b, c), [x, cn, labels]);
  assert.ok(res.ok, `network: max error ${res.maxError}`);
  const lv = gradcheck((b) => net.logvar(b), [cn]);
  assert.ok(lv.ok, `logvar: max error ${lv.maxError}`);
  net.dispose();
  [x, cn, labels].forEach((t) => t.dispose());
});

// ---------------------------------------------------------------- round trip

test('state dict round trip Diffuse -> PyTorch (strict load, same output) -> Diffuse (bit-identical)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-edm2-'));
  try {
    const g = new Generator(9);
    const net = new EDM2UNet(TINY, { generator: g }).eval();
    perturbGains(net, g);
    const src = path.join(tmp, 'ts.safetensors');
    const dst = path.join(tmp, 'torch.safetensors');
    saveModule(net, src, { config: JSON.stringify(TINY) });
    execFileSync(PYTHON, [SCRIPT, 'roundtrip', src, dst], { stdio: ['ignore', 'pipe', 'pipe'] });
    const back = loadSafetensors(dst);
    const state = Object.fromEntries(
      Object.entries(back.tensors)
        .filter(([k]) => k.startsWith('state.'))
        .map(([k, t]) => [k.slice(6), t]),
    );
    const again = new EDM2UNet(TINY, { generator: new Generator(10) });
    again.loadStateDict(state, { strict: true });
    for (const [k, t] of Object.entries(net.stateDict())) assert.ok(bitwiseEqual(again.stateDict()[k], t), `${k} changed in the round trip`);
    noGrad(() =>
      tidy(() => {
        const [x, cn, labels] = ['x', 'noise', 'labels'].map((k) => T(`unet.input.${k}`));
        assertClose('PyTorch output of the Diffuse weights', net.forward(x, cn, labels), back.tensors.output, TOL_OUT);
        assertClose('PyTorch logvar of the Diffuse weights', net.logvar(cn), back.tensors.logvar, TOL_OUT);
      }),
    );
    // The saved file also loads back through loadModule (strict), config in its metadata.
    const third = new EDM2UNet(TINY, { generator: new Generator(11) });
    assert.deepEqual(JSON.parse(loadModule(third, src).config), TINY);
    for (const [k, t] of Object.entries(net.stateDict())) assert.ok(bitwiseEqual(third.stateDict()[k], t));
    [net, again, third].forEach((m) => m.dispose());
    Object.values(back.tensors).forEach((t) => t.dispose());
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- errors

test('bad configurations are rejected with messages that name the field', () => {
  const bad: [Partial<EDM2Config>, RegExp][] = [
    [{ imgResolution: 0 }, /imgResolution must be a positive integer/],
    [{ imgChannels: 1.5 }, /imgChannels must be a positive integer/],
    [{ labelDim: -1 }, /labelDim must be a non-negative integer/],
    [{ channelMult: [] }, /channelMult must be a non-empty array/],
    [{ channelMult: [1, 0] }, /channelMult entries must be a positive integer/],
    [{ imgResolution: 6, channelMult: [1, 2, 2] }, /imgResolution \(6\) must be divisible by 2\^\(levels - 1\) = 4/],
    [{ attnResolutions: [3] }, /attnResolutions entry 3 is not one of the U-Net's resolutions \[4, 2\]/],
    [{ channelsPerHead: 3 }, /channels at 2x2 \(with attention\) are not a multiple of channelsPerHead \(3\)/],
    [{ labelBalance: 1.5 }, /labelBalance must be in \[0, 1\]/],
    [{ dropout: 1 }, /dropout must be in \[0, 1\)/],
    [{ clipAct: 0 }, /clipAct must be positive or null/],
    [{ numBlocks: -1 }, /numBlocks must be a non-negative integer/],
  ];
  for (const [patch, re] of bad) assert.throws(() => new EDM2UNet({ ...MICRO, ...patch }), re, JSON.stringify(patch));
  assert.throws(() => new MPConv(2, 3, [2, 2]), /kernel must be \[\] \(linear\) or \[kh, kw\] of odd positive integers/);
  assert.throws(() => new Block(4, 6, 8, { attention: true, channelsPerHead: 4 }), /outChannels \(6\) to be a multiple of channelsPerHead \(4\)/);
});

test('bad inputs are rejected with messages that name the expected shape', () => {
  const net = new EDM2UNet(MICRO, { generator: new Generator(12) });
  const uncond = new EDM2UNet({ ...MICRO, labelDim: 0 }, { generator: new Generator(13) });
  tidy(() => {
    const x = zeros([2, 1, 4, 4]);
    const cn = zeros([2]);
    assert.throws(() => net.forward(zeros([2, 1, 4]), cn), /x must be \[B, 1, H, W\], got \[2, 1, 4\]/);
    assert.throws(() => net.forward(zeros([2, 3, 4, 4]), cn), /x must be \[B, 1, H, W\], got \[2, 3, 4, 4\]/);
    assert.throws(() => net.forward(zeros([2, 1, 5, 4]), cn), /H and W must be positive multiples of 2 \(2 levels\), got 5x4/);
    assert.throws(() => net.forward(x, zeros([3])), /cNoise must be \[2\] \(one per sample\), got \[3\]/);
    assert.throws(() => net.forward(x, zeros([2, 1])), /cNoise must be \[2\]/);
    assert.throws(() => net.forward(x, cn, tensor([0, 3], { dtype: 'int64' })), /class labels must be in \[0, 2\] \(2 = null class\), got values in \[0, 3\]/);
    assert.throws(() => net.forward(x, cn, tensor([-1, 0], { dtype: 'int64' })), /class labels must be in \[0, 2\]/);
    assert.throws(() => net.forward(x, cn, tensor([0, 1, 1], { dtype: 'int64' })), /integer classLabels must be \[2\], got \[3\]/);
    assert.throws(() => net.forward(x, cn, zeros([2, 3])), /float classLabels must be \[2, 2\] \(one-hot\), got \[2, 3\]/);
    assert.throws(() => uncond.forward(x, cn, tensor([0, 1], { dtype: 'int64' })), /unconditional \(labelDim 0\) but classLabels were given/);
    assert.throws(() => net.logvar(zeros([2, 1])), /cNoise must be 1-D \[B\]/);
    // A multiple of the training resolution works (fully convolutional).
    assert.deepEqual(noGrad(() => net.eval().forward(zeros([1, 1, 8, 4]), zeros([1]))).shape, [1, 1, 8, 4]);
  });
  net.dispose();
  uncond.dispose();
});

// ---------------------------------------------------------------- memory

test('no leak: 20 training forward/backward passes leave live tensors and bytes flat', () => {
  const g = new Generator(14);
  const net = new EDM2UNet(MICRO, { generator: g }).train();
  perturbGains(net, g);
  const x = g.randn([2, 1, 4, 4]);
  const cn = tensor([-1, 1]);
  const labels = tensor([1, 2], { dtype: 'int64' });
  const step = () => {
    tidy(() => {
      const loss = net.forward(x, cn, labels).square().mean().add(net.logvar(cn).mean());
      loss.backward();
    });
    net.zeroGrad();
  };
  step(); // warm-up
  const before = memory();
  for (let i = 0; i < 20; i++) step();
  const after = memory();
  assert.equal(after.tensors, before.tensors);
  assert.equal(after.bytes, before.bytes);
  net.dispose();
  [x, cn, labels].forEach((t) => t.dispose());
});
