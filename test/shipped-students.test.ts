// The shipped students of the shipped Fashion-MNIST model (issue 16): progressive students at 8,
// 4, 2 and 1 steps (models/fashion-mnist-pdN), a guided 4-step student (models/fashion-mnist-gd4) and
// a consistency-distilled student (models/fashion-mnist-cd, issue 17) and the one-step DMD and DMD2
// generators (models/fashion-mnist-dmd, -dmd2, issue 18).
// Each is an ordinary float16 checkpoint whose distillation record says how to sample it;
// `diffuse eval` samples it at its own steps and its samples are recognisable clothes, where the
// teacher's own DDIM at 1 step gives blurs (class accuracy 0.17 in docs/BENCHMARKS.md). Fails
// (never skips) when a model is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCheckpointMeta } from '../src/training/checkpoint';
import { ADAPTER_RECORD_KEY, DistillationRecord, GUIDANCE_CONVENTION } from '../src/distillation/record';
import { loraMetadata } from '../src/nn/lora';
import { runQuick } from './cli-run';
import { adapterAndControl, evalRows } from './shipped-eval';

const MODELS = path.resolve(__dirname, '../../models');
let root: string;
before(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-students-'))));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** `diffuse eval DIR` at the student's own sampling; the report's rows. */
const evalStudent = (dir: string, ...flags: string[]) => evalRows(root, dir, path.join(root, path.basename(dir) + flags.join('')), ...flags);

for (const n of [8, 4, 2, 1]) {
  test(`models/fashion-mnist-pd${n}: a ${n}-step progressive student that samples recognisable classes in ${n} evaluations`, async () => {
    const dir = path.join(MODELS, `fashion-mnist-pd${n}`);
    assert.ok(fs.existsSync(path.join(dir, 'checkpoint.json')), `the shipped student is missing: ${dir}`);
    const meta = readCheckpointMeta(dir);
    const rec = meta.distillation!;
    assert.equal(rec.method, 'progressive');
    assert.deepEqual(rec.sampling, { sampler: 'ddim', grid: 'trailing', steps: n });
    assert.equal(rec.guidance.convention, GUIDANCE_CONVENTION);
    assert.equal(meta.config.objective, 'v');
    const [row] = await evalStudent(dir);
    assert.deepEqual([row.sampler, row.grid, row.steps], ['ddim', 'trailing', n]);
    // Measured at n = 500: 0.81-0.82 for every student (docs/BENCHMARKS.md); the teacher's 1-step DDIM: 0.17.
    assert.ok(row.metrics.accuracy.value > 0.7, `class accuracy ${row.metrics.accuracy.value}`);
    if (n <= 2) {
      // What distillation buys: at the same NFE the teacher's own DDIM (same seeds, labels and n) is far worse
      // (at n = 100, 2 steps: FD 22.4 against 74.3, accuracy 0.78 against 0.66).
      const [teacher] = await evalStudent(path.join(MODELS, 'fashion-mnist'), '--sampler', 'ddim', '--grid', 'trailing', '--steps', String(n));
      assert.ok(row.metrics.fd.value < teacher.metrics.fd.value / 2, `FD: student ${row.metrics.fd.value}, teacher DDIM at ${n} steps ${teacher.metrics.fd.value}`);
      assert.ok(row.metrics.accuracy.value > teacher.metrics.accuracy.value + 0.05, `accuracy: student ${row.metrics.accuracy.value}, teacher ${teacher.metrics.accuracy.value}`);
    }
  });
}

test('models/fashion-mnist-gd4: a guided 4-step student that takes w as an input, one evaluation per step', async () => {
  const dir = path.join(MODELS, 'fashion-mnist-gd4');
  assert.ok(fs.existsSync(path.join(dir, 'checkpoint.json')), `the shipped student is missing: ${dir}`);
  const rec = readCheckpointMeta(dir).distillation!;
  assert.equal(rec.method, 'guided');
  assert.deepEqual(rec.sampling, { sampler: 'ddim', grid: 'trailing', steps: 4 });
  assert.deepEqual(rec.guidance, { convention: GUIDANCE_CONVENTION, teacherScale: null, embedded: [1, 5] });
  const [row] = await evalStudent(dir, '--guidance', '3');
  assert.deepEqual([row.steps, row.guidance], [4, 3]);
  // Measured at n = 500: 0.968 (docs/BENCHMARKS.md); the teacher's own CFG at 2 steps (4 evaluations): 0.948.
  assert.ok(row.metrics.accuracy.value > 0.85, `class accuracy at w = 3: ${row.metrics.accuracy.value}`);
  const r = await runQuick(root, 'sample', dir, '--guidance', '7', '--n', '1', '--threads', '1', '--out', path.join(root, 'x.png'));
  assert.equal(r.code, 2, 'a w outside the student range [1, 5] is a usage error');
  assert.match(r.err, /guidance/);
});

test('models/fashion-mnist-cd: a consistency student, 1 step by default and better with 2, far ahead of the teacher at 1 NFE', async () => {
  const dir = path.join(MODELS, 'fashion-mnist-cd');
  assert.ok(fs.existsSync(path.join(dir, 'checkpoint.json')), `the shipped student is missing: ${dir}`);
  const rec = readCheckpointMeta(dir).distillation!;
  assert.equal(rec.method, 'cd');
  assert.deepEqual(rec.sampling, { sampler: 'consistency', grid: 'consistency', steps: 1 });
  const rows = await evalStudent(dir, '--steps', '1,2');
  assert.deepEqual(
    rows.map((r) => [r.sampler, r.steps]),
    [
      ['consistency', 1],
      ['consistency', 2],
    ],
  );
  // Measured at n = 500: FD 21.4 / 17.3, accuracy 0.78 / 0.80; the teacher's best solver at 1 NFE: FD 279, accuracy 0.17.
  const [teacher] = await evalStudent(path.join(MODELS, 'fashion-mnist'), '--sampler', 'ddim', '--grid', 'trailing', '--steps', '1');
  assert.ok(rows[0].metrics.fd.value < teacher.metrics.fd.value / 5, `FD at 1 step: student ${rows[0].metrics.fd.value}, teacher ${teacher.metrics.fd.value}`);
  assert.ok(rows[0].metrics.accuracy.value > 0.6, `class accuracy at 1 step ${rows[0].metrics.accuracy.value}`);
  assert.ok(rows[1].metrics.fd.value < rows[0].metrics.fd.value, `multistep consistency sampling: FD at 2 steps ${rows[1].metrics.fd.value} against 1 step ${rows[0].metrics.fd.value}`);
});

for (const [name, method, fd] of [
  ['fashion-mnist-dmd', 'dmd', 22.0],
  ['fashion-mnist-dmd2', 'dmd2', 18.8],
] as const) {
  test(`models/${name}: a one-step ${method} generator (issue 18), far ahead of the teacher at 1 NFE`, async () => {
    const dir = path.join(MODELS, name);
    assert.ok(fs.existsSync(path.join(dir, 'checkpoint.json')), `the shipped student is missing: ${dir}`);
    const rec = readCheckpointMeta(dir).distillation!;
    assert.equal(rec.method, method);
    assert.deepEqual(rec.sampling, { sampler: 'ddim', grid: 'trailing', steps: 1 });
    const [row] = await evalStudent(dir);
    assert.deepEqual([row.sampler, row.steps], ['ddim', 1]);
    // Measured at n = 500 (docs/BENCHMARKS.md, "One step"): FD `fd`; the teacher's best solver at 1 NFE: FD 279, accuracy 0.17.
    const [teacher] = await evalStudent(path.join(MODELS, 'fashion-mnist'), '--sampler', 'ddim', '--grid', 'trailing', '--steps', '1');
    assert.ok(row.metrics.fd.value < teacher.metrics.fd.value / 5, `FD at 1 step: student ${row.metrics.fd.value} (${fd} at n = 500), teacher ${teacher.metrics.fd.value}`);
    assert.ok(row.metrics.accuracy.value > 0.7, `class accuracy at 1 step ${row.metrics.accuracy.value}`);
  });
}

test("models/fashion-mnist-lcm-lora: an LCM-LoRA adapter (float16, w = 3 baked in); merged into the base it samples better at 2 and 4 steps than the base's own consistency sampling", async () => {
  const adapter = path.join(MODELS, 'fashion-mnist-lcm-lora');
  assert.ok(fs.existsSync(path.join(adapter, 'adapter_model.safetensors')), `the shipped adapter is missing: ${adapter}`);
  const rec = JSON.parse(loraMetadata(adapter)[ADAPTER_RECORD_KEY]) as DistillationRecord;
  assert.equal(rec.method, 'lcm');
  assert.deepEqual(rec.guidance, { convention: GUIDANCE_CONVENTION, teacherScale: 3, embedded: null });
  assert.deepEqual(rec.sampling, { sampler: 'consistency', grid: 'consistency', steps: 4 });
  // The control: the adapter off, the base's conditional denoiser (w = 1) under the same consistency sampling.
  const [merged, control] = await adapterAndControl(root, path.join(MODELS, 'fashion-mnist'), adapter, ['--steps', '2,4']);
  assert.deepEqual(
    merged.map((r) => [r.sampler, r.steps]),
    [
      ['consistency', 2],
      ['consistency', 4],
    ],
  );
  // Measured at n = 500 (docs/BENCHMARKS.md, "LCM and LCM-LoRA"): FD 41.8 / 23.7 against the control's 53.9 / 32.0; at n = 100: 50.3 / 35.2 against 63.5 / 41.7.
  merged.forEach((m, i) =>
    assert.ok(m.metrics.fd.value < 0.92 * control[i].metrics.fd.value, `FD at ${m.steps} steps: with the adapter ${m.metrics.fd.value}, without ${control[i].metrics.fd.value}`),
  );
  assert.ok(merged[1].metrics.accuracy.value > 0.85, `class accuracy at 4 steps ${merged[1].metrics.accuracy.value}`);
});

test('models/fashion-mnist-lcm: a latent consistency model (w embedded, 4 steps by default) that beats the teacher under CFG at the same NFE', async () => {
  const dir = path.join(MODELS, 'fashion-mnist-lcm');
  assert.ok(fs.existsSync(path.join(dir, 'checkpoint.json')), `the shipped student is missing: ${dir}`);
  const rec = readCheckpointMeta(dir).distillation!;
  assert.equal(rec.method, 'lcm');
  assert.deepEqual(rec.sampling, { sampler: 'consistency', grid: 'consistency', steps: 4 });
  assert.deepEqual(rec.guidance, { convention: GUIDANCE_CONVENTION, teacherScale: null, embedded: [1, 5] });
  const student = await evalStudent(dir, '--guidance', '3', '--steps', '2,4');
  const teacher = await evalStudent(path.join(MODELS, 'fashion-mnist'), '--guidance', '3', '--sampler', 'ddim', '--grid', 'trailing', '--steps', '1,2'); // 2 and 4 evaluations
  // Measured at n = 500 (docs/BENCHMARKS.md, "LCM and LCM-LoRA"): FD 28.4 / 15.6 against the teacher's 245 / 22.6; at n = 100: 37.5 / 25.1 against 255 / 30.4.
  assert.ok(student[0].metrics.fd.value < teacher[0].metrics.fd.value / 4, `FD at 2 evaluations: student ${student[0].metrics.fd.value}, teacher ${teacher[0].metrics.fd.value}`);
  assert.ok(student[1].metrics.fd.value < teacher[1].metrics.fd.value, `FD at 4 evaluations: student ${student[1].metrics.fd.value}, teacher ${teacher[1].metrics.fd.value}`);
  assert.ok(student[1].metrics.accuracy.value > 0.8, `class accuracy at 4 steps ${student[1].metrics.accuracy.value}`);
  const r = await runQuick(root, 'sample', dir, '--guidance', '7', '--n', '1', '--threads', '1', '--out', path.join(root, 'lcm7.png'));
  assert.equal(r.code, 2, 'a w outside the student range [1, 5] is a usage error');
});
