#!/usr/bin/env node
/**
 * The `diffuse` command: train, train-classifier, train-autoencoder, eval-autoencoder, sample, eval, samplers, info, export, phema, distill, lab. Exit codes: 0 success, 1 a
 * runtime failure (a corrupt checkpoint, a missing dataset, a NaN loss), 2 a usage
 * error (unknown command, flag or value), 130 interrupted by Ctrl-C.
 *
 * Run: npx diffuse --help, or npm run diffuse -- sample --n 16
 */
import { ConfigError } from '../training/config';
import { UsageError } from './args';
import { exportCommand, exportHelp, infoCommand, infoHelp } from './info';
import { sampleCommand, sampleHelp } from './sample';
import { evalCommand, evalHelp } from './eval';
import { samplersCommand, samplersHelp } from './samplers';
import { phemaCommand, phemaHelp } from './phema';
import { trainCommand, trainHelp } from './train';
import { trainClassifierCommand, trainClassifierHelp } from './train-classifier';
import { evalAutoencoderCommand, evalAutoencoderHelp, trainAutoencoderCommand, trainAutoencoderHelp } from './autoencoder';
import { distillCommand, distillHelp } from './distill';
import { labCommand, labHelp } from './lab';

const COMMANDS: Record<string, { run: (argv: string[]) => number | Promise<number>; help: () => string; summary: string }> = {
  train: { run: trainCommand, help: trainHelp, summary: 'train a model (no options: the default Fashion-MNIST run)' },
  'train-classifier': { run: trainClassifierCommand, help: trainClassifierHelp, summary: 'train the Fashion-MNIST classifier / feature net (--noise ddpm: for guidance)' },
  'train-autoencoder': { run: trainAutoencoderCommand, help: trainAutoencoderHelp, summary: 'train the KL autoencoder of latent diffusion on the emoji (L1 + multi-scale SSIM + KL)' },
  'eval-autoencoder': { run: evalAutoencoderCommand, help: evalAutoencoderHelp, summary: 'an autoencoder on the emoji test split: PSNR, SSIM, reconstruction FD, latent statistics' },
  sample: { run: sampleCommand, help: sampleHelp, summary: 'draw samples from a checkpoint (default: the shipped Fashion-MNIST model)' },
  eval: { run: evalCommand, help: evalHelp, summary: 'measure sample quality: Frechet distance, KID, precision/recall, class accuracy (sweeps steps or guidance)' },
  samplers: { run: samplersCommand, help: samplersHelp, summary: 'list the samplers and grids of diffuse sample' },
  info: { run: infoCommand, help: infoHelp, summary: 'describe a checkpoint' },
  export: { run: exportCommand, help: exportHelp, summary: 'write a half-precision, sampling-only copy of a checkpoint' },
  phema: { run: phemaCommand, help: phemaHelp, summary: 'post-hoc EMA: reconstruct the EMA of any length from a run trained with --ema phema' },
  distill: { run: distillCommand, help: distillHelp, summary: 'distil a model into a few-step student (progressive, guided) and measure students (yardstick)' },
  lab: { run: labCommand, help: labHelp, summary: 'the local web lab: every idea of the tutorial on the real models (http://127.0.0.1:7860/)' },
};

export function mainHelp(): string {
  const w = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return `Usage: diffuse <command> [options]

Diffusion models in TypeScript on libtorch.

Commands:
${Object.entries(COMMANDS)
  .map(([k, c]) => `  ${k.padEnd(w)}  ${c.summary}`)
  .join('\n')}
  ${'help'.padEnd(w)}  help on a command: diffuse help <command> (or diffuse <command> --help)

Docs: docs/cli.md
`;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const name = cmd ?? 'help';
  try {
    if (name === 'help' || name === '--help' || name === '-h') {
      const topic = rest[0];
      if (topic === undefined) process.stdout.write(mainHelp());
      else if (COMMANDS[topic]) process.stdout.write(COMMANDS[topic].help());
      else throw new UsageError(`unknown command ${JSON.stringify(topic)} (commands: ${Object.keys(COMMANDS).join(', ')})`);
      return 0;
    }
    if (name === '--version') {
      process.stdout.write(`${(require('../training/checkpoint') as typeof import('../training/checkpoint')).diffuseVersion()}\n`);
      return 0;
    }
    const c = COMMANDS[name];
    if (!c) throw new UsageError(`unknown command ${JSON.stringify(name)} (commands: ${Object.keys(COMMANDS).join(', ')}, help)`);
    return await c.run(rest);
  } catch (e) {
    const err = e as Error;
    const usage = err instanceof UsageError || err instanceof ConfigError;
    process.stderr.write(`diffuse ${name}: error: ${err.message}\n`);
    if (usage) process.stderr.write(`(see diffuse ${COMMANDS[name] ? `${name} ` : ''}--help)\n`);
    else if (process.env.DIFFUSE_DEBUG && err.stack) process.stderr.write(err.stack + '\n');
    return usage ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`diffuse: ${(e as Error).stack ?? e}\n`);
      process.exitCode = 1;
    },
  );
}
