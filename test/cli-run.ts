// Running the `diffuse` command from tests: main() in this process with stdout and stderr
// captured (quick), or a child process as a user runs it (spawned). Shared by the CLI tests.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { main } from '../src/cli/main';

export interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

/** main(args) in this process, in the folder cwd, with stdout and stderr captured (console.log writes to stdout too). */
export async function runQuick(cwd: string, ...args: string[]): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  // eslint-disable-next-line @typescript-eslint/unbound-method -- saved to be put back as they were, and called with .call(stream)
  const [o, e, here] = [process.stdout.write, process.stderr.write, process.cwd()];
  // Strings are the command's; anything else (the test runner's serialized reports, written
  // as buffers while main() is awaited) passes through, or a finished test's report would vanish.
  const capture = (sink: string[], stream: NodeJS.WriteStream, orig: typeof process.stdout.write) =>
    ((s: string | Uint8Array, ...rest: unknown[]) => (typeof s === 'string' ? (sink.push(s), true) : (orig as (...a: unknown[]) => boolean).call(stream, s, ...rest))) as typeof process.stdout.write;
  process.stdout.write = capture(out, process.stdout, o);
  process.stderr.write = capture(err, process.stderr, e);
  process.chdir(cwd);
  try {
    const code = await main(args);
    return { code, out: out.join(''), err: err.join('') };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
    process.chdir(here);
  }
}

/** The command in a child process (~1-2 s each, mostly loading libtorch), one thread. */
export function runSpawned(cwd: string, ...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'src', 'cli', 'main.js'), ...args], { encoding: 'utf8', env: { ...process.env, DIFFUSE_NUM_THREADS: '1' }, cwd });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
