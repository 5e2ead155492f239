/**
 * `diffuse info CHECKPOINT`: what a checkpoint holds, without loading the weights, and
 * `diffuse export CHECKPOINT OUT_DIR`: a sampling-only copy in half precision.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { levelHistory } from '../training/trainer';
import { CheckpointMeta, checkpointJsonPath, decodeFloats, exportCheckpoint, PARTS, readCheckpointMeta } from '../training/checkpoint';
import { formatSeconds } from '../util/progress';
import { choiceFlag, numberFlag, parseArgs, table, UsageError } from './args';
import { edmSigma, logSnrShift, networkFlops } from '../training/build';
import { AUTOENCODER_FILE, exportAutoencoder } from '../training/autoencoder';
import { ADAPTER_WEIGHTS, exportLora } from '../nn/lora';

export function infoHelp(): string {
  return `Usage: diffuse info CHECKPOINT [--json]

Prints what a checkpoint folder holds: the step, the network and its parameter count,
the data and objective, the loss history (summarized), the files and their sizes, and
the full config. --json prints checkpoint.json's content instead (without the encoded
states). The tensor files are checked against their recorded sizes, not loaded.
`;
}

export function exportHelp(): string {
  return `Usage: diffuse export CHECKPOINT OUT_DIR [--dtype float16|bfloat16|float32] [--weights ema|model] [--lora PATH [--lora-scale S]]

Writes a sampling-only copy of a checkpoint: the EMA weights (default) cast to float16
(default; half the size), and a checkpoint.json without optimizer or generator state.
\`diffuse sample OUT_DIR\` and \`diffuse info OUT_DIR\` read it; it cannot be resumed.
An autoencoder folder (diffuse train-autoencoder) is exported the same way: its weights
cast to --dtype, with its latent statistics. A latent model's export names its autoencoder
by a path relative to OUT_DIR, so the two folders can move together (docs/latent.md).
A LoRA run's adapters are merged into its weights; --lora PATH merges that adapter (scaled
by --lora-scale, default 1) into the checkpoint's weights (docs/lora.md). An adapter folder
(adapter_model.safetensors, e.g. an LCM-LoRA run's lcm/lora) is copied with its weights cast
to --dtype and its metadata (the sampling record) kept: diffuse sample MODEL --lora OUT_DIR.
`;
}

const kb = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${(n / 1024).toFixed(1)} KB`);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);

export function infoCommand(argv: readonly string[]): number {
  const args = parseArgs(argv, { help: 'switch', json: 'switch' });
  if (args.flags.has('help')) {
    process.stdout.write(infoHelp());
    return 0;
  }
  if (args.positionals.length !== 1) throw new UsageError(`expected one CHECKPOINT folder, got ${args.positionals.length ? args.positionals.join(' ') : 'none'} (see diffuse info --help)`);
  const dir = args.positionals[0];
  const meta = readCheckpointMeta(dir);
  if (args.flags.has('json')) {
    const { state, ...rest } = meta;
    process.stdout.write(
      JSON.stringify(
        {
          ...rest,
          state: state && {
            ...state,
            losses: `<${decodeFloats(state.losses).length} float32>`,
            ...(state.levelLosses ? { levelLosses: Object.keys(state.levelLosses) } : {}),
            ...(state.phaseLosses ? { phaseLosses: Object.fromEntries(Object.entries(state.phaseLosses).map(([k, v]) => [k, `<${decodeFloats(v).length} float32>`])) } : {}),
            generators: Object.keys(state.generators),
          },
        },
        null,
        2,
      ) + '\n',
    );
    return 0;
  }
  const c = meta.config;
  const json = checkpointJsonPath(dir);
  const base = path.dirname(json);
  const files: [string, string][] = [[path.basename(json), kb(fs.statSync(json).size)]];
  for (const part of PARTS) {
    const rec = meta.files[part];
    if (!rec) continue;
    const st = fs.statSync(path.join(base, rec.file), { throwIfNoEntry: false });
    const status = !st ? 'MISSING' : st.size !== rec.bytes ? `WRONG SIZE (${st.size} bytes, recorded ${rec.bytes})` : kb(st.size);
    files.push([rec.file, `${status} (${part})`]);
  }
  const levelRows = meta.state?.levelLosses ? meta.config.nested.map((r): [string, string] => [`loss ${r} px`, summarize(levelHistory(meta, r).filter((v) => !Number.isNaN(v)))]) : [];
  const flops = networkFlops(meta.network, meta.sampleShape);
  const net = meta.network;
  const params = `${meta.numParameters.toLocaleString('en-US')} parameters`;
  const netDesc =
    net.type === 'unet'
      ? `unet, ${params}: ${net.config.modelChannels} channels x [${net.config.channelMult}], ${net.config.numResBlocks} res block(s) per level, attention at [${net.config.attentionResolutions}], ${net.config.noiseEmbedding} noise embedding${superRes(c)}; ${(flops! / 1e9).toFixed(3)} GFLOP per image forward`
      : net.type === 'edm2'
        ? `edm2 (magnitude-preserving), ${params}: ${net.config.modelChannels} channels x [${net.config.channelMult}], ${net.config.numBlocks} block(s) per encoder level, attention at [${net.config.attnResolutions}]`
        : net.type === 'nested'
          ? `nested unet (Matryoshka), ${params}: resolutions [${net.config.resolutions}], core ${net.config.core.modelChannels} channels x [${net.config.core.channelMult}] at ${net.config.resolutions[0]} px; ${(flops! / 1e9).toFixed(3)} GFLOP per sample forward (every level)`
          : `mlp, ${params}: width ${net.config.hidden}, depth ${net.config.depth}`;
  const weighting = c.weighting === 'auto' ? '' : `, ${c.weighting === 'min-snr' ? `min-SNR-${c.minSnrGamma}` : c.weighting} weighting`;
  const shift = logSnrShift(c);
  const shiftText =
    shift === 0
      ? ''
      : `, log-SNR shifted by ${shift.toFixed(4)} (${[c.shiftBase !== null ? `base ${c.shiftBase} at ${c.imageSize} px` : '', c.inputScale !== 1 ? `input scale ${c.inputScale}` : ''].filter(Boolean).join(', ')})`;
  const multiscale = c.multiscaleBase === null ? '' : `, multiscale loss from ${c.multiscaleBase} px`;
  const objective: Record<typeof c.objective, string> = {
    eps: `eps (epsilon prediction)${weighting}, ${c.betaSchedule} betas, T = ${c.timesteps}${shiftText}${multiscale}`,
    x0: `x0 (x0 prediction)${weighting}, ${c.betaSchedule} betas, T = ${c.timesteps}${shiftText}${multiscale}`,
    v: `v (v prediction)${weighting}, ${c.betaSchedule} betas, T = ${c.timesteps}${shiftText}${multiscale}`,
    edm: `edm, sigma_data ${c.sigmaData}${shift === 0 ? '' : `, P_mean ${edmSigma(c).pMean.toFixed(4)}${shiftText}`}${multiscale}`,
    edm2: `edm2 (learned uncertainty u(sigma)), sigma_data ${c.sigmaData}${shift === 0 ? '' : `, P_mean ${edmSigma(c).pMean.toFixed(4)}${shiftText}`}${multiscale}`,
  };
  const rows: [string, string][] = [
    [
      'checkpoint',
      `${dir}: step ${meta.step} of ${c.steps}, written ${meta.createdAt} by Diffuse ${meta.diffuse}${meta.exportedFrom ? ` (export of the ${meta.exportedFrom.part} weights in ${meta.exportedFrom.dtype}${meta.exportedFrom.posthocEma ? `: post-hoc EMA of sigma_rel ${meta.exportedFrom.posthocEma.sigmaRel} from ${meta.exportedFrom.posthocEma.snapshots} snapshots` : ''})` : ''}`,
    ],
    ['network', netDesc],
    [
      'data',
      `${c.data}${c.dataLimit !== null ? ` (first ${c.dataLimit})` : ''}, samples [${meta.sampleShape}]${meta.classNames ? `, ${meta.classNames.length} classes: ${meta.classNames.join(', ')} (label dropout ${c.labelDropout})` : ', unconditional'}`,
    ],
    ...(meta.latent ? [['latent', latentLine(meta.latent)] as [string, string]] : []),
    ['objective', objective[c.objective]],
    [
      'training',
      `batch ${c.batchSize}, ${c.optimizer} lr ${c.lr} (${c.lrSchedule}${c.lrSchedule === 'inv-sqrt' ? ` from step ${c.lrRefSteps}` : ''}, warm-up ${c.warmupSteps}), EMA ${c.ema === 'phema' ? `post-hoc (power-function sigma_rel ${c.phemaStds.join(', ')}, snapshots every ${c.phemaSnapshotEvery} steps)` : c.emaDecay !== null ? `decay ${c.emaDecay}` : `half-life ${c.emaHalfLifeImages} images`}, ${(meta.step * c.batchSize).toLocaleString('en-US')} images seen${meta.state ? `, ${formatSeconds(meta.state.trainSeconds)} of training` : ''}`,
    ],
    ...(flops !== null
      ? [
          [
            'compute',
            `~${((3 * flops * meta.step * c.batchSize) / 1e15).toFixed(3)} PFLOP of training (3 x forward x images seen${c.nestedGrow > 0 ? ', counting every level from the start' : ''})`,
          ] as [string, string],
        ]
      : []),
    ...lossLines(meta.state).map(([name, line], i): [string, string] => [i === 0 ? 'loss' : '', name === null ? line : `${name}: ${line}`]),
    ...levelRows,
    ...files.map(([f, s], i): [string, string] => [i === 0 ? 'files' : '', `${f}  ${s}`]),
  ];
  process.stdout.write(`${table(rows, 0)}\nconfig\n${JSON.stringify(c, null, 2)}\n`);
  return 0;
}

/**
 * The loss history summarized, one line per phase: [phase name (null for a one-phase run), summary].
 * A multi-phase checkpoint older than `state.phases` names its first phase 'first phase'.
 *
 * @example
 *   lossLines(meta.state); // [['generator', 'first 100 steps 0.0000, ...'], ['fake score', '...']]
 */
export function lossLines(state: CheckpointMeta['state']): [string | null, string][] {
  if (!state) return [[null, 'no history']];
  const others = Object.entries(state.phaseLosses ?? {});
  const first: [string | null, string] = [others.length ? (state.phases?.[0] ?? 'first phase') : null, summarize(decodeFloats(state.losses))];
  return [first, ...others.map(([name, enc]): [string, string] => [name, summarize(decodeFloats(enc))])];
}

/** One loss history in a line: the means of the first and last 100 values, min, max, count. */
function summarize(losses: number[]): string {
  return losses.length
    ? `first 100 steps ${mean(losses.slice(0, 100)).toFixed(4)}, last 100 ${mean(losses.slice(-100)).toFixed(4)}, min ${Math.min(...losses).toFixed(4)}, max ${Math.max(...losses).toFixed(4)} (${losses.length} steps)`
    : 'no history';
}

/** What a latent model decodes with: the autoencoder, the shapes, the normalization. */
function latentLine(r: NonNullable<CheckpointMeta['latent']>): string {
  const f = (xs: number[]) => xs.map((v) => Number(v.toPrecision(4))).join(', ');
  const norm = r.norm === 'scalar' ? `z x ${Number(r.scale[0].toPrecision(4))} (scale factor 1 / std(z))` : `(z - [${f(r.shift)}]) x [${f(r.scale)}] (per channel)`;
  return `latent diffusion: samples are latents [${r.latentShape}] of the KL-f${r.factor} autoencoder ${r.autoencoder}, decoded to [3, ${r.imageSize}, ${r.imageSize}] images; normalized ${norm}`;
}

/** ', super-resolution from N px (...)' for an SR stage, else ''. */
function superRes(c: CheckpointMeta['config']): string {
  if (c.lowRes === null) return '';
  return `, super-resolution from ${c.lowRes} px (the low-res image concatenated; augmentation s ~ U[0, ${c.augMax}]${c.augBlur ? ', blur' : ''}; docs/resolution.md)`;
}

export function exportCommand(argv: readonly string[]): number {
  const args = parseArgs(argv, { help: 'switch', dtype: 'value', weights: 'value', lora: 'value', 'lora-scale': 'value' });
  if (args.flags.has('help')) {
    process.stdout.write(exportHelp());
    return 0;
  }
  if (args.positionals.length !== 2) throw new UsageError(`expected CHECKPOINT and OUT_DIR, got ${args.positionals.length} argument(s) (see diffuse export --help)`);
  const [src, dst] = args.positionals;
  if (path.resolve(src) === path.resolve(dst)) throw new UsageError('OUT_DIR must differ from CHECKPOINT');
  const dtype = choiceFlag(args, 'dtype', ['float16', 'bfloat16', 'float32'] as const, 'float16');
  if (fs.existsSync(path.join(src, AUTOENCODER_FILE))) {
    for (const flag of ['weights', 'lora', 'lora-scale']) if (args.flags.has(flag)) throw new UsageError(`--${flag} is for diffusion checkpoints; ${src} is an autoencoder`);
    const ae = exportAutoencoder(src, dst, { dtype });
    process.stdout.write(`wrote ${dst}: ${ae.weights.file} (${kb(ae.weights.bytes)}, ${dtype}) and ${AUTOENCODER_FILE}, from the autoencoder ${src}\n`);
    return 0;
  }
  if (fs.existsSync(path.join(src, ADAPTER_WEIGHTS))) {
    for (const flag of ['weights', 'lora', 'lora-scale']) if (args.flags.has(flag)) throw new UsageError(`--${flag} is for diffusion checkpoints; ${src} is a LoRA adapter`);
    const weights = exportLora(src, dst, dtype);
    process.stdout.write(`wrote ${dst}: ${ADAPTER_WEIGHTS} (${kb(fs.statSync(weights).size)}, ${dtype}), from the adapter ${src}\n`);
    return 0;
  }
  const part = choiceFlag(args, 'weights', ['ema', 'model'] as const, 'ema');
  if (args.flags.has('lora-scale') && !args.flags.has('lora')) throw new UsageError('--lora-scale needs --lora (the adapter to merge)');
  const loraPath = args.flags.get('lora');
  const lora = loraPath === undefined ? null : { path: loraPath, scale: numberFlag(args, 'lora-scale') ?? 1 };
  let meta: CheckpointMeta;
  try {
    meta = exportCheckpoint(src, dst, { dtype, part, lora });
  } catch (e) {
    if (lora && (e as Error).message.startsWith('loadLora:')) throw new UsageError(`--lora ${lora.path}: ${(e as Error).message}`);
    throw e;
  }
  const rec = meta.files[part]!;
  process.stdout.write(`wrote ${dst}: ${rec.file} (${kb(rec.bytes)}, ${dtype}) and checkpoint.json, from step ${meta.step} of ${src}\n`);
  return 0;
}
