/**
 * A PyTorch peer for the benchmarks: a Python script in a child process answering one JSON
 * object per line on stdout (first a {"ready": true, ...} greeting), one per request line on
 * stdin; {"error": "..."} replies become exceptions. bench/engine.ts, bench/unet.ts and
 * bench/sample.ts use it.
 *
 * @example
 *   const { peer, hello } = await Peer.start('/usr/bin/python3', 'bench/sample_peer.py', [dir, '2']);
 *   const r = await peer.request({ cmd: 'sample' });
 *   await peer.close();
 */
import { spawn, ChildProcessWithoutNullStreams } from 'node:child_process';
import * as readline from 'node:readline';

export type Reply = Record<string, unknown>;

export class Peer {
  private readonly lines: AsyncIterableIterator<string>;
  private exited: string | null = null;

  private constructor(private readonly proc: ChildProcessWithoutNullStreams) {
    proc.stderr.on('data', (d: Buffer) => process.stderr.write(`[peer] ${d.toString()}`));
    proc.on('exit', (code, sig) => (this.exited = `exited with ${sig ?? `status ${code}`}`));
    proc.on('error', (e) => (this.exited = `could not start: ${e.message}`));
    this.lines = readline.createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  }

  /** Starts `python script ...args` and waits for its greeting. */
  static async start(python: string, script: string, args: string[]): Promise<{ peer: Peer; hello: Reply }> {
    const peer = new Peer(spawn(python, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
    return { peer, hello: await peer.read() };
  }

  /** Sends one request and waits for its reply (typed as the caller expects: the peer's protocol is the contract). */
  async request<T = Reply>(msg: object): Promise<T> {
    if (this.exited) throw new Error(`PyTorch peer ${this.exited}`);
    this.proc.stdin.write(JSON.stringify(msg) + '\n');
    return (await this.read()) as T;
  }

  private async read(): Promise<Reply> {
    const next = await this.lines.next();
    if (next.done) throw new Error(`PyTorch peer ${this.exited ?? 'closed its output'} (see [peer] lines above)`);
    const reply = JSON.parse(next.value) as Reply;
    if (reply.error) throw new Error(`PyTorch peer: ${typeof reply.error === 'string' ? reply.error : JSON.stringify(reply.error)}`);
    return reply;
  }

  /** Asks the peer to quit and waits for it to exit. */
  async close(): Promise<void> {
    if (!this.exited) this.proc.stdin.end(JSON.stringify({ cmd: 'quit' }) + '\n');
    await new Promise((res) => (this.exited ? res(null) : this.proc.on('exit', res)));
  }
}

/** The median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
