/**
 * Sampler throughput against PyTorch eager, on the shipped Fashion-MNIST model (models/fashion-mnist,
 * EMA weights, the 300,641-parameter class-conditional DDPM U-Net), in one run on the same machine:
 *
 *   (a) one denoiser evaluation D(x, sigma) of a batch under no-grad: images/s, ours vs PyTorch;
 *   (b) a full 20-step DPM-Solver++(2M) sample (Lu et al. 2022, Algorithm 2) of the batch on the
 *       Karras grid over the model's sigma range, no clipping: wall time, ours (`generateSamples`,
 *       the code path of `diffuse sample --sampler dpmpp-2m --grid karras --no-clip`) vs the same
 *       loop written in Python (bench/sample_peer.py, k-diffusion's sample_dpmpp_2m).
 *
 *   (c) large n: `--large-n` (default 1000) classifier-free-guided samples (w = 2, so each batch of B
 *       runs the network on 2B rows) with the same 20-step dpmpp-2m, drawn by `generateSamples` at its
 *       default batch size (DEFAULT_BATCH_SIZE), against the batch-64 case (64 guided samples, one
 *       batch): images/s of both and their ratio (issue 12: within 10%). Ours only.
 *   (d) with `--batch-sizes B1,B2,...`: guided images/s of 256 samples at each batch size (how
 *       DEFAULT_BATCH_SIZE was chosen). Ours only.
 *
 * The PyTorch side is the independent U-Net twin in scripts/fixtures/nn.py with the same weights
 * (saved here, loaded strictly there) behind k-diffusion's discrete epsilon denoiser written in
 * plain torch; it starts from the same x_T, labels and grid, so both must draw the same images:
 * the max abs differences of one evaluation and of the final samples are printed.
 *
 * Timing: repeats alternate between the two sides (the first side alternates too), so background
 * load is shared; each side warms up first (one evaluation). Per repeat, (a) is `evals` evaluations
 * and (b) one full sample; medians over repeats. Both sides use the same number of threads and
 * inherit the same environment.
 *
 * Run: npx tsc -p tsconfig.json && npm run bench:sample [-- options]
 *   --threads N    threads on both sides (default os.availableParallelism())
 *   --repeats R    alternating repeats per side (default 5)
 *   --evals K      denoiser evaluations per repeat in (a) (default 3)
 *   --batch B      images (default 64)
 *   --steps N      sampler steps (default 20)
 *   --python PATH  the peer's interpreter (default $DIFFUSE_PYTHON or /usr/bin/python3)
 *   --large-n N    samples in (c) (default 1000; 0 skips it)
 *   --large-steps K  sampler steps in (c) and (d) (default: --steps)
 *   --batch-sizes L  run (d) over these batch sizes (default: skip it)
 *   --peer P       'yes' (default) runs (a) and (b) against PyTorch; 'no' runs only (c) and (d)
 *
 * The last line is `sample throughput ratio vs pytorch: R`, R = PyTorch's median time for (b) over
 * ours (> 1: we are faster).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { full, getNumThreads, keep, loadSafetensors, noGrad, saveSafetensors, setNumThreads, tensor, Tensor, tidy, torchVersion } from '../src/engine';
import { saveModule } from '../src/nn';
import { seededNoise } from '../src/sampling';
import { Denoiser } from '../src/core/denoiser';
import { classifierFreeGuidance } from '../src/guidance';
import { buildSchedule, DEFAULT_BATCH_SIZE, generateSamples, initialNoise, samplingSigmas } from '../src/training/build';
import { CheckpointMeta, loadModel } from '../src/training/checkpoint';
import { shippedModelDir } from '../src/cli/sample';
import { median, Peer } from './peer';

interface Options {
  threads: number;
  repeats: number;
  evals: number;
  batch: number;
  steps: number;
  python: string;
  largeN: number;
  largeSteps: number;
  batchSizes: number[];
  peer: boolean;
}

const SEED = 0;

function parseArgs(argv: string[]): Options {
  const a = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) throw new Error(`sample bench: expected --option value pairs, got ${argv.slice(i).join(' ')}`);
    a.set(argv[i], argv[i + 1]);
  }
  const known = ['--threads', '--repeats', '--evals', '--batch', '--steps', '--python', '--large-n', '--large-steps', '--batch-sizes', '--peer'];
  for (const k of a.keys()) if (!known.includes(k)) throw new Error(`sample bench: unknown option ${k} (known: ${known.join(' ')})`);
  const int = (k: string, d: number, min = 1) => {
    const v = a.has(k) ? Number(a.get(k)) : d;
    if (!Number.isSafeInteger(v) || v < min) throw new Error(`sample bench: ${k} must be an integer >= ${min}, got ${a.get(k)}`);
    return v;
  };
  const peer = a.get('--peer') ?? 'yes';
  if (peer !== 'yes' && peer !== 'no') throw new Error(`sample bench: --peer must be yes or no, got ${peer}`);
  const sizes = (a.get('--batch-sizes') ?? '').split(',').filter(Boolean).map(Number);
  if (sizes.some((b) => !Number.isSafeInteger(b) || b < 1)) throw new Error(`sample bench: --batch-sizes must be integers >= 1 separated by commas, got ${a.get('--batch-sizes')}`);
  const steps = int('--steps', 20);
  return {
    threads: int('--threads', os.availableParallelism()),
    repeats: int('--repeats', 5),
    evals: int('--evals', 3),
    batch: int('--batch', 64),
    steps,
    python: a.get('--python') ?? process.env.DIFFUSE_PYTHON ?? '/usr/bin/python3',
    largeN: int('--large-n', 1000, 0),
    largeSteps: int('--large-steps', steps),
    batchSizes: sizes,
    peer: peer === 'yes',
  };
}

const maxAbsDiff = (a: Tensor, b: Tensor) =>
  tidy(() =>
    a
      .to({ dtype: 'float64' })
      .sub(b.to({ dtype: 'float64' }))
      .abs()
      .max()
      .item(),
  );

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  setNumThreads(o.threads);
  const wall0 = performance.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-sample-bench-'));
  const { meta, net, denoiser: D } = loadModel(shippedModelDir());
  const schedule = buildSchedule(meta.config);
  if (!schedule || net.constructor.name !== 'UNet') throw new Error('sample bench: expects the shipped DDPM U-Net');
  const B = o.batch;
  const labelList = Array.from({ length: B }, (_, i) => i % (meta.classNames?.length ?? 1));
  const sigmas = samplingSigmas(meta.config, o.steps, 'karras');
  const s = Array.from(sigmas.toFloat64Array());
  const inputs = keep(
    tidy(() => {
      const xT = initialNoise(seededNoise(SEED, B), B, meta.sampleShape, s[0]); // what generateSamples draws
      const mid = s[o.steps >> 1];
      return {
        x_T: xT,
        x_eval: xT.mul(mid / s[0]),
        sigma_eval: full([B], mid, { dtype: 'float64' }),
        labels: tensor(labelList, { dtype: 'int64' }),
        sigmas: sigmas.clone(),
        table: tensor(schedule.sigmas, { dtype: 'float64' }),
      };
    }),
  );
  saveModule(net, path.join(dir, 'unet.safetensors'), { kind: 'UNet', config: JSON.stringify(meta.network.config) });
  saveSafetensors(path.join(dir, 'inputs.safetensors'), inputs);
  const cond = { classLabels: inputs.labels };

  const ours = {
    last: {} as { denoised?: Tensor; sample?: Tensor },
    denoise(n: number): number[] {
      const secs: number[] = [];
      for (let k = 0; k < n; k++) {
        const t0 = performance.now();
        const d = noGrad(() => D(inputs.x_eval, inputs.sigma_eval, cond));
        secs.push((performance.now() - t0) / 1000);
        this.last.denoised?.dispose();
        this.last.denoised = d;
      }
      return secs;
    },
    sample(): number {
      const t0 = performance.now();
      const x = generateSamples(D, meta.config, { shape: meta.sampleShape, n: B, seed: SEED, labels: labelList, steps: o.steps, sampler: 'dpmpp-2m', grid: 'karras', clip: false, batchSize: B });
      const secs = (performance.now() - t0) / 1000;
      this.last.sample?.dispose();
      this.last.sample = x;
      return secs;
    },
  };

  const started = o.peer ? await Peer.start(o.python, path.join(__dirname, '..', '..', 'bench', 'sample_peer.py'), [dir, String(o.threads)]) : null;
  let ratio: number | null = null;
  try {
    if (started && started.hello.threads !== getNumThreads()) throw new Error(`the peer runs ${String(started.hello.threads)} threads, ours ${getNumThreads()}`);
    console.log(
      `diffuse sample bench: libtorch ${torchVersion()}, ${getNumThreads()} threads, ${os.cpus()[0]?.model?.trim() ?? 'unknown CPU'} (${os.cpus().length} logical CPUs), load average ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}`,
    );
    console.log(
      `  model ${shippedModelDir()} (step ${meta.step}, EMA weights, ${net.numParameters().toLocaleString('en-US')} parameters${started ? `; peer: torch ${String(started.hello.torch)}, ${String(started.hello.parameters)} parameters` : ''})`,
    );
    if (started) ratio = await comparePeer(started.peer);
    largeCases(o, meta, D);
    console.log(`total time ${((performance.now() - wall0) / 1000).toFixed(0)} s`);
    if (ratio !== null) console.log(`sample throughput ratio vs pytorch: ${ratio.toFixed(2)}`);
  } finally {
    await started?.peer.close();
    Object.values(inputs).forEach((t) => t.dispose());
    ours.last.denoised?.dispose();
    ours.last.sample?.dispose();
    sigmas.dispose();
    net.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }

  /** (a) and (b) against the PyTorch peer; PyTorch's median time for (b) over ours. */
  async function comparePeer(peer: Peer): Promise<number> {
    console.log(
      `  batch ${B} x [${meta.sampleShape}], (a) one evaluation at sigma = ${s[o.steps >> 1].toPrecision(4)}, ${o.evals} per repeat; (b) ${o.steps}-step dpmpp-2m, karras grid ${s[0].toPrecision(4)} .. ${s[o.steps - 1].toPrecision(4)}, no clipping; ${o.repeats} alternating repeats`,
    );
    ours.denoise(1); // warm-up: oneDNN primitives, allocator
    await peer.request({ cmd: 'denoise', n: 1 });
    const ipsA = { ours: [] as number[], peer: [] as number[] };
    const secB = { ours: [] as number[], peer: [] as number[] };
    const sum = (xs: number[]) => xs.reduce((p, q) => p + q, 0);
    for (let r = 0; r < o.repeats; r++) {
      for (const side of r % 2 ? (['peer', 'ours'] as const) : (['ours', 'peer'] as const)) {
        if (side === 'ours') {
          ipsA.ours.push((B * o.evals) / sum(ours.denoise(o.evals)));
          secB.ours.push(ours.sample());
        } else {
          ipsA.peer.push((B * o.evals) / sum((await peer.request({ cmd: 'denoise', n: o.evals })).seconds as number[]));
          secB.peer.push((await peer.request({ cmd: 'sample' })).seconds as number);
        }
      }
    }
    await peer.request({ cmd: 'save' });
    const theirs = loadSafetensors(path.join(dir, 'peer.safetensors')).tensors;
    const diffA = maxAbsDiff(ours.last.denoised!, theirs.denoised);
    const diffB = maxAbsDiff(ours.last.sample!, theirs.sample);
    const range = tidy(() => theirs.sample.abs().max().item());
    Object.values(theirs).forEach((t) => t.dispose());

    const [a0, a1, b0, b1] = [median(ipsA.ours), median(ipsA.peer), median(secB.ours), median(secB.peer)];
    const span = (xs: number[], f: (x: number) => string) => `[${f(Math.min(...xs))} - ${f(Math.max(...xs))}]`;
    const f1 = (x: number) => x.toFixed(1);
    const f2 = (x: number) => x.toFixed(2);
    console.log('');
    console.log('| workload | ours | PyTorch | ours/PyTorch |');
    console.log('| --- | --- | --- | --- |');
    console.log(`| (a) one denoiser evaluation, batch ${B}, no-grad | ${f1(a0)} images/s ${span(ipsA.ours, f1)} | ${f1(a1)} images/s ${span(ipsA.peer, f1)} | ${(a0 / a1).toFixed(3)} |`);
    console.log(
      `| (b) ${o.steps}-step DPM-Solver++(2M) sample of ${B} | ${f2(b0)} s ${span(secB.ours, f2)} (${f1(B / b0)} images/s) | ${f2(b1)} s ${span(secB.peer, f2)} (${f1(B / b1)} images/s) | ${(b1 / b0).toFixed(3)} |`,
    );
    console.log('');
    console.log(
      `same images: max |D_ours - D_pytorch| = ${diffA.toExponential(2)} (one evaluation); max |x_ours - x_pytorch| = ${diffB.toExponential(2)} over the ${B} final samples (max |x| = ${range.toFixed(2)})`,
    );
    return b1 / b0;
  }
}

/**
 * (c) o.largeN classifier-free-guided samples (w = 2) at generateSamples' default batch size against
 * 64 guided samples in one batch (measured before and after it, to bracket the load), and (d) guided
 * images/s of 256 samples at each of o.batchSizes. Ours only.
 */
function largeCases(o: Options, meta: CheckpointMeta, D: Denoiser): void {
  if (o.largeN === 0 && o.batchSizes.length === 0) return;
  const k = meta.classNames?.length;
  if (!k) throw new Error('sample bench: (c) and (d) need the class-conditional shipped model');
  const guided = classifierFreeGuidance(D, { scale: 2, nullClass: k });
  const imagesPerSecond = (n: number, batchSize?: number) => {
    const t0 = performance.now();
    const labels = Array.from({ length: n }, (_, i) => i % k);
    generateSamples(guided, meta.config, { shape: meta.sampleShape, n, seed: SEED, labels, steps: o.largeSteps, sampler: 'dpmpp-2m', grid: 'karras', clip: false, batchSize }).dispose();
    return n / ((performance.now() - t0) / 1000);
  };
  imagesPerSecond(8, 8); // warm-up
  const f1 = (x: number) => x.toFixed(1);
  if (o.batchSizes.length > 0) {
    console.log('');
    console.log(`(d) guided (cfg w = 2) ${o.largeSteps}-step dpmpp-2m, 256 samples, by batch size (the network sees 2 x B rows):`);
    console.log('| batch size | images/s |');
    console.log('| --- | --- |');
    for (const b of o.batchSizes) console.log(`| ${b} | ${f1(imagesPerSecond(256, b))} |`);
  }
  if (o.largeN > 0) {
    const before = imagesPerSecond(64, 64);
    const large = imagesPerSecond(o.largeN);
    const after = imagesPerSecond(64, 64);
    const small = (before + after) / 2;
    console.log('');
    console.log(`(c) guided (cfg w = 2) ${o.largeSteps}-step dpmpp-2m: ${o.largeN} samples at the default batch size (${DEFAULT_BATCH_SIZE}) against one batch of 64:`);
    console.log('| workload | images/s | vs batch 64 |');
    console.log('| --- | --- | --- |');
    console.log(`| 64 guided samples, one batch (before, after) | ${f1(small)} (${f1(before)}, ${f1(after)}) | 1 |`);
    console.log(`| ${o.largeN} guided samples, batches of ${DEFAULT_BATCH_SIZE} | ${f1(large)} | ${(large / small).toFixed(3)} |`);
    console.log(`large-n images/s ratio vs batch 64: ${(large / small).toFixed(2)}`);
  }
}

main().catch((e) => {
  const usage = e instanceof Error && e.message.startsWith('sample bench:');
  console.error(e instanceof Error ? (usage ? e.message : (e.stack ?? e.message)) : e);
  process.exit(1);
});
