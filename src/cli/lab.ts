/**
 * `diffuse lab`: the local web lab (src/lab/): five panels that show each idea of the tutorial
 * on the project's own models. Binds 127.0.0.1 by default; another host needs --allow-remote.
 *
 * @example
 *   diffuse lab --port 7860        # then open http://127.0.0.1:7860/
 */
import { isIP } from 'node:net';
import { intFlag, parseArgs, table, UsageError } from './args';

export function labHelp(): string {
  return `Usage: diffuse lab [options]

Starts the lab, a local web page with five panels: the forward process, the 2-D world
(denoiser field, sampler trajectories, the DDPM posterior mean, likelihood), guidance geometry,
sampling the shipped models and your runs (runs/NAME under the working directory), and the
evaluation reports as charts. Engine work runs in worker processes; Ctrl-C stops it. docs/lab.md.

${table([
  ['--port P', 'port (default 7860; 0 = any free port)'],
  ['--host H', 'address to bind (default 127.0.0.1, this machine only)'],
  ['--allow-remote', 'allow a --host other than a loopback address (the lab has no authentication: anyone who reaches it can run jobs)'],
  ['--threads N', 'CPU threads of each worker process (default 1)'],
  ['-h, --help', 'this help'],
])}

Examples:
  diffuse lab                    # http://127.0.0.1:7860/
  diffuse lab --port 0           # any free port
`;
}

/** True for 127.0.0.0/8, ::1 and localhost. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '0:0:0:0:0:0:0:1';
}

export async function labCommand(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, { port: 'value', host: 'value', 'allow-remote': 'switch', threads: 'value', help: 'switch' });
  if (args.flags.has('help')) {
    process.stdout.write(labHelp());
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`diffuse lab takes no arguments, got ${args.positionals.join(' ')}`);
  const port = intFlag(args, 'port', 7860, { min: 0, max: 65535 });
  const threads = intFlag(args, 'threads', 1, { min: 1, max: 256 });
  const host = args.flags.get('host') ?? '127.0.0.1';
  if (!isLoopback(host) && !args.flags.has('allow-remote')) throw new UsageError(`--host ${host}: not a loopback address; the lab has no authentication, so binding ${host} needs --allow-remote`);
  const { startLab } = require('../lab/server') as typeof import('../lab/server');
  const lab = await startLab({ port, host, threads });
  process.stdout.write(`diffuse lab: ${lab.url}  (Ctrl-C stops)\n`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  await lab.close();
  return 0;
}
