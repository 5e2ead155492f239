#!/usr/bin/env bash
# Quality against EMA length (EDM2 Fig. 5 in miniature): reconstructs the post-hoc EMA of each
# sigma_rel from a run trained with --ema phema (diffuse phema), measures each with diffuse
# eval (the same flags and seeds for all), and writes a Markdown table and a plot of every
# metric against sigma_rel.
#
#   scripts/phema-sweep.sh RUN STDS [diffuse eval flags ...]
#   scripts/phema-sweep.sh runs/p 0.02,0.04,0.06,0.08,0.10,0.12,0.15,0.20 --n 1000 --sampler dpmpp-2m --steps 20
#
# Output in RUN/posthoc/: ema-<std>-<step>/ (the checkpoints, each with its eval/ report),
# sweep.md (the table) and sweep-<metric>.png. Needs the compiled CLI (npm run build:ts).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
RUN=$1
STDS=$2
shift 2
HERE=$(cd "$(dirname "$0")/.." && pwd)
DIFFUSE="node $HERE/dist/src/cli/main.js"
OUT="$RUN/posthoc"

$DIFFUSE phema "$RUN" --std "$STDS" --out "$OUT" | tee "$OUT.log"
# The folders diffuse phema printed, one per std, in the order given.
mapfile -t DIRS < <(awk '{print $3}' "$OUT.log")
rm -f "$OUT.log"
for d in "${DIRS[@]}"; do
  echo "== diffuse eval $d $*"
  rm -rf "$d/eval"
  $DIFFUSE eval "$d" --out "$d/eval" "$@"
done

node - "$HERE" "$OUT" "${DIRS[@]}" <<'EOF'
const fs = require('fs');
const path = require('path');
const [here, out, ...dirs] = process.argv.slice(2);
const { linePlotImage } = require(path.join(here, 'dist/src/util/plot.js'));
const { encodePNG } = require(path.join(here, 'dist/src/data/image-codec.js'));
const rows = dirs.map((d) => {
  const meta = JSON.parse(fs.readFileSync(path.join(d, 'checkpoint.json'), 'utf8'));
  const reports = fs.readdirSync(path.join(d, 'eval')).filter((f) => f.endsWith('.json'));
  if (reports.length !== 1) throw new Error(`${d}/eval: expected one report, found ${reports.length}`);
  const r = JSON.parse(fs.readFileSync(path.join(d, 'eval', reports[0]), 'utf8'));
  return { std: meta.exportedFrom.posthocEma.sigmaRel, step: meta.step, snapshots: meta.exportedFrom.posthocEma.snapshots, r };
});
const metrics = Object.keys(rows[0].r.metrics);
const fmt = (m) => (m ? m.value.toPrecision(4) + (m.stderr !== undefined ? ` +- ${m.stderr.toPrecision(2)}` : '') : '-');
const r0 = rows[0].r;
const lines = [
  `Post-hoc EMA of ${path.dirname(out)} at step ${rows[0].step} (${rows[0].snapshots} snapshots); ${r0.n} samples, ${r0.sampler} on the ${r0.grid} grid, ${r0.steps} steps (NFE ${r0.nfe}), seed ${r0.seed}${r0.guidance !== null ? `, ${r0.guidanceType} guidance ${r0.guidance}` : ''}.`,
  '',
  `| sigma_rel | ${metrics.join(' | ')} |`,
  `| --- | ${metrics.map(() => '---').join(' | ')} |`,
  ...rows.map(({ std, r }) => `| ${std} | ${metrics.map((m) => fmt(r.metrics[m])).join(' | ')} |`),
];
fs.writeFileSync(path.join(out, 'sweep.md'), lines.join('\n') + '\n');
console.log('\n' + lines.join('\n'));
for (const m of metrics.filter((m) => m !== 'kid' && m !== 'accuracy')) {
  const img = linePlotImage([{ name: m, points: rows.map(({ std, r }) => [std, r.metrics[m].value]) }], { title: `${m} against EMA length`, xLabel: 'sigma_rel' });
  fs.writeFileSync(path.join(out, `sweep-${m}.png`), encodePNG(img));
}
console.log(`\nwrote ${path.join(out, 'sweep.md')} and sweep-<metric>.png`);
EOF
