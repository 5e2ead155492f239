// LoRA adapters (src/nn/lora.ts): the adapted forward, its gradients and the merged weight
// against PyTorch (test/fixtures/lora.safetensors, written by scripts/fixtures/lora.py, which
// follows PEFT's layer code), a PEFT-layout adapter folder loaded onto the same network, and on
// a small U-Net: the start equals the base, only the adapters train, merge/unmerge, scale,
// save/load round trips and flat memory.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { full, Generator, grad, loadSafetensors, memory, noGrad, saveSafetensors, Tensor, tidy } from '../src/engine';
import { Adam } from '../src/optim';
import { applyLora, Conv2d, Linear, loadLora, loraAdapters, loraParameters, mergeLora, Module, removeLora, saveLora, setLoraScale, unmergeLora } from '../src/nn';
import { UNet } from '../src/models';

const ROOT = path.resolve(__dirname, '../..');
const FIX = loadSafetensors(path.join(ROOT, 'test/fixtures/lora.safetensors'));
const T = (name: string): Tensor => {
  const t = FIX.tensors[name];
  assert.ok(t, `the fixture has no ${name}: rerun /usr/bin/python3 scripts/fixtures/lora.py`);
  return t;
};

/** max |a - b| <= tol (1 + max |b|). */
function close(a: Tensor, b: Tensor, what: string, tol = 1e-5): void {
  assert.deepEqual(a.shape, b.shape, `${what}: shape`);
  const [d, m] = tidy(() => [a.sub(b).abs().max().item(), b.abs().max().item()]);
  assert.ok(d <= tol * (1 + m), `${what}: max |diff| ${d} (max |expected| ${m})`);
}

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'lora-test-'));

interface LayerSpec {
  kind: 'Linear' | 'Conv2d';
  in: number;
  out: number;
  kernel?: number;
  stride?: number;
  padding?: number;
  rank: number;
  alpha: number;
  scale: number;
}

/** A container whose one child `layer` is the fixture's base layer, adapted and holding the fixture's A and B. */
class Holder extends Module {
  layer: Linear | Conv2d;
  constructor(s: LayerSpec, name: string) {
    super();
    this.layer = this.child('layer', s.kind === 'Linear' ? new Linear(s.in, s.out) : new Conv2d(s.in, s.out, s.kernel!, { stride: s.stride, padding: s.padding }));
    noGrad(() => {
      this.layer.weight.copy_(T(`${name}.weight`));
      this.layer.bias!.copy_(T(`${name}.bias`));
    });
    applyLora(this, { rank: s.rank, alpha: s.alpha, targets: ['layer'] });
    const [[, a]] = loraAdapters(this);
    noGrad(() => {
      a.A.weight.copy_(T(`${name}.lora_A`));
      a.B.weight.copy_(T(`${name}.lora_B`));
    });
    setLoraScale(this, s.scale);
  }
}

/** scripts/fixtures/lora.py's Net: conv (3 -> 4, 3x3, padding 1) -> SiLU -> mean over H, W -> fc (4 -> 5). */
class Net extends Module {
  conv = this.child('conv', new Conv2d(3, 4, 3, { padding: 1 }));
  fc = this.child('fc', new Linear(4, 5));
  forward(x: Tensor): Tensor {
    return tidy(() => this.fc.forward(this.conv.forward(x).silu().mean([2, 3])));
  }
}

describe('against PyTorch (PEFT layer semantics)', () => {
  for (const name of ['linear', 'conv3x3', 'conv1x1']) {
    test(`${name}: forward, adapter gradients, merged weight and unmerge`, () => {
      const spec = JSON.parse(FIX.metadata[name]) as LayerSpec;
      const h = new Holder(spec, name);
      const x = T(`${name}.input`);
      const [a] = loraAdapters(h).map(([, ad]) => ad);
      tidy(() => {
        const y = h.layer.forward(x);
        close(y, T(`${name}.output`), 'output');
        const [gA, gB] = grad(y.mul(T(`${name}.r`)).sum(), [a.A.weight, a.B.weight]);
        close(gA!, T(`${name}.grad.lora_A`), 'd loss / d A');
        close(gB!, T(`${name}.grad.lora_B`), 'd loss / d B');
      });
      const W0 = h.layer.weight.clone();
      mergeLora(h);
      close(h.layer.weight, T(`${name}.merged`), 'merged weight W + (alpha/r) s B A');
      tidy(() => close(h.layer.forward(x), T(`${name}.output`), 'merged forward'));
      unmergeLora(h);
      close(h.layer.weight, W0, 'unmerged weight', 1e-6);
      W0.dispose();
      h.dispose();
    });
  }

  test('a PEFT-layout adapter folder (base_model.model.<path>.lora_A.weight + adapter_config.json) loads onto the same network', () => {
    const net = new Net();
    net.loadStateDict(Object.fromEntries(Object.entries(FIX.tensors).flatMap(([k, t]) => (k.startsWith('net.state.') ? [[k.slice('net.state.'.length), t]] : []))));
    const paths = loadLora(net, path.join(ROOT, 'test/fixtures/lora-peft'));
    assert.deepEqual(paths.sort(), ['conv', 'fc']);
    assert.deepEqual(
      loraAdapters(net).map(([n, a]) => [n, a.rank, a.alpha]),
      [
        ['conv', 2, 3],
        ['fc', 2, 3],
      ],
    );
    tidy(() => close(net.forward(T('net.input')), T('net.output'), 'adapted network output'));
    net.dispose();
  });

  test('the other way: an adapter saveLora writes loads into PyTorch by PEFT keys and gives the same output', () => {
    const dir = tmp();
    const net = new Net();
    applyLora(net, { rank: 3, alpha: 5, targets: 'all' });
    randomizeB(net, 4);
    const x = new Generator(2).randn([2, 3, 5, 5]);
    const y = net.forward(x);
    const base = Object.fromEntries(net.namedParameters().flatMap(([k, t]) => (k.includes('lora_') ? [] : [[`net.state.${k}`, t]])));
    saveSafetensors(path.join(dir, 'base.safetensors'), { ...base, 'net.input': x, 'net.output': y });
    saveLora(net, path.join(dir, 'lora'));
    const r = spawnSync('/usr/bin/python3', [path.join(ROOT, 'scripts/fixtures/lora.py'), 'check', dir], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    assert.equal(r.stdout.trim(), 'ok');
    [x, y].forEach((t) => t.dispose());
    net.dispose();
    fs.rmSync(dir, { recursive: true });
  });
});

// A small U-Net with every weight random (zero-initialized layers too, so every layer reaches the output).
const CFG = { inChannels: 1, imageSize: 8, modelChannels: 8, groups: 4, channelMult: [1, 2], attentionResolutions: [4], midAttention: true, numResBlocks: 1 };
function unet(seed = 0): UNet {
  const net = new UNet(CFG, { generator: new Generator(seed) });
  const g = new Generator(seed + 100);
  noGrad(() => {
    for (const [, p] of net.namedParameters()) tidy(() => void p.copy_(g.randn(p.shape).mul(0.2)));
  });
  return net.eval();
}
const X = new Generator(7).randn([2, 1, 8, 8]);
const C = full([2], 0.3);
const run = (net: UNet) => net.forward(X, C);
/** Random B weights, so the adapters change the output. */
function randomizeB(net: Module, seed = 9): void {
  const g = new Generator(seed);
  noGrad(() => {
    for (const [, a] of loraAdapters(net)) tidy(() => void a.B.weight.copy_(g.randn(a.B.weight.shape).mul(0.3)));
  });
}

describe('on a U-Net', () => {
  test('targets: names, path suffixes, globs, linear/conv/all; bad targets and arguments are named', () => {
    const paths = (targets: string[] | string) => {
      const n = unet();
      const p = applyLora(n, { rank: 2, targets });
      n.dispose();
      return p;
    };
    assert.deepEqual(paths(['qkv', 'proj_out']), [
      'enc.2.attn.qkv',
      'enc.2.attn.proj_out',
      'mid.0.attn.qkv',
      'mid.0.attn.proj_out',
      'dec.0.attn.qkv',
      'dec.0.attn.proj_out',
      'dec.1.attn.qkv',
      'dec.1.attn.proj_out',
    ]);
    assert.deepEqual(paths('mid.0.attn.qkv'), ['mid.0.attn.qkv']);
    assert.deepEqual(paths('enc.*.res.conv1'), ['enc.0.res.conv1', 'enc.2.res.conv1']);
    const n = unet();
    const layers = n.namedModules().filter(([, m]) => m instanceof Linear || m instanceof Conv2d);
    assert.deepEqual(
      paths('linear'),
      layers.filter(([, m]) => m instanceof Linear).map(([p]) => p),
    );
    assert.deepEqual(
      paths('conv'),
      layers.filter(([, m]) => m instanceof Conv2d).map(([p]) => p),
    );
    assert.deepEqual(
      paths('all'),
      layers.map(([p]) => p),
    );
    assert.throws(() => applyLora(n, { rank: 2, targets: ['nope'] }), /targets \["nope"\] match no Linear or Conv2d layer \(the layers: map_layer0/);
    assert.throws(() => applyLora(n, { rank: 2, targets: ['attn'] }), /target "enc.2.attn" is a AttentionBlock/);
    assert.throws(() => applyLora(n, { rank: 0 }), /rank must be a positive integer, got 0/);
    assert.throws(() => applyLora(n, { rank: 2, alpha: -1 }), /alpha must be a number > 0, got -1/);
    assert.throws(() => mergeLora(n), /mergeLora: the module has no LoRA adapters/);
    applyLora(n, { rank: 2, targets: 'qkv' });
    assert.throws(() => applyLora(n, { rank: 2, targets: 'qkv' }), /"enc.2.attn.qkv" already has an adapter/);
    n.dispose();
  });

  test('the adapted network starts equal to the base (B = 0); A is kaiming-uniform (|A| <= 1/sqrt(fan_in)); scale 0 turns it off', () => {
    const n = unet();
    const base = run(n);
    applyLora(n, { rank: 4, alpha: 8, targets: 'all' });
    const y = run(n);
    assert.equal(
      tidy(() => y.sub(base).abs().max().item()),
      0,
    );
    for (const [p, a] of loraAdapters(n)) {
      const fanIn = a.A.weight.size / a.rank;
      const [mx, nz] = tidy(() => [a.A.weight.abs().max().item(), a.B.weight.abs().max().item()]);
      assert.ok(mx <= 1 / Math.sqrt(fanIn) && mx > 0.5 / Math.sqrt(fanIn), `${p}: max |A| ${mx}, bound ${1 / Math.sqrt(fanIn)}`);
      assert.equal(nz, 0, `${p}: B starts at zero`);
      const [, , ...k] = a.layer.weight.shape;
      if (a.layer instanceof Conv2d) {
        assert.deepEqual(a.A.weight.shape, [a.rank, a.layer.inChannels, ...k], `${p}: A is a conv with the layer's kernel`);
        assert.deepEqual(a.B.weight.shape, [a.layer.outChannels, a.rank, 1, 1], `${p}: B is 1x1`);
        assert.deepEqual((a.A as Conv2d).opts, { ...a.layer.opts }, `${p}: A has the layer's stride/padding`);
      }
    }
    randomizeB(n);
    const moved = run(n);
    assert.ok(tidy(() => moved.sub(base).abs().max().item()) > 1e-3, 'a non-zero B changes the output');
    setLoraScale(n, 0);
    close(run(n), base, 'scale 0', 1e-6);
    [base, y, moved].forEach((t) => t.dispose());
    n.dispose();
  });

  test('only the adapters train: base gradients stay empty and base weights unchanged after Adam steps', () => {
    const n = unet().train();
    applyLora(n, { rank: 2, targets: ['qkv', 'proj_out', 'conv1'] });
    const lora = new Set(loraParameters(n));
    const base = n.namedParameters().filter(([, p]) => !lora.has(p));
    assert.equal(lora.size, 2 * loraAdapters(n).length);
    assert.ok(
      base.every(([, p]) => !p.requiresGrad),
      'the base is frozen',
    );
    const before = base.map(([, p]) => Buffer.from(p.bytes()));
    const loraBefore = [...lora].map((p) => p.clone());
    const opt = new Adam([...lora], { lr: 1e-2 });
    for (let i = 0; i < 2; i++) {
      tidy(() => run(n).square().mean().backward());
      for (const [k, p] of base) assert.equal(p.grad, null, `${k} has no gradient`);
      opt.step();
      opt.zeroGrad();
    }
    base.forEach(([k, p], i) => assert.ok(Buffer.from(p.bytes()).equals(before[i]), `${k} unchanged`));
    const changed = [...lora].map((p, i) => tidy(() => p.sub(loraBefore[i]).abs().max().item()) > 0);
    assert.ok(
      changed.every((c) => c),
      'every A and B moved',
    );
    n.to({ dtype: 'float64' });
    const trainable = new Set(loraParameters(n));
    assert.equal(trainable.size, lora.size);
    for (const [k, p] of n.namedParameters()) assert.equal(p.requiresGrad, trainable.has(p), `after to(): ${k} requiresGrad`);
    loraBefore.forEach((t) => t.dispose());
    opt.dispose();
    n.dispose();
  });

  test('merge then unmerge: merged output equals the adapted one, the weights come back, scale re-merges', () => {
    const n = unet();
    const plain = run(n);
    applyLora(n, { rank: 3, alpha: 6, targets: 'all' });
    randomizeB(n);
    const weights = loraAdapters(n).map(([, a]) => a.layer.weight.clone());
    const adapted = run(n);
    mergeLora(n);
    assert.ok(loraAdapters(n).every(([, a]) => a.merged));
    close(run(n), adapted, 'merged output', 1e-5);
    mergeLora(n); // merging twice adds nothing
    close(run(n), adapted, 'merged twice', 1e-5);
    setLoraScale(n, 0.5); // while merged: unmerge at scale 1, merge at 0.5
    unmergeLora(n);
    const half = run(n);
    mergeLora(n);
    close(run(n), half, 'merged at scale 0.5', 1e-5);
    unmergeLora(n);
    loraAdapters(n).forEach(([p, a], i) => close(a.layer.weight, weights[i], `${p} restored`, 1e-6));
    setLoraScale(n, 0);
    close(run(n), plain, 'scale 0 after the cycles', 1e-5);
    [plain, adapted, half, ...weights].forEach((t) => t.dispose());
    n.dispose();
  });

  test('100 merge/unmerge cycles do not grow the live tensor count', () => {
    const n = unet();
    applyLora(n, { rank: 2, targets: 'all' });
    randomizeB(n);
    mergeLora(n);
    unmergeLora(n);
    const before = memory();
    for (let i = 0; i < 100; i++) {
      mergeLora(n);
      unmergeLora(n);
    }
    const after = memory();
    assert.equal(after.tensors, before.tensors, 'live tensors');
    assert.equal(after.bytes, before.bytes, 'live bytes');
    n.dispose();
  });

  test('save to a folder (PEFT layout) and to one file, load onto a fresh network: equal outputs; the files hold only the adapters', () => {
    const dir = tmp();
    const n = unet();
    const targets = applyLora(n, { rank: 2, alpha: 4, targets: ['qkv', 'proj_out', 'emb_proj', 'conv_in'] });
    randomizeB(n);
    setLoraScale(n, 0.7);
    const want = run(n);
    const folder = path.join(dir, 'lora');
    assert.equal(saveLora(n, folder), path.join(folder, 'adapter_model.safetensors'));
    saveLora(n, path.join(dir, 'one.safetensors'));
    const file = loadSafetensors(path.join(folder, 'adapter_model.safetensors'));
    const expectedKeys = targets.flatMap((t) => [`base_model.model.${t}.lora_A.weight`, `base_model.model.${t}.lora_B.weight`]);
    assert.deepEqual(Object.keys(file.tensors).sort(), expectedKeys.sort());
    assert.equal(file.metadata.format, 'pt');
    const config = JSON.parse(fs.readFileSync(path.join(folder, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.r, 2);
    assert.equal(config.lora_alpha, 4);
    assert.deepEqual(config.target_modules, targets);
    assert.deepEqual(JSON.parse(file.metadata.lora_config), config);
    Object.values(file.tensors).forEach((t) => t.dispose());
    for (const src of [folder, path.join(dir, 'one.safetensors')]) {
      const fresh = unet(); // same base weights, no adapters
      assert.deepEqual(loadLora(fresh, src, { scale: 0.7 }), targets);
      const got = run(fresh);
      close(got, want, `loaded from ${path.basename(src)}`, 1e-6);
      removeLora(fresh, { merge: true });
      assert.deepEqual(Object.keys(fresh.stateDict()), Object.keys(unet().stateDict()), 'removeLora leaves the plain network');
      close(run(fresh), want, 'merged and unloaded', 1e-5);
      got.dispose();
      fresh.dispose();
    }
    const other = new UNet({ ...CFG, modelChannels: 4 });
    assert.throws(() => loadLora(other, folder), /has shape \[2, 8\], but this network's layer needs \[2, 4\]|has shape/);
    assert.equal(loraAdapters(other).length, 0, 'a failed load leaves no adapters behind');
    assert.throws(() => loadLora(unet(), path.join(dir, 'missing')), /does not exist/);
    want.dispose();
    n.dispose();
    fs.rmSync(dir, { recursive: true });
  });
});
