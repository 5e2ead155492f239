// Shared by the distillation CLI tests: a stage resumed from a checkpoint written after 2 steps
// takes the same steps as an uninterrupted 4-step one, bit for bit (every phase's losses, every part's weights).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { DistillOptions, DistillTask, StageSetup } from '../src/distillation/task';
import { planStages } from '../src/distillation/run';

/** Runs stage 0 of `options` uninterrupted in ROOT/ra (checkpointed at its end) and interrupted + resumed in ROOT/rb; asserts they agree. */
export async function assertResumeBitExact(options: DistillOptions, teacher: string, root: string): Promise<void> {
  const setup = (out: string): StageSetup => ({ plan: planStages(options)[0], rounds: 1, options, teacherDir: teacher, out });
  const a = DistillTask.create(setup(path.join(root, 'ra')), { log: null });
  for (let i = 0; i < 4; i++) a.trainStep();
  a.checkpoint();
  const b = DistillTask.create(setup(path.join(root, 'rb')), { log: null });
  b.trainStep();
  b.trainStep();
  b.checkpoint();
  b.dispose();
  const c = DistillTask.create(setup(path.join(root, 'rb')), { log: null, resume: true });
  try {
    assert.equal(c.step, 2);
    const r = await c.run();
    assert.deepEqual(r.losses, a.losses);
    assert.ok(a.losses.every((l) => Number.isFinite(l) && l !== 0)); // ADD's generator loss (-E D(fake) + ...) may be negative
    assert.deepEqual(c.history, a.history, 'every phase (ADD: the discriminator too)');
    const w = (t: DistillTask) => t.parts.map((p) => Object.entries(p.module.stateDict()).map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')]));
    assert.deepEqual(w(c), w(a), 'every part: the student (and ADD: the discriminator heads)');
  } finally {
    a.dispose();
    c.dispose();
  }
}
