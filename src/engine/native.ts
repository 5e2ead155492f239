// Loads the addon (build/Release/diffuse_native.node) and types its functions.
// Handles are opaque: an External that owns one at::Tensor.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** An opaque native tensor handle. */
export type Handle = { readonly __handle: unique symbol };
/** An opaque native generator handle. */
export type GenHandle = { readonly __generator: unique symbol };
/** An opaque native c10d process group handle (native/dist.cc). */
export type GroupHandle = { readonly __group: unique symbol };
type H = Handle;
type Opt<T> = T | null | undefined;
type Operand = H | number | boolean;

export interface Native {
  dispose(h: H): void;
  isDisposed(h: H): boolean;
  handleAlias(h: H): H;
  shape(h: H): number[];
  dtype(h: H): number;
  device(h: H): string;
  stats(): { tensors: number; bytes: number; hostBytes: number; gcBytes: number; storages: number };
  setNumThreads(n: number): void;
  getNumThreads(): number;
  setInteropThreads(n: number): void;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  version(): string;
  config(): string;
  mallocPolicy(): string;
  profilerStart(): void;
  profilerStop(): [name: string, kind: 'op' | 'backward', calls: number, totalUs: number, selfUs: number, topUs: number][];
  setGradEnabled(on: boolean): boolean;
  isGradEnabled(): boolean;
  autocastEnter(on: boolean, dtype: number): [boolean, number];
  autocastExit(prevOn: boolean, prevDtype: number): void;
  isAutocastEnabled(): boolean;
  newGenerator(seed: number): GenHandle;
  generatorState(g: GenHandle): Uint8Array;
  generatorSetState(g: GenHandle, state: Uint8Array): void;

  fromBytes(data: ArrayBufferView, dtype: number, shape: number[], device: Opt<string>): H;
  toBytes(h: H): Uint8Array;
  item(h: H): number | boolean;
  zeros(shape: number[], dtype: number, device: string): H;
  ones(shape: number[], dtype: number, device: string): H;
  empty(shape: number[], dtype: number, device: string): H;
  full(shape: number[], value: number | boolean, dtype: number, device: string): H;
  arange(start: number, end: number, step: number, dtype: number, device: string): H;
  linspace(start: number, end: number, steps: number, dtype: number, device: string): H;
  eye(n: number, m: number, dtype: number, device: string): H;
  fullLike(h: H, value: number | boolean, dtype: Opt<number>): H;
  rand(shape: number[], g: GenHandle, dtype: number, device: string): H;
  randn(shape: number[], g: GenHandle, dtype: number, device: string): H;
  randint(low: number, high: number, shape: number[], g: GenHandle, dtype: number, device: string): H;
  randperm(n: number, g: GenHandle, dtype: number, device: string): H;
  bernoulli(like: H, p: number, g: GenHandle): H;

  opNames(): { unary: string[]; binary: string[]; reduce: string[] };
  unary(op: number, h: H): H;
  binary(op: number, a: H, b: Operand): H;
  rbinary(op: number, a: H, b: Operand): H;
  addScaled(a: H, b: Operand, alpha: number): H;
  reduce(op: number, h: H, dims: Opt<number[]>, keepdim: boolean): H;
  norm(h: H, p: number, dims: Opt<number[]>, keepdim: boolean): H;
  argmax(h: H, dim: Opt<number>, keepdim: boolean): H;
  argmin(h: H, dim: Opt<number>, keepdim: boolean): H;
  cumsum(h: H, dim: number): H;
  topk(h: H, k: number, dim: number, largest: boolean): [H, H];
  sort(h: H, dim: number, descending: boolean): [H, H];
  where(cond: H, a: Operand, b: Operand): H;
  lerp(a: H, b: H, w: H | number): H;
  clamp(h: H, min: Opt<number>, max: Opt<number>): H;
  matmul(a: H, b: H): H;
  bmm(a: H, b: H): H;
  reshape(h: H, shape: number[]): H;
  view(h: H, shape: number[]): H;
  permute(h: H, dims: number[]): H;
  transpose(h: H, d0: number, d1: number): H;
  expand(h: H, shape: number[]): H;
  cat(hs: H[], dim: number): H;
  stack(hs: H[], dim: number): H;
  split(h: H, sizes: number | number[], dim: number): H[];
  chunk(h: H, n: number, dim: number): H[];
  unbind(h: H, dim: number): H[];
  narrow(h: H, dim: number, start: number, length: number): H;
  slice(h: H, dim: number, start: Opt<number>, end: Opt<number>, step: number): H;
  select(h: H, dim: number, index: number): H;
  indexSelect(h: H, dim: number, index: H): H;
  gather(h: H, dim: number, index: H): H;
  scatterAdd(h: H, dim: number, index: H, src: H): H;
  maskedFill(h: H, mask: H, value: number | boolean): H;
  squeeze(h: H, dim: Opt<number>): H;
  unsqueeze(h: H, dim: number): H;
  flatten(h: H, start: number, end: number): H;
  repeat(h: H, reps: number[]): H;
  flip(h: H, dims: number[]): H;
  roll(h: H, shifts: number[], dims: number[]): H;
  pad(h: H, pads: number[], mode: string, value: Opt<number>): H;
  triu(h: H, k: number): H;
  tril(h: H, k: number): H;
  contiguous(h: H): H;
  clone(h: H): H;
  isContiguous(h: H): boolean;
  to(h: H, dtype: Opt<number>, device: Opt<string>): H;
  add_(h: H, other: Operand, alpha: Opt<number>): void;
  sub_(h: H, other: Operand): void;
  mul_(h: H, other: Operand): void;
  div_(h: H, other: Operand): void;
  copy_(h: H, src: H): void;
  zero_(h: H): void;
  fill_(h: H, v: number | boolean): void;
  lerp_(h: H, end: H, w: H | number): void;
  addcmul_(h: H, a: H, b: H, value: number): void;
  addcdiv_(h: H, a: H, b: H, value: number): void;

  linear(x: H, w: H, b: Opt<H>): H;
  conv2d(x: H, w: H, b: Opt<H>, stride: number[], padding: number[], dilation: number[], groups: number): H;
  convTranspose2d(x: H, w: H, b: Opt<H>, stride: number[], padding: number[], outputPadding: number[], groups: number, dilation: number[]): H;
  groupNorm(x: H, groups: number, w: Opt<H>, b: Opt<H>, eps: number): H;
  layerNorm(x: H, shape: number[], w: Opt<H>, b: Opt<H>, eps: number): H;
  softmax(x: H, dim: number): H;
  logSoftmax(x: H, dim: number): H;
  dropout(x: H, p: number, g: Opt<GenHandle>): H;
  interpolate(x: H, mode: string, size: Opt<number[]>, scale: Opt<number | number[]>, alignCorners: boolean): H;
  avgPool2d(x: H, kernel: number[], stride: number[], padding: number[]): H;
  maxPool2d(x: H, kernel: number[], stride: number[], padding: number[]): H;
  adaptiveAvgPool2d(x: H, size: number[]): H;
  pixelShuffle(x: H, r: number): H;
  pixelUnshuffle(x: H, r: number): H;
  embedding(w: H, idx: H): H;
  sdpa(q: H, k: H, v: H, mask: Opt<H>, p: number, causal: boolean, scale: Opt<number>, g: Opt<GenHandle>): H;
  mseLoss(x: H, t: H, reduction: string): H;
  crossEntropy(x: H, t: H, reduction: string, labelSmoothing: number, weight: Opt<H>): H;

  backward(h: H, grad: Opt<H>, retainGraph: Opt<boolean>, createGraph: boolean): void;
  grad(outs: H[], ins: H[], gradOuts: Opt<H[]>, retain: Opt<boolean>, create: boolean, allowUnused: boolean): (H | null)[];
  gradOf(h: H): H | null;
  setGrad(h: H, g: Opt<H>): void;
  requiresGrad(h: H): boolean;
  setRequiresGrad(h: H, on: boolean): void;
  retainGrad(h: H): void;
  isLeaf(h: H): boolean;
  gradFn(h: H): string;
  detach(h: H): H;

  // native/optim.cc: whole-list kernels (one call per step for every parameter).
  sgdStep(params: H[], grads: Opt<Opt<H>[]>, bufs: Opt<H[]>, steps: Float64Array, lr: number, momentum: number, dampening: number, weightDecay: number, nesterov: boolean, maximize: boolean): void;
  adamStep(
    params: H[],
    grads: Opt<Opt<H>[]>,
    expAvgs: H[],
    expAvgSqs: H[],
    maxExpAvgSqs: Opt<H[]>,
    steps: Float64Array,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    decoupled: boolean,
    amsgrad: boolean,
    maximize: boolean,
  ): void;
  clipGradNorm(tensors: H[], fromParams: boolean, maxNorm: number, normType: number, errorIfNonfinite: boolean): number;
  emaUpdate(emas: H[], params: H[], beta: number): void;
  zeroGrads(params: H[], setToNone: boolean): void;
  cloneList(hs: H[]): H[];
  zerosLikeList(hs: H[]): H[];
  copyList(dsts: H[], srcs: H[]): void;

  // native/dist.cc: c10d (Gloo) process groups; distAvailable() is '' or why they are missing.
  distAvailable(): string;
  distInit(masterAddr: string, masterPort: number, rank: number, worldSize: number, timeoutMs: number, localOnly: boolean): GroupHandle;
  distDestroy(g: GroupHandle): void;
  distBroadcast(g: GroupHandle, hs: H[], root: number): void;
  distAllReduce(g: GroupHandle, hs: H[], average: boolean): void;
  distAllGather(g: GroupHandle, h: H): H[];
  distBarrier(g: GroupHandle): void;
  distAllReduceGrads(g: GroupHandle, params: H[], bucketBytes: number): number;
}

function load(): Native {
  // dist/src/engine -> repo root; also works from src/engine under a TS runner.
  const candidates = [path.resolve(__dirname, '../../../build/Release/diffuse_native.node'), path.resolve(__dirname, '../../build/Release/diffuse_native.node')];
  const file = candidates.find((c) => fs.existsSync(c));
  if (!file) {
    throw new Error(`diffuse: the native addon is not built (looked for ${candidates.join(', ')}). Run \`npm run setup\` (or \`npm run build:native\`).`);
  }
  return require(file) as Native;
}

/** The addon's functions. */
export const native: Native = load();

/** Index tables for the ops the addon dispatches by number. */
export const OPS = (() => {
  const names = native.opNames();
  const index = (list: string[]) => Object.fromEntries(list.map((n, i) => [n, i])) as Record<string, number>;
  return { unary: index(names.unary), binary: index(names.binary), reduce: index(names.reduce) };
})();

/** The default thread count: DIFFUSE_NUM_THREADS, else the cores this process may use. */
export function defaultNumThreads(): number {
  const env = process.env.DIFFUSE_NUM_THREADS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`DIFFUSE_NUM_THREADS must be a positive integer, got ${JSON.stringify(env)}`);
    return n;
  }
  return os.availableParallelism();
}

// libtorch alone would use 1 thread here. OpenMP's pool size is per thread, so each
// worker_thread that loads the engine sets its own.
native.setNumThreads(defaultNumThreads());
