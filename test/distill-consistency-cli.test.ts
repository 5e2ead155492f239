// Consistency models end to end on a tiny class-conditional U-Net teacher (a few training steps on
// a slice of Fashion-MNIST): `diffuse distill cd|ct|ict` write a student checkpoint whose record
// names the method and the consistency sampling; `diffuse sample` and `diffuse eval` run it with
// --sampler consistency at its boundary; the yardstick measures it at 1 and 2 steps; a CD stage
// (with its EMA target network) resumed from a checkpoint takes the steps of an uninterrupted one
// bit for bit; flags are checked.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { full, setNumThreads } from '../src/engine';
import { loadModel, readCheckpointMeta } from '../src/training/checkpoint';
import { resolveDistillOptions } from '../src/distillation/run';
import { runQuick } from './cli-run';
import { assertResumeBitExact } from './distill-resume';
import { trainTinyTeacher } from './tiny-teacher';

setNumThreads(1);

let root: string;
let teacher: string;

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-consistency-'));
  teacher = await trainTinyTeacher(root, { dropout: 0.1 });
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const SMALL = ['--batch-size', '2', '--checkpoint-every', '0', '--threads', '1', '--consistency-steps', '2'];

describe('diffuse distill cd|ct|ict', () => {
  test('cd writes a consistency student that sample, eval and the yardstick run with --sampler consistency; f(x, sigma_min) = x', async () => {
    const out = path.join(root, 'cd');
    const r = await runQuick(root, 'distill', 'cd', '--teacher', teacher, '--out', out, '--discretization', '6', '--solver', 'ddim', ...SMALL);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /student: .*cd/);
    const dir = path.join(out, 'cd');
    const meta = readCheckpointMeta(dir);
    const rec = meta.distillation!;
    assert.equal(meta.step, 2);
    assert.equal(rec.method, 'cd');
    assert.equal(rec.stage, 'consistency');
    assert.equal(rec.teacher.steps, 6);
    assert.deepEqual(rec.sampling, { sampler: 'consistency', grid: 'consistency', steps: 1 });
    const s = loadModel(dir);
    const smin = rec.consistency!.sigmaMin;
    assert.ok(Math.abs(smin - 0.01) < 1e-4, `the teacher's smallest sigma, got ${smin}`);
    const x = full([2, 1, 32, 32], 0.3);
    assert.equal(
      s
        .denoiser(x, full([2], smin, { dtype: 'float64' }))
        .sub(x)
        .abs()
        .max()
        .item(),
      0,
      'the loaded student is a consistency function',
    );
    s.net.dispose();
    assert.deepEqual(Object.keys(meta.files).sort(), ['model', 'optimizer', 'target']);

    const one = await runQuick(root, 'sample', dir, '-n', '3', '--out', path.join(root, 'c1.png'));
    assert.equal(one.code, 0, one.err);
    assert.match(one.out, /1 steps, seed 0, sampler consistency on the consistency grid, 1 denoiser evaluations/);
    const two = await runQuick(root, 'sample', dir, '-n', '2', '--steps', '2', '--out', path.join(root, 'c2.png'));
    assert.equal(two.code, 0, two.err);
    assert.match(two.out, /2 steps, .*sampler consistency on the consistency grid, 2 denoiser evaluations/);
    assert.match(two.err, /distilled for 1 steps of consistency on the consistency grid; --steps 2 samples it otherwise/);
    const bad = await runQuick(root, 'sample', dir, '-n', '2', '--sampler', 'ddim', '--sigma-min', '0.01', '--out', path.join(root, 'c3.png'));
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--sigma-min: sampler "ddim" takes no sigmaMin; the samplers with sigmaMin: consistency/);
    const ev = await runQuick(root, 'eval', dir, '--n', '8', '--steps', '1,2', '--threads', '1', '--out', path.join(root, 'ev.json'));
    assert.equal(ev.code, 0, ev.err);
    const ys = ['distill', 'yardstick', dir, '--teacher', teacher, '--n', '8', '--reference-steps', '4', '--student-steps', '1,2'];
    const y = await runQuick(root, ...ys, '--solvers', 'ddim:trailing', '--batch-size', '8', '--threads', '1', '--out', path.join(root, 'yd'));
    assert.equal(y.code, 0, y.err);
    const yj = JSON.parse(fs.readFileSync(path.join(root, 'yd', 'yardstick.json'), 'utf8')) as { students: { name: string; nfe: number }[]; solvers: { nfe: number }[] };
    assert.deepEqual(
      yj.students.map((r) => [path.basename(r.name), r.nfe]),
      [
        ['cd@1', 1],
        ['cd@2', 2],
      ],
    );
    assert.deepEqual(
      yj.solvers.map((r) => r.nfe),
      [1, 2],
    );
  });

  test('ct and ict run from the CLI; their records name the method; flags of other methods are refused', async () => {
    for (const method of ['ct', 'ict']) {
      const out = path.join(root, method);
      const r = await runQuick(root, 'distill', method, '--teacher', teacher, '--out', out, '--student-steps', '2', ...SMALL);
      assert.equal(r.code, 0, r.err);
      const meta = readCheckpointMeta(path.join(out, method));
      assert.equal(meta.distillation!.method, method);
      assert.equal(meta.distillation!.sampling.steps, 2);
      assert.equal(meta.distillation!.teacher.steps, null);
      assert.deepEqual(Object.keys(meta.files).sort(), method === 'ct' ? ['model', 'optimizer', 'target'] : ['model', 'optimizer'], 'ict has no EMA target');
    }
    const cases: [string[], RegExp][] = [
      [['ct', '--solver', 'heun'], /--solver is for cd \(not ct\)/],
      [['progressive', '--sigma-min', '0.1'], /--sigma-min is for cd, ct, ict \(not progressive\)/],
      [['cd', '--round-steps', '3'], /--round-steps is for progressive, guided \(not cd\)/],
      [['cd', '--solver', 'euler'], /--solver: expected 'heun' or 'ddim', got "euler"/],
      [['cd', '--parameterization', 'x0'], /parameterization.*expected v/],
      [['cd', '--sigma-min', '1e-4'], /sigmaMin.*must be within the teacher's sigmas/],
    ];
    for (const [args, re] of cases) {
      const r = await runQuick(root, 'distill', ...args, '--teacher', teacher, '--out', path.join(root, `bad-${args.join('')}`), '--batch-size', '2', '--threads', '1');
      assert.ok(r.code !== 0, args.join(' '));
      assert.match(r.err, re, args.join(' '));
    }
  });

  test('a cd stage resumed from its checkpoint takes the steps of an uninterrupted one, bit for bit (student and target)', async () => {
    const options = resolveDistillOptions({ method: 'cd', teacher, out: path.join(root, 'r'), consistencySteps: 4, discretization: 5, batchSize: 2, checkpointEvery: 0 });
    await assertResumeBitExact(options, teacher, root);
    const bytes = (dir: string) => fs.readFileSync(path.join(dir, readCheckpointMeta(dir).files.target!.file)).toString('base64');
    assert.equal(bytes(path.join(root, 'rb')), bytes(path.join(root, 'ra')), 'the target network too');
  });
});
