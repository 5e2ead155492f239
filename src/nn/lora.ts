/**
 * LoRA: low-rank adapters (Hu et al. 2021) on Linear and Conv2d layers, in PEFT's layout.
 *
 * An adapted layer computes h = W0 x + (alpha / r) s B A x (Eq. 3, with the alpha/r scaling
 * of Sec. 4.1 and a run-time scale s): A [r, in] starts as PyTorch's default Linear init
 * (kaiming-uniform, a = sqrt(5)), B [out, r] starts at zero, so the adapted network starts
 * equal to the base. For a Conv2d, A is a conv with the layer's kernel, stride, padding and
 * dilation and r output channels, B a 1x1 conv (PEFT's layout). The adapters are the layer's
 * children lora_A and lora_B, so the network's state dict holds `<path>.lora_A.weight`; the
 * base parameters are frozen (requiresGrad false) and only loraParameters() train.
 *
 * Files: saveLora writes only the adapters, with PEFT's keys
 * `base_model.model.<path>.lora_A.weight` / `.lora_B.weight`; to a folder it writes
 * adapter_model.safetensors + adapter_config.json as PEFT's save_pretrained does.
 *
 * @example
 *   applyLora(unet, { rank: 4, alpha: 4, targets: ['qkv', 'proj_out'] });
 *   const opt = new Adam(loraParameters(unet), { lr: 1e-4 });   // the base stays frozen
 *   saveLora(unet, 'runs/x/lora');                               // adapter_model.safetensors + adapter_config.json
 *   loadLora(freshUnet, 'runs/x/lora'); setLoraScale(freshUnet, 0.5); mergeLora(freshUnet);
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../engine/safetensors';
import { dispose, noGrad, tidy } from '../engine/scope';
import { Generator } from '../engine/random';
import { Tensor } from '../engine/tensor';
import { DType } from '../engine/dtype';
import { writeFileAtomic } from '../util/image';
import { initGenerator } from './init';
import { castTensors } from './io';
import { Conv2d, LayerAdapter, Linear } from './layers';
import { Module } from './module';

/** A layer LoRA can adapt. */
export type LoraLayer = Linear | Conv2d;

/** PEFT's key prefix for the adapted model inside its PeftModel wrapper. */
export const PEFT_PREFIX = 'base_model.model.';
/** The file names PEFT's save_pretrained writes into an adapter folder. */
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
export const ADAPTER_CONFIG = 'adapter_config.json';

export interface LoraOptions {
  /** r, the rank of the update (a positive integer). */
  rank: number;
  /** alpha: the update is scaled by alpha / r (default: rank, a scaling of 1). */
  alpha?: number;
  /**
   * Which layers: 'all' (every Linear and Conv2d), 'linear', 'conv', or module names as in
   * PEFT's target_modules (a path that equals the name or ends with '.' + name, e.g. 'qkv',
   * 'attn.proj_out'); '*' matches within one path segment ('enc.*.res.conv1'). Default 'all'.
   */
  targets?: readonly string[] | string;
  /** Generator for A's initial weights (default: the shared init generator). */
  generator?: Generator;
}

/** The low-rank update of one layer: y + (alpha / r) s B(A(x)). */
export class LoraAdapter implements LayerAdapter {
  /** The run-time scale s (setLoraScale). */
  scale = 1;
  /** Whether (alpha / r) s B A is currently added into the layer's weight (mergeLora). */
  merged = false;
  constructor(
    readonly layer: LoraLayer,
    readonly A: LoraLayer,
    readonly B: LoraLayer,
    readonly rank: number,
    readonly alpha: number,
  ) {}

  /** (alpha / r) s: the factor on B A. */
  get scaling(): number {
    return (this.alpha / this.rank) * this.scale;
  }

  // Hu et al. Eq. 3: h = W0 x + Delta W x, Delta W = (alpha / r) B A; nothing to add when merged.
  apply(x: Tensor, y: Tensor): Tensor {
    return this.merged ? y : y.add(this.B.forward(this.A.forward(x)).mul(this.scaling));
  }

  /** Delta W = (alpha / r) s B A in the layer weight's shape ([out, in] or [out, in, kh, kw]). */
  deltaWeight(): Tensor {
    return tidy(() => {
      const W = this.layer.weight;
      const a = this.A.weight.detach().reshape([this.rank, -1]); // [r, in (x kh x kw)]
      const b = this.B.weight.detach().reshape([-1, this.rank]); // [out, r]
      return b.matmul(a).mul(this.scaling).reshape(W.shape).to({ dtype: W.dtype });
    });
  }
}

/** The LoRA adapter on a layer, or null. */
export function loraAdapter(m: Module): LoraAdapter | null {
  return (m instanceof Linear || m instanceof Conv2d) && m.adapter instanceof LoraAdapter ? m.adapter : null;
}

/** [module path, adapter] for every adapted layer under `module`, in module order. */
export function loraAdapters(module: Module): [string, LoraAdapter][] {
  const out: [string, LoraAdapter][] = [];
  for (const [name, m] of module.namedModules()) {
    const a = loraAdapter(m);
    if (a) out.push([name, a]);
  }
  return out;
}

const isLayer = (m: Module): m is LoraLayer => m instanceof Linear || m instanceof Conv2d;

/** Whether a module path matches one target (see LoraOptions.targets). */
function matches(pathName: string, m: Module, target: string): boolean {
  if (target === 'all') return isLayer(m);
  if (target === 'linear') return m instanceof Linear;
  if (target === 'conv') return m instanceof Conv2d;
  if (target.includes('*')) {
    const re = new RegExp(
      `(^|\\.)${target
        .split('*')
        .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('[^.]+')}$`,
    );
    return re.test(pathName);
  }
  return pathName === target || pathName.endsWith(`.${target}`);
}

/** The layers `targets` selects, by path; throws when one is not a Linear/Conv2d or none matches. */
export function loraTargets(module: Module, targets: readonly string[] | string = 'all'): [string, LoraLayer][] {
  const list = typeof targets === 'string' ? [targets] : [...targets];
  if (list.length === 0 || list.some((t) => typeof t !== 'string' || t.trim() === '')) throw new TypeError(`applyLora: targets must be non-empty names, got ${JSON.stringify(targets)}`);
  const out: [string, LoraLayer][] = [];
  for (const [name, m] of module.namedModules()) {
    if (name === '' || name.endsWith('lora_A') || name.endsWith('lora_B') || !list.some((t) => matches(name, m, t))) continue;
    if (!isLayer(m)) throw new TypeError(`applyLora: target ${JSON.stringify(name)} is a ${m.constructor.name}; LoRA adapts Linear and Conv2d layers only`);
    out.push([name, m]);
  }
  if (out.length === 0) {
    const layers = module
      .namedModules()
      .filter(([, m]) => isLayer(m))
      .map(([n]) => n);
    throw new TypeError(`applyLora: targets ${JSON.stringify(list)} match no Linear or Conv2d layer (the layers: ${layers.slice(0, 12).join(', ')}${layers.length > 12 ? ', ...' : ''})`);
  }
  return out;
}

const checkRank = (rank: number) => {
  if (!Number.isSafeInteger(rank) || rank < 1) throw new TypeError(`applyLora: rank must be a positive integer, got ${rank}`);
};
const checkAlpha = (alpha: number) => {
  if (!Number.isFinite(alpha) || alpha <= 0) throw new TypeError(`applyLora: alpha must be a number > 0, got ${alpha}`);
};

/** Builds A and B for one layer (A kaiming-uniform a = sqrt(5), B = 0), attaches them, returns the adapter. */
function attach(name: string, layer: LoraLayer, rank: number, alpha: number, generator: Generator): LoraAdapter {
  if (layer.adapter) throw new Error(`applyLora: ${JSON.stringify(name)} already has an adapter`);
  let A: LoraLayer;
  let B: LoraLayer;
  if (layer instanceof Linear) {
    A = new Linear(layer.inFeatures, rank, { bias: false, generator });
    B = new Linear(rank, layer.outFeatures, { bias: false, generator });
  } else {
    if ((layer.opts.groups ?? 1) !== 1) throw new TypeError(`applyLora: ${JSON.stringify(name)} is a grouped conv (groups ${layer.opts.groups}); LoRA adapts groups = 1 only`);
    const [, , kh, kw] = layer.weight.shape;
    const { stride, padding, dilation } = layer.opts;
    A = new Conv2d(layer.inChannels, rank, [kh, kw], { stride, padding, dilation, bias: false, generator });
    B = new Conv2d(rank, layer.outChannels, 1, { bias: false, generator });
  }
  noGrad(() => B.weight.zero_());
  const to = { dtype: layer.weight.dtype, device: layer.weight.device };
  if (to.dtype !== 'float32' || to.device !== 'cpu') {
    A.to(to);
    B.to(to);
  }
  layer.attach('lora_A', A);
  layer.attach('lora_B', B);
  const adapter = new LoraAdapter(layer, A, B, rank, alpha);
  layer.adapter = adapter;
  return adapter;
}

/** Freezes every parameter of `module` that is not a LoRA weight (PEFT's mark_only_lora_as_trainable). */
function freezeBase(module: Module): void {
  const lora = new Set(loraParameters(module));
  for (const p of module.parameters()) if (!lora.has(p)) p.requiresGrad_(false);
}

/**
 * Adds LoRA adapters to the chosen Linear/Conv2d layers of `module` and freezes its other
 * parameters; returns the adapted paths. The adapted module computes what it computed before
 * (B = 0) until the adapters train.
 *
 * @example
 *   applyLora(unet, { rank: 8, alpha: 16, targets: ['qkv', 'proj_out'] });   // ['mid.0.attn.qkv', ...]
 */
export function applyLora(module: Module, { rank, alpha = rank, targets = 'all', generator = initGenerator() }: LoraOptions): string[] {
  checkRank(rank);
  checkAlpha(alpha);
  const layers = loraTargets(module, targets);
  for (const [name, layer] of layers) attach(name, layer, rank, alpha, generator);
  freezeBase(module);
  return layers.map(([n]) => n);
}

/** The adapter weights (A and B of every adapted layer): what trains. */
export function loraParameters(module: Module): Tensor[] {
  return loraNamedParameters(module).map(([, t]) => t);
}

/** [state-dict name, tensor] of every adapter weight ('<path>.lora_A.weight', ...). */
export function loraNamedParameters(module: Module): [string, Tensor][] {
  const out: [string, Tensor][] = [];
  for (const [name, a] of loraAdapters(module)) out.push([`${name}.lora_A.weight`, a.A.weight], [`${name}.lora_B.weight`, a.B.weight]);
  return out;
}

function requireAdapters(module: Module, fn: string): [string, LoraAdapter][] {
  const list = loraAdapters(module);
  if (list.length === 0) throw new Error(`${fn}: the module has no LoRA adapters (applyLora or loadLora first)`);
  return list;
}

/** Sets the run-time scale s of every adapter (0 turns them off, 1 is as trained); re-merges merged ones. */
export function setLoraScale(module: Module, scale: number): void {
  if (!Number.isFinite(scale)) throw new TypeError(`setLoraScale: scale must be a finite number, got ${scale}`);
  for (const [, a] of requireAdapters(module, 'setLoraScale')) {
    const merged = a.merged;
    if (merged) unmergeOne(a);
    a.scale = scale;
    if (merged) mergeOne(a);
  }
}

function mergeOne(a: LoraAdapter): void {
  tidy(() => noGrad(() => a.layer.weight.add_(a.deltaWeight())));
  a.merged = true;
}

function unmergeOne(a: LoraAdapter): void {
  tidy(() => noGrad(() => a.layer.weight.sub_(a.deltaWeight())));
  a.merged = false;
}

/** W' = W + (alpha / r) s B A in every adapted layer (forward then skips the adapter branch: faster sampling). */
export function mergeLora(module: Module): void {
  for (const [, a] of requireAdapters(module, 'mergeLora')) if (!a.merged) mergeOne(a);
}

/** W = W' - (alpha / r) s B A: undoes mergeLora (to float rounding). */
export function unmergeLora(module: Module): void {
  for (const [, a] of requireAdapters(module, 'unmergeLora')) if (a.merged) unmergeOne(a);
}

/** PEFT's adapter_config.json (the fields a LoRA adapter of this kind has). */
export interface PeftLoraConfig {
  peft_type: 'LORA';
  r: number;
  lora_alpha: number;
  target_modules: string[];
  lora_dropout: number;
  bias: 'none';
  fan_in_fan_out: boolean;
  init_lora_weights: boolean;
  inference_mode: boolean;
  base_model_name_or_path: string | null;
  task_type: string | null;
  modules_to_save: string[] | null;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
}

/** The adapters' file contents: PEFT keys -> weights (the module's own tensors), and the config. */
export function loraStateDict(module: Module): { tensors: Record<string, Tensor>; config: PeftLoraConfig } {
  const list = requireAdapters(module, 'saveLora');
  const [, first] = list[0];
  const other = list.find(([, a]) => a.rank !== first.rank || a.alpha !== first.alpha);
  if (other)
    throw new Error(
      `saveLora: adapters differ in rank or alpha (${list[0][0]}: r ${first.rank}, alpha ${first.alpha}; ${other[0]}: r ${other[1].rank}, alpha ${other[1].alpha}); one file holds one rank and alpha`,
    );
  const tensors: Record<string, Tensor> = {};
  for (const [name, a] of list) {
    tensors[`${PEFT_PREFIX}${name}.lora_A.weight`] = a.A.weight;
    tensors[`${PEFT_PREFIX}${name}.lora_B.weight`] = a.B.weight;
  }
  const config: PeftLoraConfig = {
    peft_type: 'LORA',
    r: first.rank,
    lora_alpha: first.alpha,
    target_modules: list.map(([n]) => n),
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    init_lora_weights: true,
    inference_mode: true,
    base_model_name_or_path: null,
    task_type: null,
    modules_to_save: null,
    rank_pattern: {},
    alpha_pattern: {},
  };
  return { tensors, config };
}

const isFolder = (p: string) => !p.endsWith('.safetensors');

/**
 * Writes only the adapters: to `FILE.safetensors` (the config in its metadata, key
 * lora_config), or to a folder as PEFT's save_pretrained does (adapter_model.safetensors +
 * adapter_config.json). `metadata` adds string entries to the safetensors header (e.g. what
 * sampling with the adapter needs). Returns the weights file.
 *
 * @example
 *   saveLora(unet, 'runs/x/lora');              // runs/x/lora/adapter_model.safetensors, adapter_config.json
 *   saveLora(unet, 'adapter.safetensors');
 */
export function saveLora(module: Module, file: string, { metadata = {} }: { metadata?: Record<string, string> } = {}): string {
  const { tensors, config } = loraStateDict(module);
  const json = JSON.stringify(config, null, 2);
  let weights = file;
  if (isFolder(file)) {
    fs.mkdirSync(file, { recursive: true });
    weights = path.join(file, ADAPTER_WEIGHTS);
  }
  saveSafetensors(weights, tensors, { ...metadata, format: 'pt', lora_config: json });
  if (isFolder(file)) writeFileAtomic(path.join(file, ADAPTER_CONFIG), json + '\n');
  return weights;
}

/**
 * Copies an adapter (a folder or a .safetensors file, as saveLora writes them) to `dst` in the
 * same form with its weights cast to `dtype` and its metadata kept: how an adapter is shipped
 * (float16 halves it; loadLora casts the weights to each layer's dtype). Returns the weights file.
 *
 * @example
 *   exportLora('runs/lcm-lora/lcm/lcm/lora', 'models/fashion-mnist-lcm-lora', 'float16');
 */
export function exportLora(src: string, dst: string, dtype: DType): string {
  const metadata = loraMetadata(src); // checks that src is an adapter
  const from = fs.statSync(src).isDirectory() ? path.join(src, ADAPTER_WEIGHTS) : src;
  if (isFolder(src) !== isFolder(dst)) throw new Error(`exportLora: ${src} and ${dst} must both be folders or both .safetensors files`);
  const { tensors } = loadSafetensors(from);
  try {
    const cast = castTensors(tensors, dtype);
    let weights = dst;
    if (isFolder(dst)) {
      fs.mkdirSync(dst, { recursive: true });
      weights = path.join(dst, ADAPTER_WEIGHTS);
      const config = path.join(src, ADAPTER_CONFIG);
      if (fs.existsSync(config)) fs.copyFileSync(config, path.join(dst, ADAPTER_CONFIG));
    }
    try {
      saveSafetensors(weights, cast, metadata);
    } finally {
      dispose(cast);
    }
    return weights;
  } finally {
    dispose(tensors);
  }
}

/**
 * The safetensors header metadata of an adapter (a folder or a .safetensors file), without reading its weights.
 *
 * @example
 *   loraMetadata('runs/x/lora').lora_config;   // the PEFT config as JSON
 */
export function loraMetadata(file: string): Record<string, string> {
  if (!fs.existsSync(file)) throw new Error(`loadLora: ${file} does not exist`);
  const weights = fs.statSync(file).isDirectory() ? path.join(file, ADAPTER_WEIGHTS) : file;
  if (!fs.existsSync(weights)) throw new Error(`loadLora: ${file} has no ${ADAPTER_WEIGHTS}`);
  return readSafetensorsHeader(weights).metadata;
}

/** Reads an adapter (a folder or a .safetensors file): its weights by layer path and its rank/alpha. */
function readLora(file: string): { layers: Map<string, { A: Tensor; B: Tensor }>; alpha: number | null; owned: Record<string, Tensor> } {
  let weights = file;
  let config: Partial<PeftLoraConfig> | null = null;
  const readJson = (p: string) => {
    try {
      return JSON.parse(fs.readFileSync(p, 'utf8')) as Partial<PeftLoraConfig>;
    } catch (e) {
      throw new Error(`loadLora: ${p}: ${(e as Error).message}`);
    }
  };
  if (!fs.existsSync(file)) throw new Error(`loadLora: ${file} does not exist`);
  if (fs.statSync(file).isDirectory()) {
    weights = path.join(file, ADAPTER_WEIGHTS);
    if (!fs.existsSync(weights)) throw new Error(`loadLora: ${file} has no ${ADAPTER_WEIGHTS}`);
    if (fs.existsSync(path.join(file, ADAPTER_CONFIG))) config = readJson(path.join(file, ADAPTER_CONFIG));
  }
  const { tensors, metadata } = loadSafetensors(weights);
  try {
    if (!config && metadata.lora_config) config = JSON.parse(metadata.lora_config) as Partial<PeftLoraConfig>;
    const layers = new Map<string, { A: Tensor; B: Tensor }>();
    for (const [key, t] of Object.entries(tensors)) {
      const m = /^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(key);
      if (!m) throw new Error(`loadLora: ${weights}: ${JSON.stringify(key)} is not a LoRA weight (expected ${PEFT_PREFIX}<path>.lora_A.weight or .lora_B.weight)`);
      const entry = layers.get(m[1]) ?? ({} as { A: Tensor; B: Tensor });
      entry[m[2] as 'A' | 'B'] = t;
      layers.set(m[1], entry);
    }
    for (const [name, e] of layers) if (!e.A || !e.B) throw new Error(`loadLora: ${weights}: ${name} has lora_${e.A ? 'A' : 'B'} but not lora_${e.A ? 'B' : 'A'}`);
    if (layers.size === 0) throw new Error(`loadLora: ${weights} holds no LoRA weights`);
    const alpha = config && typeof config.lora_alpha === 'number' ? config.lora_alpha : null;
    return { layers, alpha, owned: tensors };
  } catch (e) {
    dispose(tensors);
    throw e;
  }
}

/**
 * Adds the adapters of a LoRA file or folder (saveLora's, or PEFT's) to a freshly built
 * `module` and loads their weights; freezes the base. The file's keys say which layers get
 * adapters, A's shape the rank, its config lora_alpha (alpha = r when it has none). Returns
 * the adapted paths.
 *
 * @example
 *   const unet = new UNet(cfg); loadModule(unet, 'model.safetensors');
 *   loadLora(unet, 'runs/x/lora', { scale: 0.8 });
 */
export function loadLora(module: Module, file: string, { scale = 1 }: { scale?: number } = {}): string[] {
  const { layers, alpha, owned } = readLora(file);
  try {
    const byName = new Map(module.namedModules());
    const missing = [...layers.keys()].find((n) => !byName.has(n));
    if (missing !== undefined) throw new Error(`loadLora: ${file} adapts ${JSON.stringify(missing)}, which this network does not have`);
    const plan: [string, LoraLayer, Tensor, Tensor, number][] = [];
    for (const [name, layer] of byName) {
      if (!layers.has(name)) continue; // in module order
      const { A, B } = layers.get(name)!;
      if (!isLayer(layer)) throw new Error(`loadLora: ${file} adapts ${JSON.stringify(name)}, a ${layer.constructor.name}; LoRA adapts Linear and Conv2d layers only`);
      if (layer.adapter) throw new Error(`loadLora: ${JSON.stringify(name)} already has an adapter`);
      plan.push([name, layer, A, B, A.shape[0]]);
    }
    const added: LoraAdapter[] = [];
    try {
      for (const [name, layer, A, B, rank] of plan) {
        const a = attach(name, layer, rank, alpha ?? rank, initGenerator());
        added.push(a);
        for (const [which, src, dst] of [
          ['lora_A', A, a.A.weight],
          ['lora_B', B, a.B.weight],
        ] as const)
          if (src.shape.join(',') !== dst.shape.join(','))
            throw new Error(`loadLora: ${file}: ${name}.${which}.weight has shape [${src.shape.join(', ')}], but this network's layer needs [${dst.shape.join(', ')}]`);
        noGrad(() => {
          a.A.weight.copy_(A);
          a.B.weight.copy_(B);
        });
        a.scale = scale;
      }
    } catch (e) {
      for (const a of added) removeOne(a);
      throw e;
    }
    freezeBase(module);
    return plan.map(([n]) => n);
  } finally {
    dispose(owned);
  }
}

function removeOne(a: LoraAdapter): void {
  if (a.merged) unmergeOne(a);
  a.layer.detach('lora_A')?.dispose();
  a.layer.detach('lora_B')?.dispose();
  a.layer.adapter = null;
}

/**
 * Takes the adapters off (freeing them); with `merge`, first adds them into the weights
 * (PEFT's merge_and_unload: a plain network with the adapted weights). Unfreezes the base.
 *
 * @example
 *   removeLora(unet, { merge: true });  saveModule(unet, 'merged.safetensors');
 */
export function removeLora(module: Module, { merge = false }: { merge?: boolean } = {}): void {
  for (const [, a] of requireAdapters(module, 'removeLora')) {
    if (merge) {
      if (!a.merged) mergeOne(a);
      a.merged = false; // the update stays in the weight: removeOne must not subtract it
    }
    removeOne(a);
  }
  for (const p of module.parameters()) if (!p.requiresGrad) p.requiresGrad_(true);
}
