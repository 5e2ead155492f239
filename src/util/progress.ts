/**
 * A one-line terminal progress bar with rate and ETA (redrawn in place on a TTY,
 * printed every ~10% otherwise so logs stay short).
 *
 * @example
 *   const bar = new Progress(1000, 'train');
 *   for (let i = 0; i < 1000; i++) { step(); bar.tick({ loss: 0.1 }); }
 *   bar.done();
 */
export class Progress {
  #done = 0;
  #start = performance.now();
  #lastDraw = 0;
  #lastDecile = -1;
  readonly #tty: boolean;

  constructor(
    readonly total: number,
    readonly label = '',
    readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.#tty = Boolean(stream.isTTY);
  }

  /** Advances by n and redraws (at most every 100 ms on a TTY). */
  tick(info: Record<string, number | string> = {}, n = 1): void {
    this.#done += n;
    const now = performance.now();
    const decile = Math.floor((10 * this.#done) / this.total);
    if (this.#tty ? now - this.#lastDraw < 100 && this.#done < this.total : decile === this.#lastDecile) return;
    this.#lastDraw = now;
    this.#lastDecile = decile;
    this.stream.write((this.#tty ? '\r\x1b[K' : '') + this.line(info) + (this.#tty ? '' : '\n'));
  }

  /** The bar as text: "label [#####.....] 50% 500/1000 12.3 it/s ETA 41s loss=0.1". */
  line(info: Record<string, number | string> = {}): string {
    const frac = this.total > 0 ? Math.min(1, this.#done / this.total) : 1;
    const width = 24;
    const fill = Math.round(frac * width);
    const secs = (performance.now() - this.#start) / 1000;
    const rate = this.#done / Math.max(secs, 1e-9);
    const eta = rate > 0 ? (this.total - this.#done) / rate : Infinity;
    const extras = Object.entries(info)
      .map(([k, v]) => `${k}=${typeof v === 'number' ? formatNumber(v) : v}`)
      .join(' ');
    return `${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(100 * frac).toFixed(0).padStart(3)}% ${this.#done}/${this.total} ${rate.toFixed(1)} it/s ETA ${formatSeconds(eta)} ${extras}`.trimEnd();
  }

  /** Ends the line. */
  done(): void {
    if (this.#tty) this.stream.write('\n');
  }
}

export function formatNumber(v: number): string {
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toFixed(4);
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const r = Math.round(s); // round once, so 239.6 s is 4m00s, not 3m60s
  if (r < 60) return `${r}s`;
  if (r < 3600) return `${Math.floor(r / 60)}m${(r % 60).toString().padStart(2, '0')}s`;
  const m = Math.round(r / 60);
  return `${Math.floor(m / 60)}h${(m % 60).toString().padStart(2, '0')}m`;
}
