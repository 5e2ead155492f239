/**
 * The lab page's behaviour (bundled by esbuild into dist/lab/lab.js): each panel reads its
 * controls, asks the server's API, and draws on canvas. No library, no network beyond the lab.
 */

export {}; // a module: its names do not collide with the DOM globals (window.status)

type Pt = number[];
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const val = (id: string) => $<HTMLInputElement>(id).value;

async function api<T>(url: string, init?: RequestInit): Promise<T> {
  const r = await fetch(url, init);
  const body = (await r.json()) as T & { error?: string };
  if (!r.ok) throw new Error(body.error ?? `HTTP ${r.status}`);
  return body;
}

function status(id: string, text: string): void {
  $(id).textContent = text;
}

/** Calls fn at most once per animation frame with the latest request, dropping stale answers. */
function latest(fn: () => Promise<void>, statusId: string): () => void {
  let token = 0;
  return () => {
    const mine = ++token;
    status(statusId, 'computing...');
    fn().then(
      () => mine === token && status(statusId, ''),
      (e: Error) => mine === token && status(statusId, `error: ${e.message}`),
    );
  };
}

// ---- canvas helpers ----------------------------------------------------------------

interface View {
  ctx: CanvasRenderingContext2D;
  x: (v: number) => number;
  y: (v: number) => number;
}

/** A cleared canvas with a data-to-pixel map over [x0, x1] x [y0, y1]. */
function view(id: string, [x0, x1]: number[], [y0, y1]: number[], pad = 24): View {
  const c = $<HTMLCanvasElement>(id);
  const ctx = c.getContext('2d')!;
  ctx.clearRect(0, 0, c.width, c.height);
  const sx = (c.width - 2 * pad) / (x1 - x0 || 1);
  const sy = (c.height - 2 * pad) / (y1 - y0 || 1);
  return { ctx, x: (v) => pad + (v - x0) * sx, y: (v) => c.height - pad - (v - y0) * sy };
}

function line(v: View, pts: Pt[], color: string, { dash = [] as number[], width = 1.5 } = {}): void {
  const { ctx } = v;
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.setLineDash(dash);
  ctx.beginPath();
  pts.forEach(([a, b], i) => (i ? ctx.lineTo(v.x(a), v.y(b)) : ctx.moveTo(v.x(a), v.y(b))));
  ctx.stroke();
  ctx.setLineDash([]);
}

function dots(v: View, pts: Pt[], color: string, r = 1.5): void {
  v.ctx.fillStyle = color;
  for (const [a, b] of pts) {
    v.ctx.beginPath();
    v.ctx.arc(v.x(a), v.y(b), r, 0, 2 * Math.PI);
    v.ctx.fill();
  }
}

function arrows(v: View, from: Pt[], d: Pt[], color: string, scale: number): void {
  const { ctx } = v;
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.2;
  from.forEach(([a, b], i) => {
    const [ex, ey] = [a + d[i][0] * scale, b + d[i][1] * scale];
    const [px, py, qx, qy] = [v.x(a), v.y(b), v.x(ex), v.y(ey)];
    const ang = Math.atan2(qy - py, qx - px);
    ctx.beginPath();
    ctx.moveTo(px, py);
    ctx.lineTo(qx, qy);
    ctx.lineTo(qx - 4 * Math.cos(ang - 0.5), qy - 4 * Math.sin(ang - 0.5));
    ctx.moveTo(qx, qy);
    ctx.lineTo(qx - 4 * Math.cos(ang + 0.5), qy - 4 * Math.sin(ang + 0.5));
    ctx.stroke();
  });
}

function axes(v: View, label: string): void {
  v.ctx.fillStyle = '#555';
  v.ctx.font = '11px DejaVu Sans, sans-serif';
  v.ctx.fillText(label, 4, 12);
}

/** A line chart of named series [[x, y], ...] with a shared box. */
function chart(id: string, series: { pts: Pt[]; color: string; dash?: number[]; dots?: boolean; name?: string }[], label: string, marker?: number): void {
  const all = series.flatMap((s) => s.pts).filter((p) => Number.isFinite(p[1]));
  if (all.length === 0) return void view(id, [0, 1], [0, 1]);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const v = view(id, [Math.min(...xs), Math.max(...xs)], [Math.min(...ys), Math.max(...ys)]);
  for (const s of series) {
    line(v, s.pts, s.color, { dash: s.dash });
    if (s.dots) dots(v, s.pts, s.color, 3);
  }
  if (marker !== undefined)
    line(
      v,
      [
        [marker, Math.min(...ys)],
        [marker, Math.max(...ys)],
      ],
      '#999',
      { dash: [3, 3], width: 1 },
    );
  series.forEach((s, i) => {
    if (!s.name) return;
    v.ctx.fillStyle = s.color;
    v.ctx.fillText(s.name, 30, 28 + 13 * i);
  });
  axes(v, `${label}  [${Math.min(...ys).toPrecision(3)}, ${Math.max(...ys).toPrecision(3)}]`);
}

// ---- 1. forward process ----------------------------------------------------------------

interface Forward {
  t: number;
  snr: number;
  sigma: number;
  clean: string;
  noisy: string;
  logSnr: Record<string, number[]>;
  spectrum: { signal: number[]; noise: number };
}

const forward = latest(async () => {
  const q = new URLSearchParams({ schedule: val('fw-schedule'), t: val('fw-t'), resolution: val('fw-res'), index: val('fw-index') });
  const f = await api<Forward>(`/api/forward?${q}`);
  $<HTMLImageElement>('fw-clean').src = f.clean;
  $<HTMLImageElement>('fw-noisy').src = f.noisy;
  $('fw-caption').textContent = `x_t at t = ${f.t}: SNR ${f.snr.toPrecision(3)}, sigma ${f.sigma.toPrecision(3)}`;
  const colors: Record<string, string> = { linear: '#1f77b4', cosine: '#2ca02c', shifted: '#d62728' };
  chart(
    'fw-snr',
    Object.entries(f.logSnr).map(([k, ys]) => ({ pts: ys.map((y, i) => [i * 10, Math.max(y, -20)]), color: colors[k] })),
    'log SNR vs t: linear (blue), cosine (green), shifted (red)',
    f.t,
  );
  const k = f.spectrum.signal.map((_, i) => i);
  chart(
    'fw-spectrum',
    [
      { pts: k.map((i) => [i, Math.log10(f.spectrum.signal[i] + 1e-8)]), color: '#1f77b4' },
      { pts: k.map((i) => [i, Math.log10(f.spectrum.noise + 1e-8)]), color: '#d62728', dash: [4, 3] },
    ],
    'log10 power vs frequency',
  );
}, 'fw-status');

// ---- 2. the 2-D world -------------------------------------------------------------------

const sigmaOf = (id: string) => Math.pow(10, Number(val(id))).toPrecision(3);
const BOX = [-3, 3];

interface Field {
  sigma: number;
  points: Pt[];
  exact: Pt[];
  learned: Pt[] | null;
  rmsError: number | null;
  data: Pt[];
}
interface Trajectories {
  samplers: Record<string, { paths: Pt[][]; x0: Pt[][] }>;
  data: Pt[];
}

const field = latest(async () => {
  const f = await api<Field>(`/api/field?sigma=${sigmaOf('w2-sigma')}&density=15`);
  const v = view('w2-field', BOX, BOX);
  dots(v, f.data, '#bbb', 1.2);
  const scale = 0.9; // D - x drawn at 90%: at small sigma it points onto the modes
  arrows(v, f.points, f.exact, '#000', scale);
  if (f.learned) arrows(v, f.points, f.learned, '#ff7f0e', scale);
  axes(v, `sigma = ${f.sigma.toPrecision(3)}, RMS(learned - exact) = ${f.rmsError?.toPrecision(3) ?? '-'}`);
}, 'w2-status');

const SAMPLER_COLORS: Record<string, [string, number[]]> = {
  euler: ['#1f77b4', []],
  heun: ['#2ca02c', []],
  'dpmpp-2m': ['#9467bd', []],
  'euler-ancestral': ['#d62728', [4, 3]],
  'dpmpp-2m-sde': ['#ff7f0e', [4, 3]],
  ddpm: ['#8c564b', [4, 3]],
};
let traj: Trajectories | null = null;
let frame = -1;

function drawTrajectories(upto: number): void {
  if (!traj) return;
  const v = view('w2-traj', BOX, BOX);
  dots(v, traj.data, '#ccc', 1.2);
  for (const [name, { paths, x0 }] of Object.entries(traj.samplers)) {
    const [color, dash] = SAMPLER_COLORS[name] ?? ['#000', []];
    const last = Math.min(upto, paths.length - 1);
    for (let j = 0; j < paths[0].length; j++)
      line(
        v,
        paths.slice(0, last + 1).map((p) => p[j]),
        color,
        { dash, width: 1 },
      );
    dots(v, paths[last], color, 2.5);
    if (last < x0.length) dots(v, x0[last], color, 1);
  }
  axes(v, `step ${Math.min(upto, traj.samplers.euler.paths.length - 1)}: ${Object.keys(traj.samplers).join(', ')}`);
}

const trajectories = latest(async () => {
  const q = new URLSearchParams({ steps: val('w2-steps'), seed: val('w2-seed'), denoiser: val('w2-den'), n: '12' });
  traj = await api<Trajectories>(`/api/trajectories?${q}`);
  drawTrajectories(Infinity);
}, 'w2-status');

function animate(): void {
  if (!traj) return;
  frame = 0;
  const n = traj.samplers.euler.paths.length;
  const tick = () => {
    drawTrajectories(frame);
    if (++frame < n) setTimeout(tick, 250);
  };
  tick();
}

interface Posterior {
  t: number;
  x0: Pt;
  xt: Pt;
  mean: Pt;
  c0: number;
  ct: number;
  sum: number;
  offLine: number;
}
const posterior = latest(async () => {
  const p = await api<Posterior>(`/api/posterior?t=${val('w2-t')}&seed=${val('w2-seed')}`);
  const pts = [p.x0, p.xt, p.mean];
  const span = (k: number) => [Math.min(...pts.map((q) => q[k])), Math.max(...pts.map((q) => q[k]))];
  const [[xa, xb], [ya, yb]] = [span(0), span(1)];
  const half = Math.max(xb - xa, yb - ya, 0.2) * 0.6; // a square box around the three points
  const v = view('w2-post', [(xa + xb) / 2 - half, (xa + xb) / 2 + half], [(ya + yb) / 2 - half, (ya + yb) / 2 + half]);
  line(v, [p.x0, p.xt], '#999', { dash: [4, 3] });
  dots(v, [p.x0], '#1f77b4', 4);
  dots(v, [p.xt], '#d62728', 4);
  dots(v, [p.mean], '#2ca02c', 4);
  const o = p.x0.map((a, i) => (p.c0 * a + p.ct * p.xt[i]) / p.sum); // the point on the line with the same weights
  line(v, [p.mean, o], '#2ca02c', { width: 1 });
  axes(v, `t=${p.t}: c1+c2 = ${p.sum.toFixed(4)}, off the line by ${p.offLine.toPrecision(3)}`);
  $('w2-post-caption').textContent = 'x0 (blue), x_t (red), posterior mean mu~ (green) vs the line x0 - x_t';
}, 'w2-status');

interface Likelihood {
  radii: number[];
  logLikelihood: number[];
  kl: number[];
  dataRadius: number;
}
const likelihood = latest(async () => {
  const l = await api<Likelihood>('/api/likelihood');
  chart(
    'w2-like',
    [
      { pts: l.radii.map((r, i) => [r, Math.max(l.logLikelihood[i], -20)]), color: '#1f77b4' },
      { pts: l.radii.map((r, i) => [r, Math.min(l.kl[i], 20)]), color: '#d62728' },
    ],
    'max likelihood = min KL at r = 1.414',
    l.dataRadius,
  );
}, 'w2-status');

// ---- 3. guidance -----------------------------------------------------------------------

interface Guidance {
  w: number;
  points: Pt[];
  cond: Pt[];
  uncond: Pt[];
  guided: Pt[];
  samples: Record<string, Pt[]>;
  means: Pt[];
  classes: number[];
}
const guidance = latest(async () => {
  const q = new URLSearchParams({ w: val('gd-w'), sigma: sigmaOf('gd-sigma'), cls: val('gd-cls') });
  const g = await api<Guidance>(`/api/guidance?${q}`);
  const v = view('gd-field', BOX, BOX);
  dots(
    v,
    g.means.filter((_, k) => g.classes[k] === Number(val('gd-cls'))),
    '#1f77b4',
    5,
  );
  dots(
    v,
    g.means.filter((_, k) => g.classes[k] !== Number(val('gd-cls'))),
    '#bbb',
    5,
  );
  arrows(v, g.points, g.uncond, '#aaa', 0.5);
  arrows(v, g.points, g.cond, '#1f77b4', 0.5);
  arrows(v, g.points, g.guided, '#d62728', 0.5);
  axes(v, `w = ${g.w}: D_u + w (D_c - D_u), arrows at half length`);
  const s = view('gd-samples', BOX, BOX);
  dots(s, g.means, '#ddd', 6);
  dots(s, g.samples.cfg, '#d62728', 2);
  dots(s, g.samples.classifier, '#2ca02c', 2);
  dots(s, g.samples.auto, '#9467bd', 2);
  axes(s, `128 samples each, w = ${g.w}`);
}, 'gd-status');

// ---- 4. sampling real models -------------------------------------------------------------

let running: string | null = null;

interface LabModel {
  name: string;
  sampling: { sampler: string; grid: string; steps: number } | null;
  method: string | null;
}
let models: LabModel[] = [];

async function loadModels(): Promise<void> {
  ({ models } = await api<{ models: LabModel[] }>('/api/models'));
  $('sm-model').innerHTML = models.map((m) => `<option value="${m.name.replace(/[<&"]/g, '')}">${m.name.replace(/[<&"]/g, '')}${m.method ? ` (${m.method} student)` : ''}</option>`).join('');
  applyStudentDefaults();
}

/** The picked model's distilled sampling (a student is trained for its sampler and steps): set the controls to it. */
function applyStudentDefaults(): void {
  const s = models.find((m) => m.name === val('sm-model'))?.sampling;
  if (!s) return;
  $<HTMLSelectElement>('sm-sampler').value = s.sampler;
  $<HTMLInputElement>('sm-steps').value = String(s.steps);
}

/** The grid to send: a student's own grid while its own sampler is picked; otherwise the server's default. */
function studentGrid(): string | undefined {
  const s = models.find((m) => m.name === val('sm-model'))?.sampling;
  return s && s.sampler === val('sm-sampler') ? s.grid : undefined;
}

async function sample(): Promise<void> {
  const body: Record<string, unknown> = { model: val('sm-model'), sampler: val('sm-sampler'), steps: Number(val('sm-steps')), n: Number(val('sm-n')), seed: Number(val('sm-seed')) };
  if (val('sm-class').trim() !== '') body.class = val('sm-class').trim() === 'none' ? 'none' : Number(val('sm-class'));
  if (val('sm-guidance').trim() !== '') body.guidance = Number(val('sm-guidance'));
  const grid = studentGrid();
  if (grid) body.grid = grid;
  const { id } = await api<{ id: string }>('/api/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  running = id;
  $<HTMLButtonElement>('sm-cancel').disabled = false;
  const events = new EventSource(`/api/jobs/${id}/events`);
  const finish = (text: string) => {
    events.close();
    running = null;
    $<HTMLButtonElement>('sm-cancel').disabled = true;
    status('sm-status', text);
    document.body.dataset.lastJob = text.split(':')[0];
  };
  events.addEventListener('queued', () => status('sm-status', 'queued'));
  events.addEventListener('progress', (e) => {
    const { data } = JSON.parse((e as MessageEvent<string>).data) as { data: { step: number; steps: number; sigma: number; x0: string } };
    $<HTMLImageElement>('sm-x0').src = data.x0;
    $('sm-caption').textContent = `step ${data.step} / ${data.steps}: Tweedie x0 estimate at sigma ${data.sigma.toPrecision(3)}`;
    status('sm-status', `step ${data.step} / ${data.steps}`);
  });
  events.addEventListener('done', (e) => {
    const { data } = JSON.parse((e as MessageEvent<string>).data) as { data: { image: string; nfe: number; seconds: number } };
    $<HTMLImageElement>('sm-x0').src = data.image;
    $('sm-caption').textContent = `samples: ${data.nfe} denoiser evaluations per image, ${data.seconds.toFixed(1)} s`;
    finish('done');
  });
  events.addEventListener('error', (e) => {
    const raw = (e as MessageEvent<string>).data;
    finish(raw ? `error: ${(JSON.parse(raw) as { message: string }).message}` : 'error: the event stream closed');
  });
  events.addEventListener('cancelled', () => finish('cancelled'));
}

// ---- 5. steps against quality ------------------------------------------------------------

interface Row {
  file: string;
  sampler: string;
  nfe: number | null;
  steps: number;
  guidance: number | null;
  metrics: Record<string, number>;
  /** A yardstick report's curve (teacher solver, student group, reference); eval reports: one curve per file. */
  series?: string;
}
let rows: Row[] = [];
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

function drawReports(): void {
  const metric = val('rp-metric');
  const by = val('rp-x');
  const groups = new Map<string, Pt[]>();
  const stepsIn = new Map<string, Set<number>>(); // a file sweeping the steps is charted against NFE, one sweeping w against w
  rows.forEach((r) => stepsIn.set(r.file, (stepsIn.get(r.file) ?? new Set()).add(r.steps)));
  for (const r of rows) {
    const log = by === 'lognfe'; // a yardstick spans NFE 1 to 1000 and FD 6 to 300: log-log reads it
    const nfe = stepsIn.get(r.file)!.size > 1 ? (r.nfe ?? r.steps) : null;
    const x = by === 'guidance' ? r.guidance : nfe === null ? null : log ? Math.log10(nfe) : nfe;
    const y = log && r.metrics[metric] !== undefined ? Math.log10(r.metrics[metric]) : r.metrics[metric];
    if (x === null || y === undefined || !Number.isFinite(y)) continue;
    const base = r.file
      .split('/')
      .slice(-2)
      .join('/')
      .replace(/\.json$/, '');
    const key = r.series ? `${base}: ${r.series}` : base.split('/').pop()!;
    groups.set(key, [...(groups.get(key) ?? []), [x, y]]);
  }
  const series = [...groups.entries()].map(([name, pts], i) => ({ pts: pts.sort((a, b) => a[0] - b[0]), color: PALETTE[i % PALETTE.length], dots: true, name }));
  chart('rp-chart', series, by === 'lognfe' ? `log10 ${metric} vs log10 NFE` : `${metric} vs ${by}`);
  $('rp-caption').textContent = groups.size ? `reports: ${[...groups.keys()].join('; ')}` : 'no reports with this metric';
}

async function loadReports(): Promise<void> {
  ({ reports: rows } = await api<{ reports: Row[] }>('/api/reports'));
  const metrics = [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))];
  $('rp-metric').innerHTML = metrics.map((m) => `<option>${m.replace(/[<&"]/g, '')}</option>`).join('');
  status('rp-status', `${rows.length} measured settings`);
  drawReports();
}

// ---- wiring --------------------------------------------------------------------------------

function on(ids: string[], fn: () => void): void {
  ids.forEach((id) => $(id).addEventListener('input', fn));
}

on(['fw-schedule', 'fw-t', 'fw-res', 'fw-index'], forward);
on(['w2-sigma'], field);
on(['w2-steps', 'w2-seed', 'w2-den'], trajectories);
on(['w2-t', 'w2-seed'], posterior);
on(['gd-w', 'gd-sigma', 'gd-cls'], guidance);
on(['rp-metric', 'rp-x'], drawReports);
$('w2-play').addEventListener('click', animate);
$('sm-run').addEventListener('click', () => void sample().catch((e: Error) => status('sm-status', `error: ${e.message}`)));
$('sm-cancel').addEventListener('click', () => {
  if (running) void fetch(`/api/jobs/${running}`, { method: 'DELETE' });
});

forward();
field();
trajectories();
posterior();
likelihood();
guidance();
loadModels().catch((e: Error) => status('sm-status', `error: ${e.message}`));
$('sm-model').addEventListener('change', applyStudentDefaults);
loadReports().catch((e: Error) => status('rp-status', `error: ${e.message}`));
