/**
 * Training throughput of the default `diffuse train` config (src/training/config.ts,
 * TRAIN_DEFAULTS: the small class-conditional U-Net on Fashion-MNIST, batch 64), in images
 * per second, and the data loader's share of the step time; then the same network and
 * step in PyTorch eager (bench/train_peer.py, the U-Net twin in scripts/fixtures/nn.py),
 * in the same run, with the same number of threads.
 *
 * Ours is the real trainer step (Trainer.trainStep: batch, label dropout, DDPM loss,
 * backward, clipping, Adam, EMA). The loader share is the time of the same steps' batches
 * made alone (DataLoader.batchAt) over the time of the steps.
 *
 * Run: npx tsc -p tsconfig.json && node dist/bench/train.js [--steps N] [--warmup W] [--threads T] [--python PATH]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { getNumThreads, mallocPolicy, setNumThreads, tidy, torchVersion } from '../src/engine';
import { emaBeta } from '../src/optim';
import { resolveTrainConfig, TRAIN_DEFAULTS } from '../src/training/config';
import { Trainer } from '../src/training/trainer';

function flag(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`--${name} must be a non-negative integer, got ${process.argv[i + 1]}`);
  return v;
}

function main(): void {
  const steps = Math.max(1, flag('steps', 20));
  const warmup = flag('warmup', 3);
  const threads = Math.max(1, flag('threads', os.availableParallelism()));
  const pyIdx = process.argv.indexOf('--python');
  const python = pyIdx >= 0 ? process.argv[pyIdx + 1] : process.env.DIFFUSE_PYTHON || '/usr/bin/python3';
  setNumThreads(threads);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-bench-train-'));
  const config = resolveTrainConfig({ ...TRAIN_DEFAULTS, out, steps: warmup + steps + 1 });
  console.log(`diffuse train bench: libtorch ${torchVersion()}, ${getNumThreads()} threads, default config (batch ${config.batchSize}), ${warmup} warm-up + ${steps} timed steps per side`);
  console.log(`malloc: ours ${mallocPolicy()}; pytorch glibc's policy (and any MALLOC_* settings both sides inherit)`);

  const t = Trainer.create(config, { log: null });
  let ours: { ips: number; ms: number; loaderMs: number };
  try {
    for (let k = 0; k < warmup; k++) t.trainStep();
    const first = t.step;
    const t0 = performance.now();
    for (let k = 0; k < steps; k++) t.trainStep();
    const ms = (performance.now() - t0) / steps;
    const l0 = performance.now();
    for (let k = 0; k < steps; k++) tidy(() => void t.data.batchAt(first + k));
    const loaderMs = (performance.now() - l0) / steps;
    ours = { ips: (config.batchSize * 1000) / ms, ms, loaderMs };
    console.log(`  network: ${t.spec.type} ${JSON.stringify(t.spec.config)} (${t.net.numParameters().toLocaleString('en-US')} parameters)`);
  } finally {
    t.dispose();
    fs.rmSync(out, { recursive: true, force: true });
  }

  const spec = {
    network: t.spec.config,
    batchSize: config.batchSize,
    steps,
    warmup,
    threads,
    lr: config.lr,
    labelDropout: config.labelDropout,
    gradClip: config.gradClip ?? 1e9,
    emaBeta: config.emaDecay ?? emaBeta(config.emaHalfLifeImages!, config.batchSize),
    T: config.timesteps,
  };
  const r = spawnSync(python, [path.join(__dirname, '..', '..', 'bench', 'train_peer.py'), JSON.stringify(spec)], { encoding: 'utf8' });
  type PeerResult = { imagesPerSec: number; msPerStep: number; loaderMs: number; loaderShare: number };
  let peer: PeerResult | null = null;
  if (r.status === 0) peer = JSON.parse(r.stdout.trim().split('\n').pop()!) as PeerResult;
  else console.log(`  PyTorch peer failed (${python}, exit ${r.status}): ${(r.stderr || String(r.error)).trim().split('\n').pop()}`);

  const rows: string[][] = [
    ['', 'images/s', 'ms/step', 'loader ms', 'loader share'],
    ['diffuse', ours.ips.toFixed(1), ours.ms.toFixed(1), ours.loaderMs.toFixed(2), `${((100 * ours.loaderMs) / ours.ms).toFixed(2)}%`],
  ];
  if (peer) rows.push(['pytorch eager', peer.imagesPerSec.toFixed(1), peer.msPerStep.toFixed(1), peer.loaderMs.toFixed(2), `${(100 * peer.loaderShare).toFixed(2)}%`]);
  const w = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  for (const row of rows) console.log('  ' + row.map((v, c) => (c === 0 ? v.padEnd(w[c]) : v.padStart(w[c]))).join('   '));
  if (peer) console.log(`train throughput ratio vs pytorch: ${(ours.ips / peer.imagesPerSec).toFixed(2)}`);
}

main();
