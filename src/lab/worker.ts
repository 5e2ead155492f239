/**
 * The lab's engine process (child_process.fork of this file, one per model): it takes one
 * request at a time from the server (src/lab/jobs.ts), runs it with the engine, and answers with
 * messages: { id, type: 'progress', data } while a sampling job streams its x0 estimates, then
 * { id, type: 'done', data } or { id, type: 'error', message }. Cancelling kills the process.
 *
 * Requests: { id, kind, params } with kind a panel ('forward', 'field', 'trajectories',
 * 'posterior', 'likelihood', 'guidance') or 'sample' (a checkpoint folder the server resolved by name).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setNumThreads } from '../engine/runtime';
import { tidy } from '../engine/scope';
import { Denoiser } from '../core/denoiser';
import { prepareGuidance, GuidanceType } from '../guidance/load';
import { countEvaluations } from '../sampling/generate';
import { loadModel } from '../training/checkpoint';
import { generateSamples } from '../training/build';
import { resolveTrainConfig } from '../training/config';
import { Trainer } from '../training/trainer';
import { fieldPanel, forwardPanel, ForwardParams, FieldParams, gridDataUrl, guidancePanel, GuidanceParams, likelihoodPanel, posteriorPanel, trajectoriesPanel, TrajectoryParams } from './panels';

/** What a sampling job takes (validated by the server). */
export interface SampleParams {
  /** The checkpoint folder (resolved by the server from a model name, never from the request). */
  dir: string;
  sampler: string;
  grid?: string;
  steps: number;
  seed: number;
  n: number;
  /** A class id, 'none' (unconditional) or null (cycle through the classes). */
  cls: number | 'none' | null;
  guidance: { type: GuidanceType; scale: number; guide?: string } | null;
}

/** The steps and folder of the lab's 2-D MLP denoiser, trained once and kept under runs/lab/. */
export const TOY_MODEL = { dir: path.join('runs', 'lab', 'toy-8gaussians'), steps: 400 };

let toy: Denoiser | null = null;

/** The learned denoiser of the 8-Gaussians toy: loaded from runs/lab/, or trained there first (a few seconds). */
export function toyDenoiser(dir = TOY_MODEL.dir): Denoiser {
  if (toy) return toy;
  if (!fs.existsSync(path.join(dir, 'checkpoint.json'))) {
    const config = resolveTrainConfig({
      data: '8gaussians',
      model: { type: 'mlp', hidden: 128, depth: 3 },
      objective: 'edm',
      sigmaData: 1,
      batchSize: 256,
      steps: TOY_MODEL.steps,
      warmupSteps: 20,
      sampleEvery: 0,
      checkpointEvery: 0,
      out: dir,
    });
    const trainer = Trainer.create(config, { log: null });
    try {
      trainer.runSync();
    } finally {
      trainer.dispose();
    }
  }
  toy = loadModel(dir).denoiser;
  return toy;
}

type Send = (msg: object) => void;

/** One sampling job: n images, the x0 estimate of each step streamed as a PNG grid. */
export function sampleJob(p: SampleParams, send: Send): object {
  const { meta, net, denoiser } = loadModel(p.dir);
  try {
    const k = meta.classNames?.length ?? 0;
    const labels = !meta.classNames ? null : p.cls === null ? Array.from({ length: p.n }, (_, i) => i % k) : new Array<number>(p.n).fill(p.cls === 'none' ? k : p.cls);
    const prepared = p.guidance ? prepareGuidance(denoiser, meta, { type: p.guidance.type, guide: p.guidance.guide }) : null;
    try {
      const counted = countEvaluations(denoiser); // NFE: network evaluations (batched CFG: 2 per step)
      const guided = prepared ? prepared.at(p.guidance!.scale, counted.denoiser).denoiser : counted.denoiser;
      const ncol = labels && p.cls === null ? Math.min(k, p.n) : undefined;
      const t0 = performance.now();
      const x = generateSamples(guided, meta.config, {
        shape: meta.sampleShape,
        n: p.n,
        seed: p.seed,
        labels,
        sampler: p.sampler,
        grid: p.grid,
        steps: p.steps,
        onStep: (i, steps, _batch, info) => send({ type: 'progress', data: { step: i + 1, steps, sigma: info.sigma, x0: tidy(() => gridDataUrl(info.denoised.clamp(-1, 1), { ncol, scale: 2 })) } }),
      });
      try {
        return { image: gridDataUrl(x, { ncol, scale: 2 }), nfe: counted.nfe(p.n), seconds: (performance.now() - t0) / 1000, classNames: meta.classNames };
      } finally {
        x.dispose();
      }
    } finally {
      prepared?.dispose();
    }
  } finally {
    net.dispose();
  }
}

/** Runs one request. */
export function handle(kind: string, params: unknown, send: Send): object {
  switch (kind) {
    case 'forward':
      return forwardPanel(params as ForwardParams);
    case 'field':
      return fieldPanel(params as FieldParams, toyDenoiser());
    case 'trajectories':
      return trajectoriesPanel(params as TrajectoryParams, (params as TrajectoryParams).denoiser === 'learned' ? toyDenoiser() : null);
    case 'posterior':
      return posteriorPanel(params as { t: number; seed: number });
    case 'likelihood':
      return likelihoodPanel();
    case 'guidance':
      return guidancePanel(params as GuidanceParams);
    case 'sample':
      return sampleJob(params as SampleParams, send);
    default:
      throw new Error(`unknown request kind ${JSON.stringify(kind)}`);
  }
}

if (require.main === module && process.send) {
  setNumThreads(Number(process.env.DIFFUSE_LAB_THREADS) || 1);
  const send = (m: object) => process.send!(m);
  process.on('message', (m: { id: number; kind: string; params: unknown }) => {
    try {
      const data = handle(m.kind, m.params, (msg) => send({ id: m.id, ...msg }));
      send({ id: m.id, type: 'done', data });
    } catch (e) {
      send({ id: m.id, type: 'error', message: (e as Error).message });
    }
  });
  process.on('disconnect', () => process.exit(0));
}
