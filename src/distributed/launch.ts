/**
 * The launcher: starts this machine's ranks of a data-parallel run as child processes, with
 * the environment torchrun gives its workers (MASTER_ADDR, MASTER_PORT, RANK, LOCAL_RANK,
 * WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK) and the cores split between them. Each rank
 * joins the process group from that environment (rendezvousFromEnv). When a rank fails, the
 * others are given a few seconds to report their own error (a peer's death reaches them at
 * once; a hung peer after the timeout), then stopped; the launcher resolves with the first
 * failing rank's exit code. Ctrl-C (SIGINT) and SIGTERM are passed on to every rank once.
 *
 * @example
 *   // 2 ranks of `diffuse train` on this machine, 1 thread each:
 *   const code = await launch([require.resolve('diffuse/dist/src/cli/main.js'), 'train', '--steps', '100'], { nprocPerNode: 2 });
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as os from 'node:os';
import { DEFAULT_TIMEOUT_SECONDS } from './process-group';

export interface LaunchOptions {
  /** Ranks on this machine (torchrun's --nproc-per-node). */
  nprocPerNode: number;
  /** Machines in the run (--nnodes; default 1). */
  nnodes?: number;
  /** This machine's index, 0..nnodes-1 (--node-rank; default 0). */
  nodeRank?: number;
  /** The host of global rank 0 (--master-addr; default 127.0.0.1). */
  masterAddr?: string;
  /** Its TCPStore port (--master-port; default 29500). */
  masterPort?: number;
  /** Seconds a rendezvous or collective may wait (default 300). */
  timeoutSeconds?: number;
  /** libtorch threads per rank (default: this machine's cores / nprocPerNode, at least 1). */
  threadsPerRank?: number;
  /** Seconds the other ranks get to exit by themselves after one failed, before they are killed (default 5). */
  graceSeconds?: number;
  /** Where the launcher's own lines go (the ranks' pids, which rank failed; default process.stderr; null: silent). */
  log?: NodeJS.WritableStream | null;
}

/** Checks the options (errors name the flag and value) and fills the defaults. */
export function launchSettings(o: LaunchOptions): Required<Omit<LaunchOptions, 'log'>> {
  const int = (flag: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (!(Number.isSafeInteger(v) && v >= min && v <= max)) throw new RangeError(`--${flag} must be an integer in ${min}..${max}, got ${v}`);
    return v;
  };
  const nproc = int('nproc-per-node', o.nprocPerNode, 1);
  const nnodes = int('nnodes', o.nnodes ?? 1, 1);
  const timeout = o.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  if (!(timeout > 0)) throw new RangeError(`--dist-timeout must be a positive number of seconds, got ${timeout}`);
  const masterAddr = o.masterAddr ?? '127.0.0.1';
  if (!masterAddr) throw new RangeError('--master-addr must name the host of rank 0, got ""');
  return {
    nprocPerNode: nproc,
    nnodes,
    nodeRank: int('node-rank', o.nodeRank ?? 0, 0, nnodes - 1),
    masterAddr,
    masterPort: int('master-port', o.masterPort ?? 29500, 1, 65535),
    timeoutSeconds: timeout,
    threadsPerRank: int('threads', o.threadsPerRank ?? Math.max(1, Math.floor(os.availableParallelism() / nproc)), 1),
    graceSeconds: o.graceSeconds ?? 5,
  };
}

/** Runs `node ...args` as this machine's ranks; resolves with 0 when all succeed, else the first failing rank's exit code. */
export function launch(args: readonly string[], opts: LaunchOptions): Promise<number> {
  const s = launchSettings(opts);
  const log = opts.log === undefined ? process.stderr : opts.log;
  const world = s.nprocPerNode * s.nnodes;
  const children: ChildProcess[] = [];
  return new Promise((resolve) => {
    let running = 0;
    let failure: { rank: number; code: number } | null = null;
    let killTimer: NodeJS.Timeout | null = null;
    const forward = (sig: NodeJS.Signals) => () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(sig);
    };
    const onInt = forward('SIGINT');
    const onTerm = forward('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    const finish = () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      if (killTimer) clearTimeout(killTimer);
      resolve(failure ? failure.code : 0);
    };
    for (let local = 0; local < s.nprocPerNode; local++) {
      const rank = s.nodeRank * s.nprocPerNode + local;
      const env = {
        ...process.env,
        MASTER_ADDR: s.masterAddr,
        MASTER_PORT: String(s.masterPort),
        RANK: String(rank),
        LOCAL_RANK: String(local),
        WORLD_SIZE: String(world),
        LOCAL_WORLD_SIZE: String(s.nprocPerNode),
        GROUP_RANK: String(s.nodeRank),
        DIFFUSE_DIST_TIMEOUT: String(s.timeoutSeconds),
        DIFFUSE_NUM_THREADS: String(s.threadsPerRank),
        OMP_NUM_THREADS: String(s.threadsPerRank),
      };
      // Its own process group: a terminal's Ctrl-C reaches the launcher alone, which passes it on once.
      const child = spawn(process.execPath, [...process.execArgv, ...args], { env, stdio: 'inherit', detached: true });
      children.push(child);
      running++;
      log?.write(`launch: rank ${rank} of ${world} (local ${local}), pid ${child.pid}, ${s.threadsPerRank} thread${s.threadsPerRank === 1 ? '' : 's'}\n`);
      child.on('exit', (code, signal) => {
        running--;
        const failed = code !== 0;
        if (failed && failure === null && code === 130)
          failure = { rank, code }; // interrupted (Ctrl-C): the others stop at the same step
        else if (failed && failure === null) {
          failure = { rank, code: code ?? 1 };
          log?.write(`launch: rank ${rank} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; stopping the other ranks in ${s.graceSeconds} s\n`);
          killTimer = setTimeout(() => {
            forward('SIGKILL')();
          }, s.graceSeconds * 1000);
        }
        if (running === 0) finish();
      });
    }
  });
}
