/**
 * `diffuse train-autoencoder`: trains the KL autoencoder of latent diffusion on the emoji
 * train split (src/training/autoencoder.ts), checkpointing on the way (Ctrl-C: exit 130;
 * --resume continues bit for bit) and writing autoencoder.json + autoencoder.safetensors.
 * `diffuse eval-autoencoder RUN`: PSNR, SSIM and reconstruction FD on the emoji test split,
 * latent statistics and the scale factor, and a PNG of originals above reconstructions.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cat } from '../engine/create';
import { setNumThreads } from '../engine/runtime';
import { dispose, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { evaluateAutoencoder } from '../eval/autoencoder';
import { emojiFeatureNetDir, EMOJI_FEATURE_NET_NAME, extractFeatures, loadFeatureNet } from '../eval/feature-net';
import { frechetDistance } from '../eval/frechet';
import { AUTOENCODER_CHECKPOINT_FILE, AUTOENCODER_FIELDS, AutoencoderTrainer, loadAutoencoder, readAutoencoderCheckpoint, saveAutoencoder } from '../training/autoencoder';
import { loadClassifierData } from '../training/classifier';
import { INTERRUPTED_EXIT_CODE } from '../training/interrupt';
import { Override, parseValue, refuseResumeChanges, resumableKeys } from '../training/options';
import { imageGrid, writeFileAtomic, writePNG } from '../util/image';
import { intFlag, kebab, parseArgs, table, UsageError } from './args';

export function trainAutoencoderHelp(): string {
  return `Usage: diffuse train-autoencoder [options]
       diffuse train-autoencoder --resume DIR [--steps N] [--checkpoint-every N]

Trains the KL-regularized autoencoder of latent diffusion (Rombach et al. 2022) on the
emoji train split: images 3 x S x S <-> latents 4 x S/f x S/f. Loss per pixel: L1 +
--ssim-weight x (1 - multi-scale SSIM; the stand-in for LPIPS, whose VGG weights are not
available here) + --kl-weight x KL / pixels (the reference's 1e-6 on per-image sums), and
with --disc-weight > 0 a PatchGAN with the adaptive weight from step --disc-start.
Writes DIR/autoencoder.json and DIR/autoencoder.safetensors. At the end it measures latent
diffusion's scale factor 1 / std(z) over the training split (posterior samples, seeded by
--seed) with the per-channel mean and std, and stores them in autoencoder.json
("scaleFactor", "latentStats"): diffuse train --latent DIR reads them. --resume DIR with
no more --steps takes no step and only rewrites them. DIR keeps the checkpoint
(${AUTOENCODER_CHECKPOINT_FILE}), so Ctrl-C (exit 130) and --resume continue exactly, and
--resume DIR --steps N trains a finished run further. Then: diffuse eval-autoencoder DIR.

${table([
  ['--data NAME', 'emoji (default), emoji:google or emoji:twitter'],
  ['--image-size N', '16, 32 or 64 (default 64)'],
  ['--factor 4|8', 'downsampling factor (default 4: 64 px -> 4 x 16 x 16)'],
  ['--kl-weight W', 'weight of the KL term (default 1e-6)'],
  ['--ssim-weight W', 'weight of 1 - multi-scale SSIM (default 1; 0: L1 only)'],
  ['--disc-weight W', 'PatchGAN weight (default 0: no discriminator; the reference uses 0.5)'],
  ['--disc-start N', 'the step from which the discriminator counts (default steps / 2)'],
  ['--flip BOOL', 'random left-right flips (default true)'],
  ['--steps N', 'optimizer steps (default 2000); with --resume, the step to go on to'],
  ['--batch-size N', 'images per step (default 16)'],
  ['--lr LR', "Adam's learning rate after the warm-up (default 0.0005; betas 0.5, 0.9)"],
  ['--warmup-steps N', 'linear warm-up (default min(100, steps / 10))'],
  ['--seed S', 'seed of the weights, batches and latent noise (default 0)'],
  ['--out DIR', 'output folder (default runs/ae)'],
  ['--checkpoint-every N', 'steps between checkpoints (default 500; 0: only on Ctrl-C and at the end)'],
  ['--resume DIR', 'continue the run in DIR with its options'],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['-h, --help', 'this help'],
])}

Examples:
  diffuse train-autoencoder --data emoji --out runs/ae --factor 4
  diffuse train-autoencoder --resume runs/ae --steps 4000
  diffuse train-autoencoder --resume runs/ae          # no more steps: store the scale factor again
`;
}

const FLAGS = new Map(Object.keys(AUTOENCODER_FIELDS).map((k) => [kebab(k), k as keyof typeof AUTOENCODER_FIELDS]));

export async function trainAutoencoderCommand(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, { ...Object.fromEntries([...FLAGS.keys()].map((f) => [f, 'value' as const])), resume: 'value', help: 'switch' });
  if (args.flags.has('help')) {
    process.stdout.write(trainAutoencoderHelp());
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])} (train-autoencoder takes options only)`);
  const overrides: Override[] = args.list.filter(([f]) => FLAGS.has(f)).map(([f, v]) => ({ key: FLAGS.get(f)!, value: v, source: `--${f}` }));
  const given: Record<string, unknown> = {};
  for (const o of overrides) given[o.key] = parseValue(o.source, AUTOENCODER_FIELDS[o.key as keyof typeof AUTOENCODER_FIELDS], o.value);
  if (given.factor !== undefined && given.factor !== 4 && given.factor !== 8) throw new UsageError(`--factor: expected 4 or 8, got ${JSON.stringify(given.factor)}`);
  if (given.imageSize !== undefined && ![16, 32, 64].includes(given.imageSize as number)) throw new UsageError(`--image-size: expected 16, 32 or 64, got ${JSON.stringify(given.imageSize)}`);
  if (typeof given.threads === 'number') setNumThreads(given.threads);
  const command = ['diffuse', 'train-autoencoder', ...argv].join(' ');
  const resume = args.flags.get('resume');
  const trainer = resume === undefined ? startRun(given, command) : resumeRun(given, overrides, resume);
  try {
    const out = trainer.out!;
    const r = await trainer.run();
    if (r.status === 'interrupted') {
      process.stderr.write(`interrupted at step ${r.step} of ${trainer.options.steps}: the checkpoint is in ${out}\nresume with: diffuse train-autoencoder --resume ${out}\n`);
      return INTERRUPTED_EXIT_CODE;
    }
    const { losses, seconds } = trainer;
    const tail = losses.slice(-50);
    const latentStats = trainer.measureLatents({ seed: trainer.options.seed }); // latent diffusion's scale factor, over the training split
    saveAutoencoder(out, trainer.net, {
      imageSize: trainer.options.imageSize,
      training: { ...trainer.options, config: undefined, stepsTaken: trainer.step, seconds: Math.round(seconds), finalLoss: tail.reduce((a, b) => a + b, 0) / tail.length },
      latentStats,
    });
    process.stdout.write(
      `wrote ${out}/autoencoder.json (KL-f${trainer.options.factor}, ${trainer.net.numParameters()} parameters, ${seconds.toFixed(0)} s of training; latent scale factor 1 / std(z) = ${latentStats.scaleFactor.toFixed(4)} over ${latentStats.n} training images); measure it with: diffuse eval-autoencoder ${out}\n`,
    );
  } finally {
    trainer.dispose();
  }
  return 0;
}

function startRun(given: Record<string, unknown>, command: string): AutoencoderTrainer {
  const out = (given.out as string | undefined) ?? 'runs/ae';
  if (fs.existsSync(path.join(out, AUTOENCODER_CHECKPOINT_FILE)))
    throw new UsageError(`--out ${out}: already holds a run (${AUTOENCODER_CHECKPOINT_FILE}); continue it with --resume ${out}, or choose another --out`);
  const opts: Record<string, unknown> = Object.fromEntries(Object.entries(given).filter(([k]) => k !== 'out' && k !== 'threads' && k !== 'data'));
  if (given.data !== undefined) opts.dataset = given.data;
  return AutoencoderTrainer.create({ ...opts, notes: { command } }, { out, handleSigint: true });
}

function resumeRun(given: Record<string, unknown>, overrides: readonly Override[], dir: string): AutoencoderTrainer {
  const meta = readAutoencoderCheckpoint(dir);
  const o = { ...meta.options, data: meta.options.dataset } as unknown as Record<string, unknown>;
  refuseResumeChanges(overrides, { resumable: resumableKeys(AUTOENCODER_FIELDS), same: (ov) => given[ov.key] === o[ov.key], value: (k) => o[k], flag: (k) => `--${kebab(k)}`, run: dir });
  const steps = (given.steps as number | undefined) ?? meta.options.steps;
  if (steps < meta.step) throw new UsageError(`--steps ${steps}: the checkpoint in ${dir} is already at step ${meta.step}; give --steps ${meta.step} or more`);
  return AutoencoderTrainer.resume(dir, { steps, checkpointEvery: given.checkpointEvery as number | undefined, out: (given.out as string | undefined) ?? dir, handleSigint: true });
}

// ---- eval-autoencoder ----------------------------------------------------------------

export function evalAutoencoderHelp(): string {
  return `Usage: diffuse eval-autoencoder DIR [options]

Measures the autoencoder in DIR (from diffuse train-autoencoder) on the emoji test split
of its training data: reconstruction PSNR and SSIM (of the posterior mean, uint8), the
reconstruction FD in the frozen emoji evaluator's feature space (${EMOJI_FEATURE_NET_NAME};
a measurement only, never a training loss), and per latent channel the mean and std of
posterior samples, with the scale factor 1 / std that latent diffusion multiplies them by.
Writes DIR/eval.json and DIR/reconstructions.png (rows of originals, each above its
reconstruction).

${table([
  ['--n N', 'test images to use (default: all)'],
  ['--show N', 'images in reconstructions.png (default 32)'],
  ['--fd BOOL', 'compute the reconstruction FD (default true)'],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['-h, --help', 'this help'],
])}
`;
}

export function evalAutoencoderCommand(argv: readonly string[]): number {
  const args = parseArgs(argv, { n: 'value', show: 'value', fd: 'value', threads: 'value', help: 'switch' });
  if (args.flags.has('help')) {
    process.stdout.write(evalAutoencoderHelp());
    return 0;
  }
  if (args.positionals.length !== 1) throw new UsageError(`expected one autoencoder folder, got ${args.positionals.length} arguments`);
  const dir = args.positionals[0];
  if (args.flags.has('threads')) setNumThreads(intFlag(args, 'threads', 1, { min: 1 }));
  const fdRaw = args.flags.get('fd') ?? 'true';
  if (!['true', 'false'].includes(fdRaw)) throw new UsageError(`--fd: expected true or false, got ${JSON.stringify(fdRaw)}`);
  const { meta, net } = loadAutoencoder(dir);
  const dataset = (meta.training.dataset as 'emoji' | 'emoji:google' | 'emoji:twitter' | undefined) ?? 'emoji';
  const test = loadClassifierData(dataset, 'test', meta.imageSize);
  try {
    const total = test.images.dim(0);
    const n = intFlag(args, 'n', total, { min: 1, max: total });
    const show = intFlag(args, 'show', Math.min(32, n), { min: 1, max: n });
    const images = test.images.narrow(0, 0, n);
    const r = evaluateAutoencoder(net, images);
    try {
      const fd = fdRaw === 'true' ? reconstructionFD(images, r.reconstructions) : null;
      const report = {
        autoencoder: dir,
        data: `${dataset} test split`,
        n,
        psnr: r.psnr,
        ssim: r.ssim,
        reconstructionFD: fd,
        featureNet: fd === null ? null : EMOJI_FEATURE_NET_NAME,
        latent: r.latent,
      };
      writeFileAtomic(path.join(dir, 'eval.json'), JSON.stringify(report, null, 1) + '\n');
      writeComparison(path.join(dir, 'reconstructions.png'), images, r.reconstructions, show);
      const f = (xs: number[]) => xs.map((v) => v.toFixed(3)).join(', ');
      process.stdout.write(
        `${n} ${dataset} test images at ${meta.imageSize} px, KL-f${meta.config.factor}:\n` +
          `  PSNR ${r.psnr.toFixed(2)} dB, SSIM ${r.ssim.toFixed(4)}${fd === null ? '' : `, reconstruction FD ${fd.toFixed(2)} (${EMOJI_FEATURE_NET_NAME})`}\n` +
          `  latent mean per channel [${f(r.latent.mean)}], std [${f(r.latent.std)}], posterior std [${f(r.latent.posteriorStd)}]\n` +
          `  scale factor 1 / std = ${r.latent.scaleFactor.toFixed(4)} on this split${meta.scaleFactor === undefined ? ' (none stored yet: diffuse train-autoencoder --resume DIR stores one)' : `; stored (train split, what train --latent uses): ${meta.scaleFactor.toFixed(4)}`}\n` +
          `wrote ${dir}/eval.json and ${dir}/reconstructions.png\n`,
      );
    } finally {
      r.reconstructions.dispose();
    }
  } finally {
    dispose([test.images, test.labels]);
    net.dispose();
  }
  return 0;
}

/** FD between the evaluator's features of the originals and of the reconstructions (uint8 both). */
function reconstructionFD(originals: Tensor, recs: Tensor): number {
  const fnet = loadFeatureNet(emojiFeatureNetDir(), { expectName: EMOJI_FEATURE_NET_NAME });
  try {
    return tidy(() => frechetDistance(extractFeatures(fnet, originals), extractFeatures(fnet, recs)));
  } finally {
    fnet.net.dispose();
  }
}

/** A grid of originals and reconstructions: rows of `ncol` originals, each followed by the row of their reconstructions (show rounded down to whole rows). */
function writeComparison(file: string, originals: Tensor, recs: Tensor, show: number): void {
  const ncol = Math.min(8, show);
  tidy(() => {
    const rows: Tensor[] = [];
    for (let i = 0; i + ncol <= show; i += ncol) rows.push(originals.narrow(0, i, ncol), recs.narrow(0, i, ncol));
    const x = cat(rows, 0).float().div(127.5).sub(1); // imageGrid takes [-1, 1]
    writePNG(file, imageGrid(x, { ncol }));
  });
}
