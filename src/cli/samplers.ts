/**
 * `diffuse samplers`: the registered samplers, one line each (kind, order, denoiser
 * evaluations for N steps, tunable options), and the named grids `diffuse sample --grid`
 * takes.
 *
 * @example
 *   diffuse samplers
 */
import { listGrids, listSamplers } from '../sampling';
import { parseArgs, UsageError } from './args';

export function samplersHelp(): string {
  return `Usage: diffuse samplers

Lists the samplers \`diffuse sample --sampler NAME\` runs: name, deterministic or
stochastic, order of convergence (of the ODE solution in the number of steps N),
denoiser evaluations (NFE) for N steps, the options it takes (--eta, --churn,
--variance) with their defaults, and the method; then the grids of --grid NAME.
Details: docs/samplers.md.
`;
}

export function samplersCommand(argv: readonly string[]): number {
  const args = parseArgs(argv, { help: 'switch' });
  if (args.flags.has('help')) {
    process.stdout.write(samplersHelp());
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])} (diffuse samplers takes none)`);
  const indent = (lines: string[]) => lines.map((l) => `  ${l}`).join('\n');
  process.stdout.write(`Samplers (--sampler NAME; N = --steps):\n${indent(listSamplers())}\n\nGrids (--grid NAME):\n${indent(listGrids())}\n`);
  return 0;
}
