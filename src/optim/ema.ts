/**
 * Exponential moving averages of the weights: the classic EMA, with a fixed decay or a
 * half-life in training images (EDM, Karras et al. 2022: `ema_halflife_kimg`,
 * `ema_rampup_ratio`). EDM2's power-function EMA is in phema.ts; both update every
 * parameter in one native call, ema = lerp(ema, p, 1 - beta).
 */
import type { Handle } from '../engine/native';
import { native } from '../engine/native';
import { Tensor } from '../engine/tensor';
import { Averages } from './averages';
import { checkOption, isNum, paramList, Params } from './params';

/**
 * The EMA decay per update for a half-life in images: beta = 0.5^(batchSize / halfLifeImages),
 * so that the weight of an update halves every halfLifeImages training images (EDM's
 * training_loop.py).
 *
 * @example
 *   emaBeta(500_000, 512); // 0.99929..., EDM's CIFAR-10 half-life of 500 kimg
 */
export function emaBeta(halfLifeImages: number, batchSize: number): number {
  checkOption('emaBeta', 'halfLifeImages', halfLifeImages, (x) => typeof x === 'number' && x > 0, 'a number > 0');
  checkOption('emaBeta', 'batchSize', batchSize, (x) => isNum(x) && x > 0, 'a finite number > 0');
  return 0.5 ** (batchSize / halfLifeImages);
}

export interface EMAOptions {
  /** A fixed beta per update, in [0, 1). Give this or halfLifeImages. */
  decay?: number;
  /** The half-life of the average in training images (EDM: ema_halflife_kimg * 1000). */
  halfLifeImages?: number;
  /** Images per update (required with halfLifeImages). */
  batchSize?: number;
  /** EDM's ramp-up: the half-life is at most rampupRatio * images seen so far (EDM uses 0.05; default none). */
  rampupRatio?: number | null;
}

/**
 * The classic EMA of a parameter list: after each optimizer step, ema = beta ema + (1 - beta) p.
 * The averages start as copies of the parameters and are owned by the EMA (dispose() frees them).
 *
 * @example
 *   const ema = new EMA(model.parameters(), { halfLifeImages: 500_000, batchSize: 512, rampupRatio: 0.05 });
 *   opt.step();
 *   ema.update();
 *   ema.copyTo(evalModel.parameters()); // sample with the averaged weights
 */
export class EMA {
  readonly names: readonly string[];
  readonly #params: Handle[];
  readonly #avg: Averages;
  readonly #decay: number | null;
  readonly #halfLife: number;
  readonly #batch: number;
  readonly #rampup: number | null;
  /** Training images seen (batchSize per update; 0 with a fixed decay). */
  nimg = 0;
  /** Updates made. */
  updates = 0;
  #disposed = false;

  constructor(params: Params, opts: EMAOptions) {
    const list = paramList('EMA', params);
    const { decay, halfLifeImages, batchSize, rampupRatio = null } = opts ?? {};
    if ((decay === undefined) === (halfLifeImages === undefined)) throw new TypeError('EMA: give exactly one of decay and halfLifeImages');
    if (decay !== undefined) {
      this.#decay = checkOption('EMA', 'decay', decay, (x) => isNum(x) && x >= 0 && x < 1, 'in [0, 1)');
      this.#halfLife = this.#batch = 0;
      this.#rampup = null;
    } else {
      this.#decay = null;
      this.#halfLife = checkOption('EMA', 'halfLifeImages', halfLifeImages as number, (x) => typeof x === 'number' && x > 0, 'a number > 0');
      this.#batch = checkOption('EMA', 'batchSize', batchSize as number, (x) => isNum(x) && x > 0, 'a finite number > 0 with halfLifeImages');
      this.#rampup = rampupRatio === null ? null : checkOption('EMA', 'rampupRatio', rampupRatio, (x) => isNum(x) && x > 0, 'a finite number > 0 or null');
    }
    this.names = list.names;
    this.#params = list.handles;
    this.#avg = new Averages(list);
  }

  /** The beta the next update() will use. */
  get beta(): number {
    if (this.#decay !== null) return this.#decay;
    let halfLife = this.#halfLife;
    if (this.#rampup !== null) halfLife = Math.min(halfLife, (this.nimg + this.#batch) * this.#rampup);
    return 0.5 ** (this.#batch / Math.max(halfLife, 1e-8));
  }

  /** Folds the current parameters into the average (call after each optimizer step). */
  update(): void {
    this.check();
    const beta = this.beta;
    this.#avg.update(this.#params, beta);
    this.nimg += this.#decay === null ? this.#batch : 0;
    this.updates++;
  }

  /** The averaged tensors, in parameter order (owned by the EMA: do not dispose). */
  get averages(): readonly Tensor[] {
    this.check();
    return this.#avg.tensors;
  }

  /** Copies the averages into `params` (the tracked parameters by default, e.g. at the end of training). */
  copyTo(params?: Params): void {
    this.check();
    const dst = params === undefined ? this.#params : paramList('EMA.copyTo', params).handles;
    native.copyList(dst, this.#avg.handles);
  }

  /** The state for a checkpoint: `ema.{name}` (new handles, no copy: dispose them after saving) and the counters. */
  stateDict(): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
    this.check();
    return { tensors: this.#avg.view(this.names, 'ema.'), metadata: { 'ema.nimg': String(this.nimg), 'ema.updates': String(this.updates) } };
  }

  loadStateDict(state: { tensors: Record<string, Tensor>; metadata?: Record<string, string> }): void {
    this.check();
    this.#avg.load('EMA', this.names, state.tensors, 'ema.');
    this.nimg = Number(state.metadata?.['ema.nimg'] ?? 0);
    this.updates = Number(state.metadata?.['ema.updates'] ?? 0);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#avg.dispose();
  }

  private check(): void {
    if (this.#disposed) throw new Error('EMA: used after dispose()');
  }
}
