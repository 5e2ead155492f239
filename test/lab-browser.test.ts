// The lab in a real browser: Debian's chromium driven by playwright-core (scripts/setup.sh installs
// both). The page opens, each of the five panels renders (canvas pixels drawn, images loaded),
// moving a control changes the picture, and a sampling job on the shipped Fashion-MNIST model
// runs to completion with its x0 estimates streamed. DIFFUSE_LAB_SCREENSHOTS=DIR also saves a
// screenshot of each panel there (docs/img/lab-*.png were made so). Fails (never skips), naming
// what to install, when /usr/bin/chromium or the page bundle (npm run build:lab) is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, Browser, Page } from 'playwright-core';
import { BUNDLE, Lab, startLab } from '../src/lab/server';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const FIXTURES = path.join(__dirname, '..', '..', 'test', 'fixtures', 'lab');
const SHOTS = process.env.DIFFUSE_LAB_SCREENSHOTS;
const missing = !fs.existsSync(CHROMIUM) ? `${CHROMIUM} is missing (apt-get install chromium)` : !fs.existsSync(BUNDLE) ? `${BUNDLE} is missing (npm run build:lab)` : null;

// The callbacks given to page.evaluate / waitForFunction run in the browser; the node build has no DOM
// types, so this is the little of the DOM they use.
interface El {
  textContent: string | null;
  complete: boolean;
  naturalWidth: number;
  options: { length: number };
  width: number;
  height: number;
  getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } };
}
declare const document: { getElementById(id: string): El; body: { dataset: Record<string, string | undefined> } };

let lab: Lab;
let cwd: string;
let browser: Browser;
let page: Page;

before(async () => {
  assert.equal(missing, null, missing ?? '');
  cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-lab-browser-'));
  fs.mkdirSync(path.join(cwd, 'runs', 'eval', 'fashion-mnist'), { recursive: true });
  for (const f of fs.readdirSync(FIXTURES)) fs.copyFileSync(path.join(FIXTURES, f), path.join(cwd, 'runs', 'eval', 'fashion-mnist', f)); // real diffuse eval reports (n = 200)
  lab = await startLab({ port: 0, cwd });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }); // CI runs as root
  page = await browser.newPage({ viewport: { width: 1150, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(lab.url);
  assert.deepEqual(errors, []);
});

after(async () => {
  await browser?.close();
  await lab?.close();
  if (cwd) fs.rmSync(cwd, { recursive: true, force: true });
});

/** A digest of a canvas's pixels (changes when the picture does), and whether anything is drawn. */
async function canvas(id: string): Promise<{ digest: string; inked: number }> {
  return page.evaluate((cid) => {
    const c = document.getElementById(cid);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 0;
    let inked = 0;
    for (let i = 0; i < d.length; i += 4) {
      h = (Math.imul(h, 31) + d[i] + 3 * d[i + 1] + 7 * d[i + 2] + 11 * d[i + 3]) | 0;
      if (d[i + 3] > 0) inked++;
    }
    return { digest: String(h), inked };
  }, id);
}

/** Waits until the panel's status line is empty (its requests answered) or names an error. */
async function settled(statusId: string): Promise<void> {
  await page.waitForFunction((id) => document.getElementById(id).textContent !== 'computing...', statusId, { timeout: 30_000 });
  assert.equal(await page.textContent(`#${statusId}`), '', `#${statusId}`);
}

async function shot(panel: string): Promise<void> {
  if (SHOTS) await page.locator(`#panel-${panel}`).screenshot({ path: path.join(SHOTS, `lab-${panel}.png`) });
}

const opts = { timeout: 90_000 };

test('forward process: the images and charts render; moving t changes the noisy image and the spectrum', opts, async () => {
  await settled('fw-status');
  await page.waitForFunction(() => document.getElementById('fw-noisy').complete && document.getElementById('fw-noisy').naturalWidth > 0);
  const before = { img: await page.getAttribute('#fw-noisy', 'src'), spec: await canvas('fw-spectrum') };
  assert.ok(before.spec.inked > 1000 && (await canvas('fw-snr')).inked > 1000);
  await page.fill('#fw-t', '900'); // a range input: fill sets its value and fires input
  await settled('fw-status');
  assert.notEqual(await page.getAttribute('#fw-noisy', 'src'), before.img);
  assert.notEqual((await canvas('fw-spectrum')).digest, before.spec.digest);
  await page.fill('#fw-t', '350');
  await settled('fw-status');
  await shot('forward');
});

test('2-D world: field, trajectories, posterior and likelihood render; sigma changes the field', opts, async () => {
  await settled('w2-status');
  for (const id of ['w2-field', 'w2-traj', 'w2-post', 'w2-like']) assert.ok((await canvas(id)).inked > 500, id);
  const field = await canvas('w2-field');
  await page.fill('#w2-sigma', '0.5');
  await settled('w2-status');
  assert.notEqual((await canvas('w2-field')).digest, field.digest);
  const traj = await canvas('w2-traj');
  await page.selectOption('#w2-den', 'learned');
  await settled('w2-status');
  assert.notEqual((await canvas('w2-traj')).digest, traj.digest);
  await page.fill('#w2-sigma', '-0.3');
  await settled('w2-status');
  await shot('world');
});

test('guidance: the fields and samples render; w changes them', opts, async () => {
  await settled('gd-status');
  const a = await canvas('gd-samples');
  assert.ok(a.inked > 500);
  await page.fill('#gd-w', '0.5');
  await settled('gd-status');
  assert.notEqual((await canvas('gd-samples')).digest, a.digest);
  await page.fill('#gd-w', '3');
  await settled('gd-status');
  await shot('guidance');
});

test('sampling: a job on the shipped Fashion-MNIST model streams x0 estimates and finishes', opts, async () => {
  await page.waitForFunction(() => document.getElementById('sm-model').options.length > 0);
  await page.selectOption('#sm-model', 'fashion-mnist');
  await page.fill('#sm-steps', '4');
  await page.fill('#sm-n', '10');
  await page.click('#sm-run');
  await page.waitForFunction(() => /^step /.test(document.getElementById('sm-caption').textContent ?? '') || document.body.dataset.lastJob !== undefined, null, { timeout: 60_000 });
  await page.waitForFunction(() => document.body.dataset.lastJob !== undefined, null, { timeout: 60_000 });
  assert.equal(await page.textContent('#sm-status'), 'done');
  assert.match((await page.textContent('#sm-caption')) ?? '', /4 denoiser evaluations per image/);
  assert.ok(await page.evaluate(() => document.getElementById('sm-x0').naturalWidth > 100));
  await shot('sample');
});

test('sampling: picking a distilled student sets the controls to its own sampling (the shipped 1-step student: ddim, 1 step)', opts, async () => {
  await page.selectOption('#sm-sampler', 'heun');
  await page.selectOption('#sm-model', 'fashion-mnist-pd1');
  assert.equal(await page.inputValue('#sm-sampler'), 'ddim');
  assert.equal(await page.inputValue('#sm-steps'), '1');
  assert.match((await page.textContent('#sm-model option[value="fashion-mnist-pd1"]')) ?? '', /progressive student/);
});

test('steps against quality: the report fixture is charted; switching the metric redraws it', opts, async () => {
  await page.waitForFunction(() => /measured settings/.test(document.getElementById('rp-status').textContent ?? ''));
  assert.match((await page.textContent('#rp-status')) ?? '', /^38 measured settings/); // 3 eval reports (12 settings) and a yardstick (reference, 16 solver rows, 9 student rows)
  const fd = await canvas('rp-chart');
  assert.ok(fd.inked > 500);
  await page.selectOption('#rp-metric', 'precision');
  assert.notEqual((await canvas('rp-chart')).digest, fd.digest);
  await page.selectOption('#rp-x', 'guidance');
  assert.match((await page.textContent('#rp-caption')) ?? '', /eval-fashion-mnist-cfg/);
  await page.selectOption('#rp-x', 'nfe');
  await page.selectOption('#rp-metric', 'fd');
  assert.match((await page.textContent('#rp-caption')) ?? '', /ddim.*dpmpp-2m|dpmpp-2m.*ddim/);
  await page.selectOption('#rp-x', 'lognfe');
  const caption = (await page.textContent('#rp-caption')) ?? '';
  for (const curve of ['teacher reference', 'teacher ddim trailing', 'student cd', 'student ict', 'student ct']) assert.ok(caption.includes(`yardstick-consistency: ${curve}`), caption); // a yardstick: one curve per solver and student group
  await shot('reports');
});
