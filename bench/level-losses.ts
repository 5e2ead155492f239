/**
 * The Matryoshka loss curves of docs/BENCHMARKS.md ("Emoji Matryoshka"): each nested run's
 * loss term at one resolution (recorded per step in its checkpoint, `state.levelLosses`) next to
 * a direct model's loss at that resolution, smoothed, against training compute (PFLOP: 3 x
 * forward x images seen, each network's own forward). Same objective and noise distribution at
 * that resolution (MDM's sigma_r = sigma r / r_0 is the direct model's --shift-base r_0 schedule),
 * so the curves are comparable.
 *
 * Run: node dist/bench/level-losses.js --resolution 64 --out docs/img/mdm-loss.png DIRECT_RUN NESTED_RUN ...
 */
import { networkFlops } from '../src/training/build';
import { decodeFloats, readCheckpointMeta } from '../src/training/checkpoint';
import { levelHistory } from '../src/training/trainer';
import { linePlotImage, movingAverage, Series } from '../src/util/plot';
import { writePNG } from '../src/util/image';

/** One run's curve: [PFLOP, smoothed loss] every `every` steps. */
function curve(dir: string, resolution: number, window: number): Series {
  const meta = readCheckpointMeta(dir);
  if (!meta.state) throw new Error(`level-losses: ${dir} has no loss history`);
  const spec = meta.network;
  if (spec.type !== 'nested' && spec.type !== 'unet') throw new Error(`level-losses: ${dir} is a ${spec.type} network (expected unet or nested)`);
  const flops = networkFlops(spec, meta.sampleShape)!;
  const losses = spec.type === 'nested' ? levelHistory(meta, resolution) : decodeFloats(meta.state.losses);
  const smooth = movingAverage(losses, window);
  const perStep = (3 * flops * meta.config.batchSize) / 1e15;
  const points = smooth.map((v, k) => [(k + 1) * perStep, v] as const).filter((_, k) => (k + 1) % 10 === 0);
  return { name: `${dir} (${spec.type === 'nested' ? `${resolution} px term` : 'loss'})`, points };
}

function main(argv: string[]): void {
  const opt = (name: string, dflt: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0) return dflt;
    const v = argv[i + 1];
    argv.splice(i, 2);
    return v;
  };
  const resolution = Number(opt('resolution', '64'));
  const window = Number(opt('window', '100'));
  const out = opt('out', 'level-losses.png');
  if (!argv.length) throw new Error('level-losses: give one or more run folders');
  const series = argv.map((d) => curve(d, resolution, window));
  writePNG(out, linePlotImage(series, { title: `loss at ${resolution} px (moving average of ${window} steps)`, xLabel: 'training PFLOP' }));
  process.stdout.write(`${out}\n`);
}

main(process.argv.slice(2));
