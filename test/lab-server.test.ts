// The lab (src/lab/): the panels' numbers against known answers (the schedules' SNR, a spectrum
// by hand, the DDPM posterior coefficients of Eq. 7, maximum likelihood on the exact mixture,
// CFG's limits w = 0 and w = 1), request validation naming the parameter, models by name only
// (no path from a request), the job queue (one job per model, cancel, streamed progress), the
// reports found under runs/, and the CLI's refusal of a non-local host.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setNumThreads } from '../src/engine';
import { cosineAlphaBar, ddpmPosterior, discreteVP, linearBetas } from '../src/core/schedules';
import { forwardPanel, guidancePanel, likelihoodPanel, posteriorPanel, radialSpectrum, fieldPanel, trajectoriesPanel, panelSchedule } from '../src/lab/panels';
import { BadRequest, findModel, listModels, Params } from '../src/lab/validate';
import { reportRows } from '../src/lab/reports';
import { Lab, startLab } from '../src/lab/server';
import { isLoopback, labCommand } from '../src/cli/lab';
import { UsageError } from '../src/cli/args';
import { SAMPLERS } from '../src/sampling';

setNumThreads(1);

// The API's JSON answers, checked field by field by the assertions.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Answer = Record<string, any>;

const FIXTURE = path.join(__dirname, '..', '..', 'test', 'fixtures', 'lab', 'eval-fashion-mnist-dpmpp-2m.json');

describe('lab panels', () => {
  test('forward: x_t at the SNR of the schedule; the shifted cosine has (32 / res)^2 of its SNR', () => {
    const f = forwardPanel({ schedule: 'cosine', t: 500, index: 0, resolution: 128, seed: 0 });
    const s = panelSchedule('cosine');
    assert.equal(f.alphaBar, s.alphaBar[500]);
    assert.ok(Math.abs(f.alphaBar - cosineAlphaBar(501 / 1000) / cosineAlphaBar(0)) < 5e-3, `${f.alphaBar}`); // betas clipped at 0.999 only near T
    assert.ok(Math.abs(f.snr - f.alphaBar / (1 - f.alphaBar)) < 1e-12);
    const shifted = forwardPanel({ schedule: 'shifted', t: 500, index: 0, resolution: 128, seed: 0 });
    assert.ok(Math.abs(shifted.snr / f.snr - (32 / 128) ** 2) < 1e-9, `${shifted.snr / f.snr}`);
    assert.ok(Math.abs(f.logSnr.shifted[50] - f.logSnr.cosine[50] - 2 * Math.log(32 / 128)) < 1e-9);
    assert.match(f.noisy, /^data:image\/png;base64,/);
    assert.notEqual(f.noisy, f.clean);
    // the signal's spectrum is scaled by abar_t; the white noise floor is 1 - abar_t
    assert.ok(Math.abs(f.spectrum.signal[3] - f.spectrum.clean[3] * f.alphaBar) < 1e-12);
    assert.equal(f.spectrum.noise, 1 - f.alphaBar);
  });

  test('radialSpectrum: a constant has power only at k = 0 (N c^2); a cosine of frequency 4 only at k = 4', () => {
    const n = 16;
    const flat = radialSpectrum(new Float64Array(n * n).fill(0.5), n, n);
    assert.ok(Math.abs(flat[0] - n * n * 0.25) < 1e-9);
    assert.ok(flat.slice(1).every((v) => Math.abs(v) < 1e-9));
    const wave = new Float64Array(n * n).map((_, i) => Math.cos((2 * Math.PI * 4 * (i % n)) / n));
    const p = radialSpectrum(wave, n, n);
    const peak = p.indexOf(Math.max(...p));
    assert.equal(peak, 4);
    assert.ok(p.every((v, k) => k === 4 || v < 1e-9));
  });

  test('posterior: Eq. 7 coefficients, c1 + c2 < 1, and the gap 1 - c1 - c2 grows with t', () => {
    const s = discreteVP(linearBetas(1000));
    const t = 700;
    const p = posteriorPanel({ t, seed: 3 });
    const b = s.betas[t];
    const c0 = (Math.sqrt(s.alphaBar[t - 1]) * b) / (1 - s.alphaBar[t]);
    const ct = (Math.sqrt(1 - b) * (1 - s.alphaBar[t - 1])) / (1 - s.alphaBar[t]);
    assert.ok(Math.abs(p.c0 - c0) < 1e-15 && Math.abs(p.ct - ct) < 1e-15);
    assert.deepEqual([p.c0, p.ct], [ddpmPosterior(s, t).c0, ddpmPosterior(s, t).ct]);
    assert.ok(p.sum < 1 && p.offLine > 0);
    for (let i = 1; i < p.gapCurve.length; i++) assert.ok(p.gapCurve[i] > p.gapCurve[i - 1], `gap at ${i}`);
    p.mean.forEach((m, i) => assert.ok(Math.abs(m - (c0 * p.x0[i] + ct * p.xt[i])) < 1e-12));
  });

  test('likelihood: the mean exact log-likelihood peaks, and KL vanishes, at the data radius', () => {
    const l = likelihoodPanel();
    const best = l.logLikelihood.indexOf(Math.max(...l.logLikelihood));
    assert.ok(Math.abs(l.radii[best] - Math.SQRT2) <= 0.05, `argmax r = ${l.radii[best]}`);
    const klMin = Math.min(...l.kl);
    assert.ok(Math.abs(klMin) < 0.01, `min KL ${klMin}`);
    l.kl.forEach((k, i) => assert.ok(Math.abs(k + l.logLikelihood[i] - (l.kl[best] + l.logLikelihood[best])) < 1e-9)); // KL + E log p_r = E log p_data
  });

  test('guidance: CFG is the unconditional field at w = 0, the conditional at w = 1; at w = 3 samples land in the class', () => {
    const close = (a: number[][], b: number[][]) => a.every((p, i) => Math.hypot(p[0] - b[i][0], p[1] - b[i][1]) < 1e-5);
    const g0 = guidancePanel({ w: 0, sigma: 0.7, cls: 1, seed: 0 });
    assert.ok(close(g0.guided, g0.uncond));
    const g1 = guidancePanel({ w: 1, sigma: 0.7, cls: 1, seed: 0 });
    assert.ok(close(g1.guided, g1.cond));
    assert.ok(!close(g1.cond, g1.uncond));
    const g3 = guidancePanel({ w: 3, sigma: 0.7, cls: 1, seed: 0 });
    for (const m of ['cfg', 'classifier', 'auto']) {
      const inClass = g3.samples[m].filter(([x, y]) => {
        const d = g3.means.map(([mx, my]) => Math.hypot(x - mx, y - my));
        return g3.classes[d.indexOf(Math.min(...d))] === 1;
      }).length;
      assert.ok(inClass / g3.samples[m].length > 0.9, `${m}: ${inClass} of ${g3.samples[m].length} in class 1`);
    }
  });

  test('2-D world: the exact field is -x at large sigma; ODE trajectories of the exact denoiser end on the modes', () => {
    const f = fieldPanel({ sigma: 20, density: 5 }, null);
    f.points.forEach((p, i) => assert.ok(Math.hypot(f.exact[i][0] + p[0], f.exact[i][1] + p[1]) < 0.05 * (1 + Math.hypot(...p))));
    assert.equal(f.learned, null);
    const tr = trajectoriesPanel({ steps: 20, seed: 1, n: 8, denoiser: 'exact' }, null);
    assert.equal(tr.samplers.euler.paths.length, 21);
    assert.equal(tr.samplers.heun.x0.length, 20);
    const end = tr.samplers.heun.paths[20];
    const modes = Array.from({ length: 8 }, (_, k) => [Math.SQRT2 * Math.cos((Math.PI * k) / 4), Math.SQRT2 * Math.sin((Math.PI * k) / 4)]);
    end.forEach(([x, y]) => assert.ok(Math.min(...modes.map(([a, b]) => Math.hypot(x - a, y - b))) < 0.8, `${x}, ${y}`));
    assert.notDeepEqual(tr.samplers['euler-ancestral'].paths[20], tr.samplers.euler.paths[20]);
  });
});

describe('lab validation', () => {
  const q = (s: string) => new Params(new URLSearchParams(s));
  const bad = (fn: () => unknown, param: string, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof BadRequest && e.param === param && e.status === 400 && re.test(e.message));

  test('numbers, integers and choices name the parameter', () => {
    assert.equal(q('t=5').int('t', { min: 0, max: 9 }), 5);
    assert.equal(q('').int('t', { min: 0, max: 9, def: 2 }), 2);
    bad(() => q('t=NaN').int('t', { min: 0, max: 9 }), 't', /must be a number/);
    bad(() => q('t=1e400').number('t', { min: 0, max: 9 }), 't', /must be a number/);
    bad(() => q('t=10').int('t', { min: 0, max: 9 }), 't', /\[0, 9\]/);
    bad(() => q('t=1.5').int('t', { min: 0, max: 9 }), 't', /integer/);
    bad(() => q('t=1&t=2').int('t', { min: 0, max: 9 }), 't', /more than once/);
    bad(() => q('t=0x10').int('t', { min: 0, max: 99 }), 't', /must be a number/);
    bad(() => q('s=zig').choice('s', ['a', 'b']), 's', /one of a, b/);
    bad(() => new Params({ s: ['a'] }).choice('s', ['a', 'b']), 's', /one of/);
    assert.equal(new Params({ n: '3' }).int('n', { min: 0, max: 9 }), 3);
    bad(() => new Params({ n: true }).int('n', { min: 0, max: 9 }), 'n', /must be a number/);
  });

  test('models are found by name only: shipped and runs/NAME; paths are refused', () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-lab-models-'));
    try {
      fs.mkdirSync(path.join(cwd, 'runs', 'mine'), { recursive: true });
      fs.writeFileSync(path.join(cwd, 'runs', 'mine', 'checkpoint.json'), '{}');
      fs.mkdirSync(path.join(cwd, 'runs', 'empty'));
      const names = listModels(cwd).map((m) => m.name);
      assert.ok(names.includes('fashion-mnist') && names.includes('runs/mine') && !names.includes('runs/empty'), names.join());
      assert.equal(findModel(cwd, 'runs/mine').dir, path.join(cwd, 'runs', 'mine'));
      for (const evil of ['../models/fashion-mnist', '/etc', 'runs/../runs/mine', 'runs/mine/', '..', 'models/fashion-mnist'])
        assert.throws(
          () => findModel(cwd, evil),
          (e: unknown) => e instanceof BadRequest && e.param === 'model' && e.status === 404,
        );
      assert.throws(
        () => findModel(cwd, 7),
        (e: unknown) => e instanceof BadRequest && e.status === 400,
      );
    } finally {
      fs.rmSync(cwd, { recursive: true, force: true });
    }
  });

  test('eval reports: a sweep file becomes one row per setting; other JSON is ignored', () => {
    const rows = reportRows(JSON.parse(fs.readFileSync(FIXTURE, 'utf8')), 'x.json');
    assert.ok(rows.length >= 3);
    assert.ok(rows.every((r) => r.sampler === 'dpmpp-2m' && typeof r.metrics.fd === 'number' && r.nfe !== null));
    assert.deepEqual(reportRows({ hello: 1 }, 'y.json'), []);
    assert.deepEqual(reportRows([1, null, 'x'], 'z.json'), []);
  });

  test('yardstick reports: the reference, every teacher solver and every student become rows, one curve (series) each', () => {
    const y = JSON.parse(fs.readFileSync(path.join(path.dirname(FIXTURE), 'yardstick-consistency.json'), 'utf8'));
    const rows = reportRows(y, 'runs/cm/yardstick/yardstick.json');
    assert.equal(rows.length, 1 + y.solvers.length + y.students.length);
    assert.deepEqual(rows[0].series, 'teacher reference');
    assert.deepEqual([rows[0].nfe, rows[0].n, Math.round(rows[0].metrics.fd * 100) / 100], [1000, 500, 5.99]);
    const cd = rows.filter((r) => r.series === 'student cd');
    assert.deepEqual(
      cd.map((r) => [r.steps, r.nfe, r.sampler]),
      [
        [1, 1, 'consistency'],
        [2, 2, 'consistency'],
        [4, 4, 'consistency'],
      ],
    );
    assert.ok(rows.some((r) => r.series === 'teacher dpmpp-2m trailing' && r.nfe === 4));
  });

  test('diffuse lab refuses a non-loopback host without --allow-remote', async () => {
    assert.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost') && isLoopback('127.1.2.3'));
    assert.ok(!isLoopback('0.0.0.0') && !isLoopback('192.168.1.2') && !isLoopback('::'));
    await assert.rejects(labCommand(['--host', '0.0.0.0']), (e: unknown) => e instanceof UsageError && /--allow-remote/.test(e.message));
    await assert.rejects(labCommand(['--port', '70000']), UsageError);
  });
});

describe('lab server', () => {
  let lab: Lab;
  let cwd: string;
  before(async () => {
    cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-lab-server-'));
    fs.mkdirSync(path.join(cwd, 'runs', 'eval', 'fashion-mnist'), { recursive: true });
    fs.copyFileSync(FIXTURE, path.join(cwd, 'runs', 'eval', 'fashion-mnist', 'sweep.json'));
    lab = await startLab({ port: 0, cwd });
  });
  after(async () => {
    await lab.close();
    fs.rmSync(cwd, { recursive: true, force: true });
  });
  const get = async (p: string, init?: RequestInit) => {
    const r = await fetch(new URL(p, lab.url), init);
    return { status: r.status, body: (await r.json()) as Answer };
  };

  test('binds 127.0.0.1; the page and its API answer', async () => {
    assert.match(lab.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await fetch(lab.url);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /Steps against quality/);
    const offered = [.../<select id="sm-sampler">(.*?)<\/select>/.exec(html)![1].matchAll(/<option value="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(offered, Object.keys(SAMPLERS)); // the sampling panel offers the registry, consistency and lms included
    const { body } = await get('/api/models');
    assert.ok(body.models.some((m: { name: string }) => m.name === 'fashion-mnist'));
    const pd4 = body.models.find((m: { name: string }) => m.name === 'fashion-mnist-pd4');
    assert.deepEqual([pd4.method, pd4.sampling], ['progressive', { sampler: 'ddim', grid: 'trailing', steps: 4 }]); // a student's own sampling, which the panel applies
    assert.equal(body.models.find((m: { name: string }) => m.name === 'fashion-mnist').sampling, null);
    const reports = await get('/api/reports');
    assert.ok(reports.body.reports.some((r: { file: string }) => r.file === path.join('runs', 'eval', 'fashion-mnist', 'sweep.json')));
    const post = await get('/api/posterior?t=900');
    assert.equal(post.status, 200);
    assert.ok(post.body.sum < 1);
  });

  test('the learned MLP denoiser (trained once under runs/lab/) is close to the exact field', async () => {
    const f = await get('/api/field?sigma=1&density=9');
    assert.equal(f.status, 200);
    assert.equal(f.body.learned.length, 81);
    const scale = Math.sqrt(f.body.exact.reduce((a: number, [x, y]: number[]) => a + x * x + y * y, 0) / 81);
    assert.ok(f.body.rmsError < 0.25 * scale, `RMS error ${f.body.rmsError} vs field RMS ${scale}`);
    assert.ok(fs.existsSync(path.join(cwd, 'runs', 'lab', 'toy-8gaussians', 'checkpoint.json')));
  });

  test('bad requests: 4xx JSON naming the parameter', async () => {
    const cases: [string, RequestInit | undefined, number, string | null][] = [
      ['/api/forward?t=1000', undefined, 400, 't'],
      ['/api/forward?schedule=quadratic', undefined, 400, 'schedule'],
      ['/api/field?sigma=NaN', undefined, 400, 'sigma'],
      ['/api/guidance?w=-1', undefined, 400, 'w'],
      ['/api/jobs', { method: 'POST', body: '{"model":"../../etc"}' }, 404, 'model'],
      ['/api/jobs', { method: 'POST', body: '{"model":"fashion-mnist","steps":1e9}' }, 400, 'steps'],
      ['/api/jobs', { method: 'POST', body: '{"model":"fashion-mnist","sampler":"magic"}' }, 400, 'sampler'],
      ['/api/jobs', { method: 'POST', body: '{"model":"fashion-mnist","guidance":2,"guidanceType":"auto","guide":"/tmp"}' }, 404, 'guide'],
      ['/api/jobs', { method: 'POST', body: 'not json' }, 400, 'body'],
      ['/api/jobs', { method: 'POST', body: 'x'.repeat(70_000) }, 413, null],
      ['/api/jobs', { method: 'GET' }, 405, null],
      ['/api/jobs/99999', undefined, 404, 'id'],
      ['/api/nothing', undefined, 404, null],
    ];
    for (const [p, init, status, param] of cases) {
      const r = await get(p, init);
      assert.equal(r.status, status, `${p}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.param ?? null, param, p);
      assert.equal(typeof r.body.error, 'string');
    }
  });

  test('a sampling job streams its x0 estimates and finishes; jobs of one model queue; cancel stops one', async () => {
    const submit = (body: object) => get('/api/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const a = await submit({ model: 'fashion-mnist', sampler: 'euler', steps: 3, n: 2, seed: 1, class: 7 });
    const b = await submit({ model: 'fashion-mnist', sampler: 'euler', steps: 500, n: 2 });
    const c = await submit({ model: 'fashion-mnist', sampler: 'euler', steps: 500, n: 2 });
    assert.equal(a.status, 202);
    assert.equal((await get(`/api/jobs/${c.body.id}`)).body.state, 'queued');
    const text = await (await fetch(new URL(`/api/jobs/${a.body.id}/events`, lab.url))).text();
    const events = text
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => JSON.parse(l.slice(6)));
    const types = events.map((e) => e.type);
    assert.deepEqual(types.filter((t) => t === 'progress').length, 3, types.join());
    assert.equal(types[types.length - 1], 'done');
    assert.match(events.find((e) => e.type === 'progress').data.x0, /^data:image\/png;base64,/);
    assert.equal(events[events.length - 1].data.nfe, 3);
    const replay = await (await fetch(new URL(`/api/jobs/${a.body.id}/events`, lab.url))).text(); // a late subscriber sees the whole story
    assert.deepEqual(
      replay
        .split('\n')
        .filter((l) => l.startsWith('event: '))
        .map((l) => l.slice(7)),
      ['queued', 'started', 'progress', 'done'],
    );
    assert.equal((await get(`/api/jobs/${c.body.id}`, { method: 'DELETE' })).body.cancelled, true); // queued: dropped
    await new Promise((r) => setTimeout(r, 300));
    const del = await get(`/api/jobs/${b.body.id}`, { method: 'DELETE' }); // running: its worker is killed
    assert.equal(del.body.state, 'cancelled');
    const d = await submit({ model: 'fashion-mnist', sampler: 'euler', steps: 1, n: 1 }); // a fresh worker takes the next job
    const dText = await (await fetch(new URL(`/api/jobs/${d.body.id}/events`, lab.url))).text();
    assert.match(dText, /event: done/);
  });
});

test('diffuse lab prints its URL, serves, and stops on Ctrl-C with exit code 0', async () => {
  const { spawn } = await import('node:child_process');
  const cli = spawn(process.execPath, [path.join(__dirname, '..', 'src', 'cli', 'main.js'), 'lab', '--port', '0'], { cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    cli.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) resolve(m[1]);
    });
    cli.on('exit', (code) => reject(new Error(`diffuse lab exited with ${code}: ${out}`)));
  });
  const r = await fetch(new URL('/api/models', url));
  assert.equal(r.status, 200);
  const code = await new Promise<number | null>((resolve) => {
    cli.on('exit', (c) => resolve(c));
    cli.kill('SIGINT');
  });
  assert.equal(code, 0);
});
