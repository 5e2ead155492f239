/**
 * `diffuse eval --nll vlb|ode|both [CHECKPOINT]`: bits/dim of Fashion-MNIST test images under
 * an image model (src/eval/nll.ts does the work; this file parses the flags and prints).
 *
 * @example
 *   diffuse eval --nll both --n 100                 # the shipped model: bound and ODE, 100 test images
 *   diffuse eval runs/x --nll ode --probes 4 --ode-steps 32
 */
import { batchSizeFlag } from './sampling-flags';
import { defaultReportDir } from '../util/shipped';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tensor } from '../engine/tensor';
import { fashionMNISTSubset } from '../data/fashion-mnist';
import { buildSchedule } from '../training/build';
import { loadModel } from '../training/checkpoint';
import { likelihoodBitsPerDim, NLLEstimate, NLLMethod } from '../eval/nll';
import { formatColumns, formatMetric, formatValue } from '../eval/report';
import { writeFileAtomic } from '../util/image';
import { formatSeconds, Progress } from '../util/progress';
import { asUsage, choiceFlag, intFlag, ParsedArgs, UsageError } from './args';
import { shippedModelDir } from './sample';

/** The flags --nll adds to diffuse eval. */
export const NLL_FLAGS = { nll: 'value', 'ode-steps': 'value', probes: 'value', trace: 'value' } as const;

/** Help rows of the --nll flags. */
export function nllHelpRows(): [string, string][] {
  return [
    ['--nll M', 'likelihood instead of sample quality: "vlb" (variational bound, DDPM models), "ode" (probability flow) or "both"; bits/dim of --n test images (default 100)'],
    ['--ode-steps K', 'RK4 steps of the probability-flow ODE, uniform in ln(sigma) (default 64)'],
    ['--trace T', '"hutchinson" (default for images) or "exact" (one backward pass per pixel: small images only)'],
    ['--probes P', "Hutchinson probes per image (default 2: the estimator's own standard error is printed too)"],
    ['--class C', 'with --nll: "none" (default: p(x), the null class of a class-conditional model) or "label" (p(x | y), the true labels)'],
  ];
}

/** diffuse eval --nll: parses the flags, runs likelihoodBitsPerDim with a progress bar, prints a table and writes a JSON report. */
export function nllCommand(args: ParsedArgs): number {
  const which = choiceFlag(args, 'nll', ['vlb', 'ode', 'both'] as const, 'both');
  const methods: NLLMethod[] = which === 'both' ? ['vlb', 'ode'] : [which];
  const n = intFlag(args, 'n', 100, { min: 2, max: 10_000 });
  const seed = intFlag(args, 'seed', 0, { min: 0, max: Number.MAX_SAFE_INTEGER - 10_000 });
  const batchSize = batchSizeFlag(args) ?? 50;
  const odeSteps = intFlag(args, 'ode-steps', 64, { min: 1, max: 100_000 });
  const probes = intFlag(args, 'probes', 2, { min: 1, max: 1000 });
  const trace = choiceFlag(args, 'trace', ['hutchinson', 'exact'] as const, 'hutchinson');
  const conditioning = choiceFlag(args, 'class', ['none', 'label'] as const, 'none');
  for (const f of ['baseline', 'steps', 'guidance', 'sampler', 'grid'])
    if (args.flags.has(f)) throw new UsageError(`--${f} does not apply to --nll (the likelihood is of the model, not of a sampler)`);
  const dir = args.positionals[0] ?? shippedModelDir();
  if (!fs.existsSync(path.join(dir, 'checkpoint.json'))) throw new UsageError(`${dir}: no checkpoint.json (pass a checkpoint folder)`);
  const weightsFlag = args.flags.get('weights');
  if (weightsFlag !== undefined && weightsFlag !== 'ema' && weightsFlag !== 'model') throw new UsageError(`--weights: expected 'ema' or 'model', got ${JSON.stringify(weightsFlag)}`);
  const { meta, net, denoiser, weights } = loadModel(dir, { weights: weightsFlag });
  let x: Tensor | null = null;
  try {
    if (meta.sampleShape.length !== 3 || meta.config.data !== 'fashion-mnist')
      throw new UsageError(`--nll measures Fashion-MNIST image models; ${dir} is a ${meta.config.data} model (2-D models report nll in plain diffuse eval)`);
    const schedule = buildSchedule(meta.config);
    if (methods.includes('vlb') && !schedule)
      throw new UsageError(`--nll ${which}: the variational bound needs a discrete-time (DDPM) model; ${dir} has objective ${meta.config.objective} (use --nll ode)`);
    const k = meta.classNames?.length ?? 0;
    if (conditioning === 'label' && k === 0) throw new UsageError('--class label: the model is not class-conditional');
    const subset = asUsage(() => fashionMNISTSubset(n, { split: 'test', seed, pad32: meta.sampleShape[1] === 32 }));
    x = subset.x;
    const labels = k === 0 ? null : conditioning === 'label' ? subset.labels : new Array<number>(n).fill(k);
    const dims = x.size / n;
    if (trace === 'exact' && dims > 64) throw new UsageError(`--trace exact: ${dims} dimensions need ${dims} backward passes per ODE evaluation; use hutchinson`);
    console.log(
      `diffuse eval --nll ${which}: ${dir} (step ${meta.step}, ${weights} weights), ${n} Fashion-MNIST test images${n < 10_000 ? ` (a subset drawn with seed ${seed})` : ''}, ` +
        `${dims} dimensions (${meta.sampleShape.join('x')}), ${labels ? (conditioning === 'label' ? 'conditioned on the true labels: p(x | y)' : 'null class: p(x)') : 'unconditional'}`,
    );
    const bars = new Map<NLLMethod, Progress>();
    const t0 = performance.now();
    const times: Partial<Record<NLLMethod, number>> = {};
    let last = t0;
    const r = likelihoodBitsPerDim(denoiser, x, {
      methods,
      schedule,
      labels,
      seed,
      batchSize,
      odeSteps,
      trace,
      probes,
      progress: ({ method, done, total }) => {
        let bar = bars.get(method);
        if (!bar) bars.set(method, (bar = new Progress(total, method === 'vlb' ? `bound (T = ${schedule!.T})` : `ODE (${odeSteps} RK4 steps)`)));
        bar.tick();
        if (done === total) {
          bar.done();
          const now = performance.now();
          times[method] = (now - last) / 1000;
          last = now;
        }
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    const rows: [string, NLLEstimate, string][] = [];
    if (r.vlb)
      rows.push([
        'vlb',
        r.vlb,
        `T = ${r.vlb.T}, reverse variance ${r.vlb.variance}, x0 clipped ${r.vlb.clip ? 'to [-1, 1]' : 'no'}; L_T ${formatValue(r.vlb.terms.prior)}, sum L_t-1 ${formatValue(r.vlb.terms.diffusion)}, L_0 ${formatValue(r.vlb.terms.decoder)} bits/dim`,
      ]);
    if (r.ode)
      rows.push([
        'ode',
        r.ode,
        `${r.ode.trace}${r.ode.trace === 'hutchinson' ? ` (${r.ode.probes} probes${r.ode.traceStderr !== undefined ? `, its own stderr ${formatValue(r.ode.traceStderr, 2)}` : ''})` : ''}, ${r.ode.steps} RK4 steps, sigma ${formatValue(r.ode.sigmaMin)} .. ${formatValue(r.ode.sigmaMax)}, uniform dequantization`,
      ]);
    const outDir = args.flags.get('out') ?? defaultReportDir(dir);
    fs.mkdirSync(outDir, { recursive: true });
    const json = path.join(outDir, `nll-${which}_n${n}_seed${seed}.json`);
    const report = {
      kind: 'nll',
      checkpoint: dir,
      checkpointStep: meta.step,
      weights,
      data: 'fashion-mnist test',
      n,
      seed,
      dims,
      conditioning: labels ? conditioning : 'unconditional',
      dequantization: 'uniform: x = (k + u - 1/2) / 127.5 - 1, u ~ U[0, 1); bits/dim = (-log p(x) + D ln 127.5) / (D ln 2) (ODE); the bound is on the 8-bit probability itself (discretized decoder)',
      seconds,
      ...(r.vlb ? { vlb: { bitsPerDim: r.vlb.bitsPerDim, nats: r.vlb.nats, terms: r.vlb.terms, T: r.vlb.T, variance: r.vlb.variance, clip: r.vlb.clip, seconds: times.vlb ?? null } } : {}),
      ...(r.ode
        ? {
            ode: {
              bitsPerDim: r.ode.bitsPerDim,
              nats: r.ode.nats,
              traceStderr: r.ode.traceStderr ?? null,
              trace: r.ode.trace,
              probes: r.ode.probes,
              steps: r.ode.steps,
              sigmaMin: r.ode.sigmaMin,
              sigmaMax: r.ode.sigmaMax,
              seconds: times.ode ?? null,
            },
          }
        : {}),
    };
    writeFileAtomic(json, JSON.stringify(report, null, 1) + '\n');
    const head = ['method', 'bits/dim', 'nats/image', 'how'];
    const body = rows.map(([m, e, how]) => [m, formatMetric(e.bitsPerDim), formatMetric(e.nats, 6), how]);
    process.stdout.write(`\n${formatColumns(head, body)}\n\n${n} images, ${formatSeconds(seconds)}; +- is the standard error over images\nwrote ${json}\n`);
  } finally {
    x?.dispose();
    net.dispose();
  }
  return 0;
}
