// Distillation end to end on a tiny class-conditional U-Net teacher (a few training steps on a
// slice of Fashion-MNIST): `diffuse distill progressive` and `guided` write one student
// checkpoint per stage that `diffuse sample` loads with its own steps, sampler and grid; a
// stage resumed from a checkpoint takes the steps of an uninterrupted one bit for bit; the
// guidance convention and the w range are enforced; flags are checked. Also: the U-Net's w
// embedding is off by default (the shipped model's config resolves to the JSON it was saved
// with) and a student built with it starts as its teacher at every w.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { full, Generator, noGrad, setNumThreads, tidy } from '../src/engine';
import { readCheckpointMeta } from '../src/training/checkpoint';
import { Tensor } from '../src/engine/tensor';
import { resolveUNetConfig, UNet } from '../src/models/unet';
import { resolveDistillOptions } from '../src/distillation/run';
import { GUIDANCE_CONVENTION } from '../src/distillation/record';
import { runQuick } from './cli-run';
import { assertResumeBitExact } from './distill-resume';
import { trainTinyTeacher } from './tiny-teacher';

setNumThreads(1);

let root: string;
let teacher: string;
const shipped = path.join(__dirname, '..', '..', 'models', 'fashion-mnist');

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-distill-'));
  teacher = await trainTinyTeacher(root);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const SMALL = ['--batch-size', '2', '--checkpoint-every', '0', '--threads', '1'];

describe('diffuse distill progressive', () => {
  test('writes a student per round that diffuse sample runs at its own steps; errors name the flag', async () => {
    const out = path.join(root, 'pd');
    const r = await runQuick(root, 'distill', 'progressive', '--teacher', teacher, '--out', out, '--teacher-steps', '8', '--student-steps', '2', '--round-steps', '2', ...SMALL);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /student: .*steps-2/);
    for (const [name, steps, teacherSteps] of [
      ['steps-4', 4, 8],
      ['steps-2', 2, 4],
    ] as const) {
      const meta = readCheckpointMeta(path.join(out, name));
      assert.equal(meta.step, 2);
      assert.equal(meta.config.objective, 'v');
      assert.deepEqual(meta.distillation!.sampling, { sampler: 'ddim', grid: 'trailing', steps });
      assert.equal(meta.distillation!.teacher.steps, teacherSteps);
      assert.equal(meta.distillation!.guidance.convention, GUIDANCE_CONVENTION);
      assert.deepEqual(Object.keys(meta.files).sort(), ['model', 'optimizer']);
    }
    assert.equal(readCheckpointMeta(path.join(out, 'steps-2')).distillation!.teacher.checkpoint, path.join(out, 'steps-4'), "round 2's teacher is round 1's student");
    const s = await runQuick(root, 'sample', path.join(out, 'steps-2'), '-n', '3', '--out', path.join(root, 's.png'));
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /2 steps, seed 0, sampler ddim on the trailing grid, 2 denoiser evaluations/);
    const s8 = await runQuick(root, 'sample', path.join(out, 'steps-2'), '-n', '2', '--steps', '4', '--out', path.join(root, 's4.png'));
    assert.equal(s8.code, 0);
    assert.match(s8.err, /distilled for 2 steps of ddim on the trailing grid; --steps 4 samples it otherwise/);
    const ys = ['distill', 'yardstick', path.join(out, 'steps-4'), path.join(out, 'steps-2'), '--teacher', teacher, '--n', '8', '--reference-steps', '4'];
    const yOpts = ['--solvers', 'ddim:trailing', '--batch-size', '8', '--threads', '1', '--out', path.join(root, 'yd')];
    const y = await runQuick(root, ...ys, ...yOpts);
    assert.equal(y.code, 0, y.err);
    const yj = JSON.parse(fs.readFileSync(path.join(root, 'yd', 'yardstick.json'), 'utf8')) as {
      reference: { nfe: number };
      solvers: { nfe: number }[];
      students: { nfe: number; gap: number | null }[];
    };
    assert.equal(yj.reference.nfe, 4);
    assert.deepEqual(
      yj.solvers.map((r) => r.nfe),
      [4, 2],
    );
    assert.deepEqual(
      yj.students.map((r) => r.nfe),
      [4, 2],
    );
    assert.ok(fs.existsSync(path.join(root, 'yd', 'nfe-fd.png')));
    assert.doesNotMatch(y.out, /reusing/);
    const y2 = await runQuick(root, ...ys.slice(0, 3), ...ys.slice(4), ...yOpts); // steps-4 only: every row measured before
    assert.equal(y2.code, 0, y2.err);
    assert.equal(y2.out.match(/^reusing /gm)?.length, 3, y2.out); // the reference, the student and the solver at NFE 4
    const again = await runQuick(root, 'distill', 'progressive', '--teacher', teacher, '--out', out, '--teacher-steps', '8', '--student-steps', '2');
    assert.equal(again.code, 2);
    assert.match(again.err, /already holds a distillation run; continue it with --resume/);
    const bad = await runQuick(root, 'distill', 'progressive', '--teacher', teacher, '--out', path.join(root, 'x'), '--teacher-steps', '12', '--student-steps', '4');
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--teacher-steps 12 \/ --student-steps 4: the ratio must be a power of 2/);
    const p = await runQuick(root, 'distill', 'progressive', '--teacher', teacher, '--parameterization', 'eps');
    assert.equal(p.code, 2);
    assert.match(p.err, /--parameterization: expected 'v' or 'x0', got "eps"/);
  });

  test('a stage resumed from its checkpoint takes the steps of an uninterrupted one, bit for bit', async () => {
    const options = resolveDistillOptions({ method: 'progressive', teacher, out: path.join(root, 'r'), teacherSteps: 4, studentSteps: 2, roundSteps: 4, batchSize: 2, checkpointEvery: 0 });
    await assertResumeBitExact(options, teacher, root);
  });
});

describe('diffuse distill guided', () => {
  test('stage 1 and a round; the student samples at --guidance W in one evaluation per step, inside its range only', async () => {
    const out = path.join(root, 'gd');
    const r = await runQuick(
      root,
      'distill',
      'guided',
      '--teacher',
      teacher,
      '--out',
      out,
      '--teacher-steps',
      '4',
      '--student-steps',
      '2',
      '--guidance-steps',
      '2',
      '--round-steps',
      '2',
      '--guidance-range',
      '1,3',
      ...SMALL,
    );
    assert.equal(r.code, 0, r.err);
    const w = readCheckpointMeta(path.join(out, 'w-conditioned'));
    assert.equal(w.distillation!.stage, 'guidance');
    assert.deepEqual(w.distillation!.guidance.embedded, [1, 3]);
    assert.equal((w.network.config as { guidanceEmbedding?: boolean }).guidanceEmbedding, true);
    const student = path.join(out, 'steps-2');
    assert.deepEqual(readCheckpointMeta(student).distillation!.guidance.embedded, [1, 3]);
    const none = await runQuick(root, 'sample', student, '-n', '2', '--out', path.join(root, 'g.png'));
    assert.equal(none.code, 2);
    assert.match(none.err, /--guidance: this student embeds the guidance weight .*w in \[1, 3\].*give the scale with --guidance W/);
    const ok = await runQuick(root, 'sample', student, '-n', '2', '--guidance', '2', '--out', path.join(root, 'g.png'));
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /guidance-distilled w = 2 \(one evaluation\), 2 denoiser evaluations/);
    const far = await runQuick(root, 'sample', student, '-n', '2', '--guidance', '4', '--out', path.join(root, 'g.png'));
    assert.equal(far.code, 2);
    assert.match(far.err, /--guidance 4: 4 is outside the range this student was distilled for \(w in \[1, 3\]/);
  });

  test('a checkpoint that records another guidance convention is refused on load', () => {
    const src = path.join(root, 'gd', 'steps-2');
    const dst = path.join(root, 'other-convention');
    fs.cpSync(src, dst, { recursive: true });
    const file = path.join(dst, 'checkpoint.json');
    const j = JSON.parse(fs.readFileSync(file, 'utf8')) as { distillation: { guidance: { convention: string } } };
    j.distillation.guidance.convention = '(1 + w) D_c - w D_u, w = 0 conditional';
    fs.writeFileSync(file, JSON.stringify(j));
    assert.throws(() => readCheckpointMeta(dst), /convention.*w_diffuse = w_paper \+ 1/);
  });
});

describe('the U-Net guidance embedding', () => {
  test('off by default: the shipped model resolves to the config it was saved with, and the same weights are drawn', () => {
    const raw = (JSON.parse(fs.readFileSync(path.join(shipped, 'checkpoint.json'), 'utf8')) as { network: { config: object } }).network.config;
    assert.equal(JSON.stringify(resolveUNetConfig(raw)), JSON.stringify(raw));
    const a = new UNet(raw, { generator: new Generator(3) });
    const b = new UNet({ ...raw, guidanceEmbedding: false }, { generator: new Generator(3) });
    const sa = a.stateDict();
    const sb = b.stateDict();
    assert.deepEqual(Object.keys(sb), Object.keys(sa));
    for (const k of Object.keys(sa)) assert.ok(Buffer.from(sa[k].bytes()).equals(Buffer.from(sb[k].bytes())), k);
    a.dispose();
    b.dispose();
  });

  test('a student with it starts as its teacher at every w, and depends on w once the embedding is trained', () => {
    // A teacher with every weight random (the zero-initialized layers too, so the embedding reaches the output).
    const cfg = { inChannels: 1, imageSize: 16, modelChannels: 8, groups: 4, channelMult: [1, 2], attentionResolutions: [], midAttention: false, numResBlocks: 1, numClasses: 10 };
    const t = new UNet(cfg, { generator: new Generator(0) });
    const g = new Generator(5);
    noGrad(() => {
      for (const [, p] of t.namedParameters()) tidy(() => void p.copy_(g.randn(p.shape).mul(0.2)));
    });
    const s = new UNet({ ...cfg, guidanceEmbedding: true }, { generator: new Generator(0) });
    s.loadStateDict(t.stateDict(), { strict: false });
    const x = new Generator(1).randn([2, 1, 16, 16]);
    const c = full([2], 500);
    const labels = full([2], 3, { dtype: 'int64' });
    const diff = (a: () => Tensor, b: () => Tensor) => tidy(() => a().sub(b()).abs().max().item());
    const teacherOut = () => t.forward(x, c, labels);
    assert.equal(
      diff(teacherOut, () => s.forward(x, c, labels, full([2], 1))),
      0,
    );
    assert.equal(
      diff(teacherOut, () => s.forward(x, c, labels, full([2], 5))),
      0,
    );
    assert.ok(diff(teacherOut, () => t.forward(x, c, full([2], 4, { dtype: 'int64' }))) > 1e-3, 'the embedding reaches the output (the check above can fail)');
    assert.throws(() => s.forward(x, c, labels), /embeds the guidance weight/);
    assert.throws(() => t.forward(x, c, labels, full([2], 1)), /does not embed one/);
    noGrad(() => tidy(() => void s.map_guidance1!.weight.copy_(g.randn(s.map_guidance1!.weight.shape).mul(0.1))));
    assert.ok(
      diff(
        () => s.forward(x, c, labels, full([2], 1)),
        () => s.forward(x, c, labels, full([2], 5)),
      ) > 1e-4,
      'the output depends on w once the embedding is trained',
    );
    for (const v of [x, c, labels]) v.dispose();
    s.dispose();
    t.dispose();
  });
});
