/**
 * U-Net training step against PyTorch eager: the DDPM epsilon-prediction step (forward,
 * MSE loss, backward, Adam lr 1e-4) of a U-Net on a fixed batch, timed in Diffuse and in
 * PyTorch (bench/unet_peer.py, the independent twin in scripts/fixtures/nn.py), in
 * fp32 and under bf16 autocast, in one run on the same machine. Two presets:
 *   fmnist32  the benchmark U-Net (UNET_BENCH_2M, 1.74M parameters) on 64 32x32 grayscale
 *             Fashion-MNIST images (the default)
 *   emoji64   the network `diffuse train --data emoji --image-size 64 --channels rgb
 *             --class-conditional true --model-channels 16 --channel-mult 1,2,4,4
 *             --attention-resolutions 8` builds (1.13M parameters, 9 classes + the null
 *             class) on 32 64x64 RGB emoji test images with their class labels, each
 *             dropped to the null class with the trainer's labelDropout (0.1)
 *
 * Both sides do identical math: this side builds the network (seeded), saves its
 * weights and K precomputed steps (noisy inputs x_t, targets eps, timesteps t, and class
 * labels for a class-conditional network) to a temporary folder, and the peer loads both. Each side keeps one model per precision
 * and trains it continuously from the same initial weights through the same K
 * batches, so their loss curves must agree (printed: ours vs PyTorch in fp32, and
 * our bf16 against our fp32).
 *
 * Timing: repeats alternate between the two sides (the first side alternates too), so
 * background load is shared. Each side runs `warmup` untimed steps before its first repeat
 * (and `rewarm` before each later one), then each repeat is `steps` timed steps; the
 * reported images/s is the median over repeats. A step is ~140 GFLOP (80% of it in
 * convolutions, the same oneDNN kernels on both sides), so the defaults are short
 * repeats, many of them. Both sides use the same number of threads (default: every
 * core) and inherit the same environment (OMP_WAIT_POLICY, ...).
 *
 * bf16: libtorch 1.13 runs bf16 convolutions through oneDNN only on CPUs with AVX-512
 * (avx512bw/vl/dq); elsewhere it falls back to its slow reference convolution
 * (aten::_slow_conv2d), which is 10-20x slower than fp32. On such CPUs bf16 gets one
 * timed step per side by default (the --bf16-* options change that).
 *
 * Run: npx tsc -p tsconfig.json && npm run bench:unet [-- options]    (npm run bench:unet64: --preset emoji64)
 *   --preset P         fmnist32 (default) or emoji64
 *   --threads N        threads on both sides (default os.availableParallelism())
 *   --repeats R        timed repeats per side (default 5)
 *   --steps N          timed steps per repeat (default 2; emoji64: 1)
 *   --warmup W         untimed steps before the first repeat (default 1)
 *   --rewarm W         untimed steps before each later repeat (default 0)
 *   --bf16-repeats R, --bf16-steps N, --bf16-warmup W, --bf16-rewarm W   the same for bf16
 *                      (default: as fp32 on CPUs with AVX-512, else 1, 1, 0, 0)
 *   --no-bf16          fp32 only
 *   --curve-steps C    train our fp32 and bf16 models (untimed) until both have C steps, for the
 *                      loss-curve comparison (default 30 with AVX-512, emoji64: 10; else only the timed steps)
 *   --data fashion|emoji|random   the fixed batch: the preset's real images (fmnist32: Fashion-MNIST
 *                      test images 0-63; emoji64: a seeded subset of 32 emoji test images; the
 *                      default when installed) or seeded uniform noise in [-1, 1] (and uniform labels)
 *   --seed S           weights and noise seed (default 0)
 *   --python PATH      the peer's interpreter (default $DIFFUSE_PYTHON or /usr/bin/python3)
 *   --profile          at the end, one more fp32 step per side (fresh models, one warm-up step)
 *                      under the op profilers (ours: profile(); theirs: torch.autograd.profiler,
 *                      both ATen's RecordFunction) and a table of self time per op, side by side,
 *                      with the time outside ATen (JS/N-API vs Python)
 *
 * The last line is `unet train step ratio vs pytorch: R`, R = our fp32 images/s over PyTorch's.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { autocast, dispose, F, Generator, getNumThreads, keep, mallocPolicy, profile, ProfileReport, saveSafetensors, setNumThreads, stack, tensor, Tensor, tidy, torchVersion } from '../src/engine';
import { DatasetError, EMOJI_CATEGORIES, imageSubset, loadEmoji, loadFashionMNIST } from '../src/data';
import { UNet, UNET_BENCH_2M, UNetConfig } from '../src/models';
import { resolveTrainConfig } from '../src/training/config';
import { materializeConfig, networkSpec } from '../src/training/build';
import { discreteVP, linearBetas } from '../src/core';
import { loadModule, saveModule } from '../src/nn';
import { Adam } from '../src/optim';
import { median, Peer } from './peer';
import { compareCurves, cpuModel, emptyRun, emptyTiming, PeerProfile, profileTable, record, RunResult, timedStep, Timing } from './step-timing';

type Mode = 'fp32' | 'bf16';

/** How one precision is timed on each side. */
interface Plan {
  repeats: number;
  warmup: number;
  rewarm: number;
  steps: number;
}

/** What a preset fixes: the network, the batch and where its images come from. */
export interface Preset {
  /** The network's name in the report. */
  model: string;
  config: Partial<UNetConfig>;
  batch: number;
  /** The real images of the preset's size. */
  data: 'fashion' | 'emoji';
  /** Probability that a class label becomes the null class (classifier-free guidance training); unused without classes. */
  labelDropout: number;
  /** Defaults of --steps and of --curve-steps on CPUs with AVX-512 (a 64 px RGB step takes several seconds on 2 cores). */
  steps: number;
  curveSteps: number;
}

/** The network and label dropout the trainer derives for the 64 px RGB class-conditional emoji run (src/training/build.ts). */
function emoji64(): Preset {
  const config = resolveTrainConfig({
    data: 'emoji',
    imageSize: 64,
    channels: 'rgb',
    classConditional: true,
    model: { type: 'unet', modelChannels: 16, channelMult: [1, 2, 4, 4], attentionResolutions: [8] },
  });
  const data = { kind: 'images' as const, shape: [3, 64, 64], classNames: EMOJI_CATEGORIES.slice() };
  const full = materializeConfig(config, data);
  const spec = networkSpec(full, data);
  if (spec.type !== 'unet') throw new Error(`unet bench: the emoji64 network is a ${spec.type}, not a unet`);
  return {
    model: 'emoji 64 px U-Net (diffuse train --data emoji --image-size 64 --channels rgb --class-conditional true --model-channels 16 --channel-mult 1,2,4,4 --attention-resolutions 8)',
    config: spec.config,
    batch: 32,
    data: 'emoji',
    labelDropout: full.labelDropout,
    steps: 1,
    curveSteps: 10,
  };
}

/** The presets by --preset name (functions: emoji64 derives its network from the trainer's config). */
export const PRESETS: Readonly<Record<string, () => Preset>> = {
  fmnist32: () => ({ model: 'UNET_BENCH_2M', config: UNET_BENCH_2M, batch: 64, data: 'fashion', labelDropout: 0, steps: 2, curveSteps: 30 }),
  emoji64,
};

interface Options {
  preset: Preset;
  presetName: string;
  threads: number;
  repeats: number;
  warmup: number;
  rewarm: number;
  steps: number;
  bf16: Plan | null;
  curveSteps: number;
  /** The fixed batch's images; null: the preset's real images, or random noise when they are not installed. */
  data: 'fashion' | 'emoji' | 'random' | null;
  seed: number;
  python: string;
  profile: boolean;
}

const LR = 1e-4;
const T = 1000; // DDPM: linear betas 1e-4 .. 0.02 over 1000 steps (Ho et al. 2020, Sec. 4)

/** oneDNN's bf16 path in libtorch 1.13 needs AVX-512 (mkldnn_bf16_device_check: avx512bw, vl, dq). */
function cpuFlags(): Set<string> {
  try {
    const line = fs
      .readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('flags'));
    return new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

function parseArgs(argv: string[]): Options {
  const flags = cpuFlags();
  const fastBf16 = ['avx512bw', 'avx512vl', 'avx512dq'].every((f) => flags.has(f));
  const a = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (!k.startsWith('--')) throw new Error(`unet bench: unexpected argument ${k}`);
    if (k === '--no-bf16' || k === '--profile') a.set(k, '1');
    else if (i + 1 < argv.length) a.set(k, argv[++i]);
    else throw new Error(`unet bench: ${k} needs a value`);
  }
  const known = [
    '--threads',
    '--repeats',
    '--warmup',
    '--rewarm',
    '--steps',
    '--bf16-repeats',
    '--bf16-warmup',
    '--bf16-rewarm',
    '--bf16-steps',
    '--no-bf16',
    '--curve-steps',
    '--data',
    '--seed',
    '--python',
    '--profile',
    '--preset',
  ];
  for (const k of a.keys()) if (!known.includes(k)) throw new Error(`unet bench: unknown option ${k} (known: ${known.join(' ')})`);
  const int = (k: string, d: number, min = 0) => {
    const v = a.has(k) ? Number(a.get(k)) : d;
    if (!Number.isSafeInteger(v) || v < min) throw new Error(`unet bench: ${k} must be an integer >= ${min}, got ${a.get(k)}`);
    return v;
  };
  const presetName = a.get('--preset') ?? 'fmnist32';
  if (!Object.hasOwn(PRESETS, presetName)) throw new Error(`unet bench: --preset must be one of ${Object.keys(PRESETS).join(', ')}, got ${presetName}`);
  const preset = PRESETS[presetName]();
  const repeats = int('--repeats', 5, 1);
  const warmup = int('--warmup', 1);
  const rewarm = int('--rewarm', 0);
  const steps = int('--steps', preset.steps, 1);
  const bf16 = a.has('--no-bf16')
    ? null
    : {
        repeats: int('--bf16-repeats', fastBf16 ? repeats : 1, 1),
        warmup: int('--bf16-warmup', fastBf16 ? warmup : 0),
        rewarm: int('--bf16-rewarm', fastBf16 ? rewarm : 0),
        steps: int('--bf16-steps', fastBf16 ? steps : 1, 1),
      };
  const data = a.get('--data') ?? null;
  if (data !== null && data !== preset.data && data !== 'random') throw new Error(`unet bench: --data must be ${preset.data} or random with --preset ${presetName}, got ${data}`);
  return {
    preset,
    presetName,
    threads: int('--threads', os.availableParallelism(), 1),
    repeats,
    warmup,
    rewarm,
    steps,
    bf16,
    curveSteps: int('--curve-steps', fastBf16 ? preset.curveSteps : 0),
    data,
    seed: int('--seed', 0),
    python: a.get('--python') ?? process.env.DIFFUSE_PYTHON ?? '/usr/bin/python3',
    profile: a.has('--profile'),
  };
}

/** Steps each side takes per precision. */
function stepsPerSide(p: Plan): number {
  return p.warmup + (p.repeats - 1) * p.rewarm + p.repeats * p.steps;
}

/** The fixed batch: x0 in [-1, 1], [B, C, S, S], and its class labels [B] int64 (null for an unconditional network). */
export type FixedBatch = {
  x0: Tensor;
  labels: Tensor | null;
}; // a type, not an interface: tidy, keep and dispose take it as a tensor container

/** The preset's batch from its real images (the first B Fashion-MNIST test images; a seeded subset of the emoji test split). */
function realBatch(p: Preset, seed: number): FixedBatch {
  const ds = p.data === 'fashion' ? loadFashionMNIST({ split: 'test', pad32: true }) : loadEmoji({ split: 'test', size: p.config.imageSize });
  try {
    return tidy(() => {
      const { x, labels } = p.data === 'fashion' ? { x: ds.images.narrow(0, 0, p.batch), labels: null } : imageSubset(ds, p.batch, { seed, what: 'the emoji test split' });
      return { x0: x.float().div(127.5).sub(1), labels: p.config.numClasses && labels ? tensor(labels, { dtype: 'int64' }) : null };
    });
  } finally {
    dispose([ds.images, ds.labels]);
  }
}

/** Seeded uniform noise in [-1, 1] of the preset's shape, and uniform labels. */
function randomBatch(p: Preset, g: Generator): FixedBatch {
  const { inChannels = 1, imageSize = 32, numClasses = null } = p.config;
  return { x0: g.rand([p.batch, inChannels, imageSize, imageSize]).mul(2).sub(1), labels: numClasses ? g.randint(0, numClasses, [p.batch]) : null };
}

/** K precomputed training steps: noisy inputs, targets, timesteps and (for a class-conditional network) labels. */
export type Steps = {
  xt: Tensor;
  eps: Tensor;
  t: Tensor;
  labels?: Tensor;
};

/**
 * K DDPM training batches from x0: t ~ U{0..999}, eps ~ N(0, I),
 * x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. Returns xt, eps [K, B, C, S, S] and t [K, B] (float32);
 * with labels, labels [K, B] int64, each set to the null class (numClasses) with probability labelDropout.
 */
export function ddpmBatches({ x0, labels }: FixedBatch, K: number, g: Generator, labelDropout: number, numClasses: number | null): Steps {
  return tidy(() => {
    const B = x0.dim(0);
    const { alphaBar } = discreteVP(linearBetas(T));
    const sa = alphaBar.map(Math.sqrt);
    const sb = alphaBar.map((ab) => Math.sqrt(1 - ab));
    // Drawn step by step, so step k's batch does not depend on K.
    const ts: Tensor[] = [];
    const es: Tensor[] = [];
    const ls: Tensor[] = [];
    for (let k = 0; k < K; k++) {
      ts.push(g.randint(0, T, [B])); // int64
      es.push(g.randn(x0.shape));
      // Classifier-free guidance training, as the trainer (src/training/trainer.ts): a label becomes the null class with probability labelDropout.
      if (labels && numClasses !== null) ls.push(g.rand([B]).lt(labelDropout).where(numClasses, labels));
    }
    const t = stack(ts); // [K, B]
    const eps = stack(es); // [K, B, C, S, S]
    const coef = (c: Float64Array) => tensor(c).indexSelect(0, t.flatten()).float().reshape([K, B, 1, 1, 1]);
    const xt = x0
      .unsqueeze(0)
      .mul(coef(sa))
      .add(eps.mul(coef(sb)));
    return { xt, eps, t: t.float(), ...(ls.length ? { labels: stack(ls) } : {}) }; // labels [K, B]
  });
}

/** One side's model + optimizer for one precision, trained through the K batches in order. */
class OurTrainer {
  readonly net: UNet;
  readonly opt: Adam;
  private k = 0;

  constructor(
    readonly mode: Mode,
    weights: string,
    config: Partial<UNetConfig>,
    private readonly data: Steps,
  ) {
    this.net = new UNet(config, { generator: new Generator(0) });
    loadModule(this.net, weights);
    this.net.train();
    this.opt = new Adam(this.net.parameters(), { lr: LR });
  }

  run(n: number): RunResult {
    const r = emptyRun();
    const K = this.data.xt.dim(0);
    for (let i = 0; i < n; i++) {
      const k = this.k++ % K;
      timedStep(
        r,
        () => {
          const { xt, eps, t, labels } = this.data;
          const forward = () => F.mseLoss(this.net.forward(xt.select(0, k), t.select(0, k), labels?.select(0, k)).float(), eps.select(0, k));
          return this.mode === 'bf16' ? autocast(forward) : forward();
        },
        this.opt,
      );
    }
    return r;
  }

  dispose(): void {
    this.opt.dispose();
    this.net.dispose();
  }
}

/** One more fp32 step per side under the op profilers: fresh models from the saved weights, one warm-up step each. */
async function profileStep(weights: string, config: Partial<UNetConfig>, data: Steps, peer: Peer): Promise<{ ours: ProfileReport; theirs: PeerProfile }> {
  const tr = new OurTrainer('fp32', weights, config, data);
  try {
    tr.run(1);
    const { report } = profile(() => tr.run(1));
    await peer.request({ cmd: 'init', mode: 'fp32' });
    await peer.request({ cmd: 'run', mode: 'fp32', steps: 1 });
    return { ours: report, theirs: await peer.request<PeerProfile>({ cmd: 'profile', mode: 'fp32' }) };
  } finally {
    tr.dispose();
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  setNumThreads(o.threads);
  const wall0 = performance.now();
  const plans: [Mode, Plan][] = [['fp32', { repeats: o.repeats, warmup: o.warmup, rewarm: o.rewarm, steps: o.steps }]];
  if (o.bf16) plans.push(['bf16', o.bf16]);
  const curveSteps = o.bf16 ? o.curveSteps : 0;
  const K = Math.max(...plans.map(([, p]) => stepsPerSide(p)), curveSteps);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-unet-bench-'));
  const weights = path.join(dir, 'unet.safetensors');
  const dataFile = path.join(dir, 'data.safetensors');
  const g = new Generator(o.seed);
  const { preset: p } = o;
  const init = new UNet(p.config, { generator: g });
  const cfg = init.config;
  const params = init.numParameters();
  saveModule(init, weights, { kind: 'UNet', config: JSON.stringify(init.config) });
  init.dispose();
  let dataKind = o.data ?? p.data;
  let fallback = '';
  let fixed: FixedBatch;
  try {
    fixed = dataKind === 'random' ? randomBatch(p, g) : realBatch(p, o.seed);
  } catch (e) {
    if (o.data !== null || !(e instanceof DatasetError)) throw e;
    fallback = ` (${p.data} images not available: ${e.message.split('\n')[0]})`;
    dataKind = 'random';
    fixed = randomBatch(p, g);
  }
  const data = keep(tidy(() => ddpmBatches(fixed, K, g, p.labelDropout, cfg.numClasses)));
  dispose(fixed);
  saveSafetensors(dataFile, { ...data }, { steps: String(K), batch: String(p.batch), lr: String(LR) });

  console.log(
    `diffuse unet train-step bench: libtorch ${torchVersion()}, ${getNumThreads()} threads, ${cpuModel()} (${os.cpus().length} logical CPUs), load average ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  const images = { fashion: `Fashion-MNIST test 0-${p.batch - 1}`, emoji: `emoji test split, seeded subset (seed ${o.seed})`, random: `uniform noise${fallback}` }[dataKind];
  const classes =
    cfg.numClasses === null
      ? 'unconditional'
      : `${cfg.numClasses} classes + the null class; labels: ${dataKind === 'random' ? 'uniform' : "the images' classes"}, each the null class with probability ${p.labelDropout}`;
  console.log(`  preset ${o.presetName}: model ${p.model}, ${params.toLocaleString('en-US')} parameters, ${classes}`);
  console.log(`  batch ${p.batch} x ${cfg.inChannels} x ${cfg.imageSize} x ${cfg.imageSize} (${images}), DDPM eps loss, Adam lr ${LR}`);
  console.log(`  malloc: ours ${mallocPolicy()}; pytorch glibc's policy (and any MALLOC_* settings both sides inherit)`);
  console.log(`  OMP_WAIT_POLICY=${process.env.OMP_WAIT_POLICY ?? '(unset)'}; ${K} precomputed steps in ${dir}`);
  if (os.loadavg()[0] > os.availableParallelism() / 2 && !process.env.OMP_WAIT_POLICY)
    console.log('  note: the machine is busy; OpenMP threads spin while they wait, which makes both sides several times slower under load (OMP_WAIT_POLICY=PASSIVE avoids that)');
  const peerScript = path.resolve(__dirname, '..', '..', 'bench', 'unet_peer.py');
  let peer: Peer | null = null;
  const results = new Map<string, Timing>();
  const ours = new Map<Mode, OurTrainer>();
  let profiles: { ours: ProfileReport; theirs: PeerProfile } | null = null;
  try {
    const { peer: live, hello } = await Peer.start(o.python, peerScript, [dir, String(o.threads)]);
    peer = live;
    const ready = hello as { torch: string; python: string; threads: number; parameters: number; optimizer: string; malloc_env: Record<string, string> };
    console.log(`  peer: PyTorch ${ready.torch} eager (${ready.python}), ${ready.threads} threads, ${ready.parameters.toLocaleString('en-US')} parameters, optimizer ${ready.optimizer}`);
    const env = (e: Record<string, string | undefined>) =>
      Object.keys(e)
        .filter((k) => /^(MALLOC_|GLIBC_TUNABLES$|DIFFUSE_MALLOC$)/.test(k))
        .sort()
        .map((k) => `${k}=${e[k]}`)
        .join(' ') || '(none)';
    console.log(`  allocator environment: ours ${env(process.env)}; the peer's ${env(ready.malloc_env)}`);
    if (ready.threads !== getNumThreads()) throw new Error(`thread counts differ: ours ${getNumThreads()}, peer ${ready.threads}`);
    if (ready.parameters !== params) throw new Error(`parameter counts differ: ours ${params}, peer ${ready.parameters}`);
    if (o.bf16 && !['avx512bw', 'avx512vl', 'avx512dq'].every((f) => cpuFlags().has(f)))
      console.log("  note: this CPU has no AVX-512, so bf16 convolutions use libtorch's slow reference kernel (both sides); bf16 gets fewer steps");

    for (const [mode, plan] of plans) {
      const trainer = new OurTrainer(mode, weights, p.config, data);
      ours.set(mode, trainer);
      await live.request({ cmd: 'init', mode });
      const mine = emptyTiming();
      const theirs = emptyTiming();
      results.set(`${mode} ours`, mine);
      results.set(`${mode} peer`, theirs);
      for (let rep = 0; rep < plan.repeats; rep++) {
        const warmup = rep === 0 ? plan.warmup : plan.rewarm;
        const sides = [
          async () => record(mine, trainer.run(warmup + plan.steps), warmup, p.batch),
          async () => record(theirs, await live.request<RunResult>({ cmd: 'run', mode, steps: warmup + plan.steps }), warmup, p.batch),
        ];
        if (rep % 2) sides.reverse();
        for (const side of sides) await side();
        const last = (t: Timing) => t.ips[t.ips.length - 1].toFixed(2);
        console.log(`  ${mode} repeat ${rep + 1}/${plan.repeats}: diffuse ${last(mine)} img/s, pytorch ${last(theirs)} img/s`);
      }
    }
    // Loss curves: extend our fp32 and bf16 trajectories (untimed) to curveSteps.
    for (const mode of ['fp32', 'bf16'] as Mode[]) {
      const tr = ours.get(mode);
      const res = results.get(`${mode} ours`);
      if (!tr || !res) continue;
      while (res.losses.length < curveSteps) {
        res.losses.push(...tr.run(1).losses);
        if (res.losses.length % 5 === 0 || res.losses.length === curveSteps)
          console.log(
            `  loss curve ${mode} (diffuse): ${res.losses.length}/${curveSteps} steps, last 5: ${res.losses
              .slice(-5)
              .map((x) => x.toFixed(4))
              .join(' ')}`,
          );
      }
    }
    if (o.profile) profiles = await profileStep(weights, p.config, data, live);
  } finally {
    await peer?.close().catch(() => undefined);
    for (const tr of ours.values()) tr.dispose();
    dispose(data);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // ---- report
  const row = (name: string, t: Timing) => {
    const ms = (xs: number[]) => median(xs).toFixed(0);
    const spread = t.ips.length > 1 ? `${Math.min(...t.ips).toFixed(2)}-${Math.max(...t.ips).toFixed(2)}` : '-';
    const cells = [name, median(t.ips).toFixed(2), spread, ms(t.total), ms(t.fwd), ms(t.bwd), ms(t.opt), ms(t.cpu), `${t.ips.length} x ${t.total.length / t.ips.length}`];
    return `| ${cells.map((c, i) => (i === 0 ? c.padEnd(12) : c.padStart(widths[i]))).join(' | ')} |`;
  };
  const head = ['side', 'images/s', 'min-max', 'ms/step', 'fwd ms', 'bwd ms', 'optim ms', 'cpu ms/step', 'repeats x steps'];
  const widths = head.map((h) => Math.max(h.length, 12));
  console.log('');
  console.log(`| ${head.map((h, i) => (i === 0 ? h.padEnd(12) : h.padStart(widths[i]))).join(' | ')} |`);
  console.log(`|${head.map((_, i) => (i === 0 ? '-'.repeat(14) : '-'.repeat(widths[i] + 1) + ':')).join('|')}|`);
  for (const [mode] of plans) {
    console.log(row(`${mode} diffuse`, results.get(`${mode} ours`)!));
    console.log(row(`${mode} pytorch`, results.get(`${mode} peer`)!));
  }
  console.log('images/s: median over repeats (min-max: over repeats); ms columns: medians over all timed steps;');
  console.log('cpu ms/step: process CPU time of all threads per step (wall time counts other jobs, CPU time mostly does not)');
  const ips = (k: string) => median(results.get(k)!.ips);
  const R = ips('fp32 ours') / ips('fp32 peer');
  console.log('');
  const cpu = (k: string) => median(results.get(k)!.cpu);
  const mine = results.get('fp32 ours')!.ips;
  const paired = mine.map((v, i) => v / results.get('fp32 peer')!.ips[i]);
  console.log(`fp32: diffuse / pytorch images/s = ${R.toFixed(3)}; by CPU time per step (pytorch / diffuse) = ${(cpu('fp32 peer') / cpu('fp32 ours')).toFixed(3)}`);
  console.log(
    `fp32 paired: ratios of back-to-back repeats, median ${median(paired).toFixed(3)} [${Math.min(...paired).toFixed(3)}-${Math.max(...paired).toFixed(3)}], ours faster in ${paired.filter((r) => r > 1).length} of ${paired.length}`,
  );
  if (o.bf16) {
    console.log(`bf16: diffuse / pytorch images/s = ${(ips('bf16 ours') / ips('bf16 peer')).toFixed(3)}`);
    console.log(`bf16 autocast speed-up over fp32: diffuse ${(ips('bf16 ours') / ips('fp32 ours')).toFixed(3)}x, pytorch ${(ips('bf16 peer') / ips('fp32 peer')).toFixed(3)}x`);
  }
  const curve = (k: string) => results.get(k)!.losses;
  const same = compareCurves(curve('fp32 ours'), curve('fp32 peer'));
  console.log(`loss curve, fp32 diffuse vs pytorch (same weights, data and steps): ${same.n} steps, max relative difference ${same.maxRel.toExponential(2)}`);
  if (o.bf16) {
    const bp = compareCurves(curve('bf16 ours'), curve('bf16 peer'));
    console.log(`loss curve, bf16 diffuse vs pytorch: ${bp.n} steps, max relative difference ${bp.maxRel.toExponential(2)}`);
    const c = compareCurves(curve('bf16 ours'), curve('fp32 ours'));
    const ok = c.maxRel < 0.05 && c.lastMeanRel < 0.02;
    console.log(
      `loss curve, diffuse bf16 vs fp32: ${c.n} steps, max per-step relative difference ${(100 * c.maxRel).toFixed(2)}%, ` +
        `means of the last ${Math.min(10, c.n)} steps differ by ${(100 * c.lastMeanRel).toFixed(2)}% -> ${ok ? 'matches' : 'DOES NOT match'} (tolerance: < 5% per step, < 2% last-10 mean)`,
    );
    const fmt = (xs: number[]) => xs.map((x) => x.toFixed(4)).join(' ');
    console.log(`  fp32 losses: ${fmt(curve('fp32 ours').slice(0, c.n))}`);
    console.log(`  bf16 losses: ${fmt(curve('bf16 ours').slice(0, c.n))}`);
    if (c.n < 30) console.log(`  (only ${c.n} steps: pass --curve-steps 30 for the 30-step curve)`);
    if (Math.min(c.n, bp.n) <= 1) console.log('  (step 1 runs at the initial weights, whose zero-initialized out_conv makes the output 0 in any precision: one step compares nothing)');
  }
  if (profiles) console.log('\n' + profileTable(profiles.ours, profiles.theirs));
  console.log(`total time ${((performance.now() - wall0) / 1000).toFixed(0)} s`);
  console.log(`unet train step ratio vs pytorch: ${R.toFixed(2)}`);
}

// Run as a script; test/bench-unet.test.ts imports the presets and the batches.
if (require.main === module)
  main().catch((e) => {
    const usage = e instanceof Error && e.message.startsWith('unet bench:');
    console.error(e instanceof Error ? (usage ? e.message : (e.stack ?? e.message)) : e);
    process.exit(1);
  });
