/**
 * Quality against cost: a model's samples measured at several settings — sampler steps (the
 * number of denoiser evaluations, NFE) or guidance scales — one row per setting. This is what
 * `diffuse eval --steps 5,10,20` and `--guidance 1,2,3` run; the CLI only parses the flags,
 * calls evaluateSweep and prints the rows.
 *
 * @example
 *   const { meta, denoiser } = loadModel('models/fashion-mnist');
 *   const fnet = loadFeatureNet();
 *   const ref = fashionReference(fnet);
 *   const labels = cycleLabels(1000, 10);
 *   const rows = evaluateSweep({
 *     denoiser, meta, settings: sweepSettings([5, 10, 20], [null]),
 *     spec: { n: 1000, seed: 0, labels, sampler: 'dpmpp-2m', grid: 'karras' },
 *     measure: (x) => imageMetrics(fnet, ref, x, { labels }),
 *   });
 *   rows.map((r) => [r.nfe, r.metrics.fd.value]);      // FD against NFE
 */
import { Denoiser } from '../core/denoiser';
import { Tensor } from '../engine/tensor';
import { PreparedGuidance } from '../guidance/load';
import { BatchProgress, countEvaluations } from '../sampling/generate';
import { CheckpointMeta } from '../training/checkpoint';
import { generateInBatches, GenerationSpec } from './evaluate';
import { MetricValue } from './report';

/** One setting of a sweep: sampler steps, and the guidance scale (null: unguided). */
export interface SweepSetting {
  steps: number;
  guidance: number | null;
}

/** One measured setting. */
export interface SweepRow extends SweepSetting {
  /** Network evaluations per sample (batched classifier-free guidance counts 2 per denoiser call). */
  nfe: number;
  /** Wall time of generating and measuring the setting's samples. */
  seconds: number;
  metrics: Record<string, MetricValue>;
}

/** The settings of a sweep over steps or over guidance scales (one of the lists may have several values, not both). */
export function sweepSettings(steps: readonly number[], scales: readonly (number | null)[]): SweepSetting[] {
  if (steps.length === 0 || scales.length === 0) throw new RangeError(`sweepSettings: need at least one steps value and one scale (null: unguided), got ${steps.length} and ${scales.length}`);
  if (steps.length > 1 && scales.length > 1) throw new RangeError(`sweepSettings: sweep steps or guidance scales, not both at once (got steps ${steps.join(',')} and scales ${scales.join(',')})`);
  return steps.flatMap((s) => scales.map((w) => ({ steps: s, guidance: w })));
}

/** What evaluateSweep takes. */
export interface SweepOptions {
  /** The model's denoiser (unguided). */
  denoiser: Denoiser;
  /** The guidance to apply at each setting's scale (required when a setting has a scale). */
  guidance?: PreparedGuidance | null;
  meta: Pick<CheckpointMeta, 'config' | 'sampleShape'>;
  /** What to generate at every setting (the setting gives the steps). */
  spec: Omit<GenerationSpec, 'steps'>;
  settings: readonly SweepSetting[];
  /** The metrics of a setting's samples (uint8 images, or points). */
  measure: (x: Tensor) => Record<string, MetricValue>;
  /** Progress: a setting starts (its label, e.g. "steps 20, cfg w = 3"), each sampler step of each batch, a row is done. */
  onSetting?: (setting: SweepSetting, label: string) => void;
  onStep?: (i: number, steps: number, batch: BatchProgress) => void;
  onRow?: (row: SweepRow) => void;
}

/** Generates and measures the samples of each setting in turn (one setting's samples in memory at a time); the rows in order. */
export function evaluateSweep(o: SweepOptions): SweepRow[] {
  const rows: SweepRow[] = [];
  for (const { steps, guidance } of o.settings) {
    if (guidance !== null && !o.guidance) throw new TypeError(`evaluateSweep: a setting has guidance scale ${guidance} but no guidance was given`);
    const counted = countEvaluations(o.denoiser); // NFE: network evaluations (batched CFG: 2 per step)
    const guided = guidance !== null ? o.guidance!.at(guidance, counted.denoiser) : null;
    o.onSetting?.({ steps, guidance }, `steps ${steps}${guided ? `, ${guided.describe}` : ''}`);
    const t0 = performance.now();
    const x = generateInBatches(guided?.denoiser ?? counted.denoiser, o.meta, { ...o.spec, steps }, o.onStep);
    try {
      const metrics = o.measure(x);
      const row = { steps, guidance, nfe: counted.nfe(o.spec.n), seconds: (performance.now() - t0) / 1000, metrics };
      rows.push(row);
      o.onRow?.(row);
    } finally {
      x.dispose();
    }
  }
  return rows;
}
