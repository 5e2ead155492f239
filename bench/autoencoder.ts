/**
 * Autoencoder training step against PyTorch eager (issue 15): one step of `diffuse
 * train-autoencoder` without the discriminator (forward: encode, reparameterized latent,
 * decode; the loss mean|x - x^| + w_p (1 - msSSIM(x, x^)) + w_KL KL / (C H W); backward;
 * Adam with betas (0.5, 0.9)) on a fixed batch of 64 px emoji, timed in Diffuse and in a
 * PyTorch eager twin (bench/autoencoder_peer.py) in one run on the same machine.
 *
 * Both sides do identical math: this side builds the autoencoder (seeded, the trainer's
 * architecture for the factor), saves its weights, the batch x [B, 3, S, S] and K steps of
 * reparameterization noise eps [K, B, 4, S/f, S/f] to a temporary folder; the peer builds
 * the same layers (same parameter names, loaded strictly), the same SSIM (Gaussian window
 * 11, sigma 1.5, K1 0.01, K2 0.03, 'valid' separable depthwise convolutions, the mean over
 * 3 dyadic scales with 2 x 2 average pooling) and the same loss and optimizer. The loss of
 * step 1 (same weights, batch and noise) must agree to 1e-4 relative, or the bench stops
 * before timing anything. The learning rate is the trainer's constant lr after its warm-up
 * (5e-4); the warm-up schedule and the random flips of the data loader are left out.
 *
 * Timing as bench/unet.ts: repeats alternate between the two sides (the first side
 * alternates too), so background load is shared; each side runs `warmup` untimed steps
 * before its first repeat, then each repeat is `steps` timed steps; images/s is the median
 * over repeats, and the paired ratios of back-to-back repeats are printed. Both sides use the
 * same number of threads and inherit the same environment.
 *
 * Run: npx tsc -p tsconfig.json && npm run bench:autoencoder [-- options]
 *   --factor 4|8      downsampling factor (default 4, the train-autoencoder default)
 *   --batch B         images per step (default 16, the train-autoencoder default)
 *   --image-size S    16, 32 or 64 (default 64)
 *   --threads N       threads on both sides (default os.availableParallelism())
 *   --repeats R       timed repeats per side (default 5)
 *   --steps N         timed steps per repeat (default 2)
 *   --warmup W        untimed steps before the first repeat, after the checked step 1 (default 1)
 *   --data emoji|random   the batch: a seeded subset of the emoji test split (the default when
 *                     installed) or seeded uniform noise in [-1, 1]
 *   --seed S          weights, batch and noise seed (default 0)
 *   --python PATH     the peer's interpreter (default $DIFFUSE_PYTHON or /usr/bin/python3)
 *   --profile         at the end, one more step per side (fresh models, one warm-up step) under
 *                     the op profilers, and a table of self time per op, side by side
 *
 * The last line is `autoencoder train step ratio vs pytorch: R`, R = our images/s over PyTorch's.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dispose, Generator, getNumThreads, keep, profile, ProfileReport, saveSafetensors, setNumThreads, Tensor, tidy, torchVersion } from '../src/engine';
import { DatasetError, imageSubset, loadEmoji } from '../src/data';
import { Autoencoder, AutoencoderConfig } from '../src/models/autoencoder';
import { klPerPixel, reconstructionLoss, resolveAutoencoderRunOptions } from '../src/training/autoencoder';
import { loadModule, saveModule } from '../src/nn';
import { Adam } from '../src/optim';
import { median, Peer } from './peer';
import { compareCurves, cpuModel, emptyRun, emptyTiming, PeerProfile, profileTable, record, RunResult, timedStep, Timing } from './step-timing';

interface Options {
  factor: 4 | 8;
  batch: number;
  imageSize: number;
  threads: number;
  repeats: number;
  steps: number;
  warmup: number;
  data: 'emoji' | 'random' | null;
  seed: number;
  python: string;
  profile: boolean;
}

/** The loss weights, learning rate and betas of `diffuse train-autoencoder`'s defaults. */
const RUN = resolveAutoencoderRunOptions({});
const BETAS = [0.5, 0.9] as const;
/** Step 1's losses must agree to this relative tolerance. */
const CHECK_TOL = 1e-4;

function fail(msg: string): never {
  throw new Error(`autoencoder bench: ${msg}`);
}

function parseArgs(argv: string[]): Options {
  const a = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (!k.startsWith('--')) fail(`unexpected argument ${k}`);
    if (k === '--profile') a.set(k, '1');
    else if (i + 1 < argv.length) a.set(k, argv[++i]);
    else fail(`${k} needs a value`);
  }
  const known = ['--factor', '--batch', '--image-size', '--threads', '--repeats', '--steps', '--warmup', '--data', '--seed', '--python', '--profile'];
  for (const k of a.keys()) if (!known.includes(k)) fail(`unknown option ${k} (known: ${known.join(' ')})`);
  const int = (k: string, d: number, min = 0) => {
    const v = a.has(k) ? Number(a.get(k)) : d;
    if (!Number.isSafeInteger(v) || v < min) fail(`${k} must be an integer >= ${min}, got ${a.get(k)}`);
    return v;
  };
  const factor = int('--factor', RUN.factor, 4);
  if (factor !== 4 && factor !== 8) fail(`--factor must be 4 or 8, got ${factor}`);
  const imageSize = int('--image-size', RUN.imageSize, 16);
  if (![16, 32, 64].includes(imageSize)) fail(`--image-size must be 16, 32 or 64, got ${imageSize}`);
  const data = a.get('--data') ?? null;
  if (data !== null && data !== 'emoji' && data !== 'random') fail(`--data must be emoji or random, got ${data}`);
  return {
    factor,
    batch: int('--batch', RUN.batchSize, 1),
    imageSize,
    threads: int('--threads', os.availableParallelism(), 1),
    repeats: int('--repeats', 5, 1),
    steps: int('--steps', 2, 1),
    warmup: int('--warmup', 1),
    data,
    seed: int('--seed', 0),
    python: a.get('--python') ?? process.env.DIFFUSE_PYTHON ?? '/usr/bin/python3',
    profile: a.has('--profile'),
  };
}

/** Our side: the autoencoder from the saved weights and the trainer's Adam, stepping through the K noise draws in order. */
class OurTrainer {
  readonly net: Autoencoder;
  readonly opt: Adam;
  private k = 0;

  constructor(
    weights: string,
    config: AutoencoderConfig,
    private readonly x: Tensor,
    private readonly eps: Tensor,
  ) {
    this.net = new Autoencoder(config, { generator: new Generator(0) });
    loadModule(this.net, weights);
    this.net.train();
    this.opt = new Adam(this.net.namedParameters(), { lr: RUN.lr, betas: BETAS });
  }

  run(n: number): RunResult {
    const r = emptyRun();
    const x = this.x;
    const pixels = x.size / x.dim(0);
    for (let i = 0; i < n; i++) {
      const k = this.k++ % this.eps.dim(0);
      timedStep(
        r,
        () => {
          // The trainer's #autoencoderLoss without the discriminator; the latent noise is precomputed (Autoencoder.forward draws it).
          const { mean, logvar } = this.net.encode(x);
          const z = mean.add(logvar.mul(0.5).exp().mul(this.eps.select(0, k)));
          return reconstructionLoss(x, this.net.decode(z), RUN.ssimWeight).add(klPerPixel(mean, logvar, pixels).mul(RUN.klWeight));
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

/** The fixed batch in [-1, 1]: a seeded subset of the emoji test split, or uniform noise when asked or when the emoji are not installed. */
function fixedBatch(o: Options, g: Generator): { x: Tensor; what: string } {
  if (o.data !== 'random') {
    try {
      const ds = loadEmoji({ split: 'test', size: o.imageSize });
      try {
        const x = tidy(() => imageSubset(ds, o.batch, { seed: o.seed, what: 'the emoji test split' }).x.float().div(127.5).sub(1));
        return { x, what: `emoji test split, seeded subset (seed ${o.seed})` };
      } finally {
        dispose([ds.images, ds.labels]);
      }
    } catch (e) {
      if (o.data === 'emoji' || !(e instanceof DatasetError)) throw e;
      return { x: g.rand([o.batch, 3, o.imageSize, o.imageSize]).mul(2).sub(1), what: `uniform noise (emoji not available: ${e.message.split('\n')[0]})` };
    }
  }
  return { x: g.rand([o.batch, 3, o.imageSize, o.imageSize]).mul(2).sub(1), what: 'uniform noise' };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const load0 = os.loadavg();
  setNumThreads(o.threads);
  const wall0 = performance.now();
  // Step 1 (checked) + warm-up + timed steps per side, plus 2 for --profile.
  const K = 1 + o.warmup + o.repeats * o.steps + (o.profile ? 2 : 0);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-ae-bench-'));
  const weights = path.join(dir, 'autoencoder.safetensors');
  const dataFile = path.join(dir, 'data.safetensors');
  const g = new Generator(o.seed);
  const config = resolveAutoencoderRunOptions({ factor: o.factor, imageSize: o.imageSize, batchSize: o.batch }).config;
  const init = new Autoencoder(config, { generator: g });
  const params = init.numParameters();
  saveModule(init, weights, { kind: 'Autoencoder', config: JSON.stringify(init.config) });
  init.dispose();
  const { x: x0, what } = fixedBatch(o, g);
  const x = keep(x0);
  const h = o.imageSize / o.factor;
  const eps = keep(g.randn([K, o.batch, config.latentChannels, h, h]));
  saveSafetensors(dataFile, { x, eps }, { lr: String(RUN.lr), klWeight: String(RUN.klWeight), ssimWeight: String(RUN.ssimWeight), beta1: String(BETAS[0]), beta2: String(BETAS[1]) });

  const la = (l: number[]) => l.map((v) => v.toFixed(2)).join(' ');
  console.log(`diffuse autoencoder train-step bench: libtorch ${torchVersion()}, ${getNumThreads()} threads, ${cpuModel()} (${os.cpus().length} logical CPUs)`);
  console.log(
    `  load average at the start: ${la(load0)} (1, 5, 15 min)${load0[0] > os.availableParallelism() / 2 ? ' -- the machine is busy with other jobs: wall times are inflated and noisy' : ''}`,
  );
  console.log(
    `  autoencoder KL-f${o.factor}: channels ${config.channels}, mult [${config.channelMult.join(', ')}], ${config.numResBlocks} block(s) per level, groups ${config.groups}, mid attention ${config.midAttention}; ${params.toLocaleString('en-US')} parameters`,
  );
  console.log(`  batch ${o.batch} x 3 x ${o.imageSize} x ${o.imageSize} (${what}) -> latents ${config.latentChannels} x ${h} x ${h}`);
  console.log(`  loss: L1 + ${RUN.ssimWeight} (1 - msSSIM, 3 scales) + ${RUN.klWeight} KL / pixels (no discriminator); Adam lr ${RUN.lr}, betas (${BETAS.join(', ')})`);
  console.log(`  OMP_WAIT_POLICY=${process.env.OMP_WAIT_POLICY ?? '(unset)'}; ${K} noise draws in ${dir}`);

  const peerScript = path.resolve(__dirname, '..', '..', 'bench', 'autoencoder_peer.py');
  let peer: Peer | null = null;
  const mine = emptyTiming();
  const theirs = emptyTiming();
  let ours: OurTrainer | null = null;
  let profiles: { ours: ProfileReport; theirs: PeerProfile } | null = null;
  let check = { ours: NaN, theirs: NaN, rel: NaN };
  try {
    const { peer: live, hello } = await Peer.start(o.python, peerScript, [dir, String(o.threads)]);
    peer = live;
    const ready = hello as { torch: string; python: string; threads: number; parameters: number };
    console.log(`  peer: PyTorch ${ready.torch} eager (${ready.python}), ${ready.threads} threads, ${ready.parameters.toLocaleString('en-US')} parameters`);
    if (ready.threads !== getNumThreads()) fail(`thread counts differ: ours ${getNumThreads()}, peer ${ready.threads}`);
    if (ready.parameters !== params) fail(`parameter counts differ: ours ${params}, peer ${ready.parameters}`);

    ours = new OurTrainer(weights, config, x, eps);
    await live.request({ cmd: 'init' });
    // Step 1: same weights, batch and noise on both sides; the losses must agree before anything is timed.
    const a = ours.run(1);
    const b = await live.request<RunResult>({ cmd: 'run', steps: 1 });
    mine.losses.push(...a.losses);
    theirs.losses.push(...b.losses);
    check = { ours: a.losses[0], theirs: b.losses[0], rel: Math.abs(a.losses[0] - b.losses[0]) / Math.abs(b.losses[0]) };
    console.log(`  step 1 loss: diffuse ${check.ours.toPrecision(10)}, pytorch ${check.theirs.toPrecision(10)}, relative difference ${check.rel.toExponential(2)} (tolerance ${CHECK_TOL})`);
    if (!(check.rel <= CHECK_TOL))
      fail(`step 1 losses DISAGREE (${check.ours} vs ${check.theirs}, relative ${check.rel.toExponential(2)} > ${CHECK_TOL}): the two sides do not compute the same step, nothing is timed`);

    const trainer = ours;
    for (let rep = 0; rep < o.repeats; rep++) {
      const warmup = rep === 0 ? o.warmup : 0;
      const sides = [
        async () => record(mine, trainer.run(warmup + o.steps), warmup, o.batch),
        async () => record(theirs, await live.request<RunResult>({ cmd: 'run', steps: warmup + o.steps }), warmup, o.batch),
      ];
      if (rep % 2) sides.reverse();
      for (const side of sides) await side();
      const last = (t: Timing) => t.ips[t.ips.length - 1].toFixed(2);
      console.log(`  repeat ${rep + 1}/${o.repeats}: diffuse ${last(mine)} img/s, pytorch ${last(theirs)} img/s`);
    }
    if (o.profile) {
      const tr = new OurTrainer(weights, config, x, eps);
      try {
        tr.run(1);
        const { report } = profile(() => tr.run(1));
        await live.request({ cmd: 'init' });
        await live.request({ cmd: 'run', steps: 1 });
        profiles = { ours: report, theirs: await live.request<PeerProfile>({ cmd: 'profile' }) };
      } finally {
        tr.dispose();
      }
    }
  } finally {
    await peer?.close().catch(() => undefined);
    ours?.dispose();
    dispose([x, eps]);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // ---- report
  const head = ['side', 'images/s', 'min-max', 'ms/step', 'fwd+loss ms', 'bwd ms', 'optim ms', 'cpu ms/step', 'repeats x steps'];
  const widths = head.map((h) => Math.max(h.length, 12));
  const row = (name: string, t: Timing) => {
    const ms = (xs: number[]) => median(xs).toFixed(0);
    const spread = t.ips.length > 1 ? `${Math.min(...t.ips).toFixed(2)}-${Math.max(...t.ips).toFixed(2)}` : '-';
    const cells = [name, median(t.ips).toFixed(2), spread, ms(t.total), ms(t.fwd), ms(t.bwd), ms(t.opt), ms(t.cpu), `${t.ips.length} x ${t.total.length / t.ips.length}`];
    return `| ${cells.map((c, i) => (i === 0 ? c.padEnd(12) : c.padStart(widths[i]))).join(' | ')} |`;
  };
  console.log('');
  console.log(`| ${head.map((h, i) => (i === 0 ? h.padEnd(12) : h.padStart(widths[i]))).join(' | ')} |`);
  console.log(`|${head.map((_, i) => (i === 0 ? '-'.repeat(14) : '-'.repeat(widths[i] + 1) + ':')).join('|')}|`);
  console.log(row('diffuse', mine));
  console.log(row('pytorch', theirs));
  console.log('images/s: median over repeats (min-max: over repeats); ms columns: medians over all timed steps;');
  console.log('cpu ms/step: process CPU time of all threads per step (wall time counts other jobs, CPU time mostly does not)');
  const R = median(mine.ips) / median(theirs.ips);
  const paired = mine.ips.map((v, i) => v / theirs.ips[i]);
  console.log('');
  console.log(`diffuse / pytorch images/s = ${R.toFixed(3)}; by CPU time per step (pytorch / diffuse) = ${(median(theirs.cpu) / median(mine.cpu)).toFixed(3)}`);
  console.log(
    `paired: ratios of back-to-back repeats, median ${median(paired).toFixed(3)} [${Math.min(...paired).toFixed(3)}-${Math.max(...paired).toFixed(3)}], ours faster in ${paired.filter((r) => r > 1).length} of ${paired.length}`,
  );
  const { n, maxRel } = compareCurves(mine.losses, theirs.losses);
  console.log(`step 1 loss agreement: relative difference ${check.rel.toExponential(2)}; loss curves over ${n} steps: max relative difference ${maxRel.toExponential(2)}`);
  console.log(`  diffuse losses: ${mine.losses.map((v) => v.toFixed(5)).join(' ')}`);
  console.log(`  pytorch losses: ${theirs.losses.map((v) => v.toFixed(5)).join(' ')}`);
  console.log(`load average at the end: ${la(os.loadavg())}`);
  if (profiles) console.log('\n' + profileTable(profiles.ours, profiles.theirs));
  console.log(`total time ${((performance.now() - wall0) / 1000).toFixed(0)} s`);
  console.log(`autoencoder train step ratio vs pytorch: ${R.toFixed(2)}`);
}

if (require.main === module)
  main().catch((e) => {
    const usage = e instanceof Error && e.message.startsWith('autoencoder bench:');
    console.error(e instanceof Error ? (usage ? e.message : (e.stack ?? e.message)) : e);
    process.exit(1);
  });
