/**
 * The comparison plots of docs/BENCHMARKS.md from `diffuse eval` JSON reports: one series
 * per report file (a sampler's steps sweep, or a guidance method's scale sweep), one PNG
 * per metric.
 *
 * Run: node dist/bench/plot-eval.js --x nfe|strength --metric fd --out docs/img/nfe-fd.png REPORT.json ...
 *   --x nfe        x = denoiser evaluations (log axis): a steps sweep
 *   --x strength   x = guidance strength beyond the unguided model: w - 1 for cfg and auto,
 *                  s for classifier guidance (0 = no guidance for all three)
 *   --name-by      sampler (default for nfe) | guidanceType (default for strength)
 */
import * as fs from 'node:fs';
import { linePlotImage, Series } from '../src/util/plot';
import { writePNG } from '../src/util/image';

interface Row {
  sampler: string;
  nfe: number;
  n: number;
  space: string;
  guidance: number | null;
  guidanceType: string | null;
  metrics: Record<string, { value: number }>;
}

function main(argv: string[]): void {
  const opt = (name: string, dflt?: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0) {
      if (dflt === undefined) throw new Error(`plot-eval: --${name} is required`);
      return dflt;
    }
    const v = argv[i + 1];
    argv.splice(i, 2);
    return v;
  };
  const x = opt('x', 'nfe');
  if (x !== 'nfe' && x !== 'strength') throw new Error(`plot-eval: --x must be nfe or strength, got ${x}`);
  const metric = opt('metric', 'fd');
  const out = opt('out');
  const nameBy = opt('name-by', x === 'nfe' ? 'sampler' : 'guidanceType') as 'sampler' | 'guidanceType';
  const files = argv;
  if (files.length === 0) throw new Error('plot-eval: give the JSON reports to plot');
  let n = 0;
  let space = '';
  const series: Series[] = files.map((f) => {
    const raw = JSON.parse(fs.readFileSync(f, 'utf8')) as Row | Row[];
    const rows = Array.isArray(raw) ? raw : [raw];
    n = rows[0].n;
    space = rows[0].space;
    const xOf = (r: Row) => (x === 'nfe' ? r.nfe : r.guidanceType === 'classifier' ? r.guidance! : r.guidance! - 1);
    return { name: String(rows[0][nameBy]), points: rows.map((r) => [xOf(r), r.metrics[metric]?.value ?? NaN] as [number, number]) };
  });
  const xLabel = x === 'nfe' ? 'denoiser evaluations (NFE)' : 'guidance strength (w - 1; classifier: s)';
  writePNG(out, linePlotImage(series, { title: `${metric} (${space}, ${n} samples each)`, xLabel, logX: x === 'nfe', logY: metric === 'fd' && x === 'nfe' }));
  console.log(`wrote ${out}`);
}

main(process.argv.slice(2));
