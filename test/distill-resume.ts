// Shared by the distillation CLI tests: a stage resumed from a checkpoint written after 2 steps
// takes the same steps as an uninterrupted 4-step one, bit for bit (every phase's losses, every part's weights).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Module } from '../src/nn/module';
import { DistillOptions, DistillTask, StageSetup } from '../src/distillation/task';
import { planStages } from '../src/distillation/run';

/** What the check needs of a stage's task (DistillTask, DmdTask). */
export interface ResumableStage {
  step: number;
  readonly losses: number[];
  readonly history: Record<string, number[]>;
  trainStep(): number;
  checkpoint(): unknown;
  run(): Promise<{ losses: number[] }>;
  dispose(): void;
}

/** Runs stage 0 of `options` uninterrupted in ROOT/ra (checkpointed at its end) and interrupted + resumed in ROOT/rb; asserts they agree (every phase's losses; the weights of nets(task), default its net). */
export async function assertResumeBitExact<T extends ResumableStage = DistillTask>(
  options: DistillOptions,
  teacher: string,
  root: string,
  {
    create = (s, run) => DistillTask.create(s, run) as unknown as T,
    nets = (t) => (t as unknown as DistillTask).parts.map((p) => p.module), // every trained part: the student, ADD's heads
  }: { create?: (s: StageSetup, run: { log: null; resume?: boolean }) => T; nets?: (t: T) => Module[] } = {},
): Promise<void> {
  const setup = (out: string): StageSetup => ({ plan: planStages(options)[0], rounds: 1, options, teacherDir: teacher, out });
  const a = create(setup(path.join(root, 'ra')), { log: null });
  for (let i = 0; i < 4; i++) a.trainStep();
  a.checkpoint();
  const b = create(setup(path.join(root, 'rb')), { log: null });
  b.trainStep();
  b.trainStep();
  b.checkpoint();
  b.dispose();
  const c = create(setup(path.join(root, 'rb')), { log: null, resume: true });
  try {
    assert.equal(c.step, 2);
    const r = await c.run();
    assert.deepEqual(r.losses, a.losses);
    assert.deepEqual(c.history, a.history, 'every phase (ADD: the discriminator too)');
    assert.ok(a.losses.every((l) => Number.isFinite(l))); // DMD's first loss is 0, ADD's generator hinge loss may be negative
    const w = (t: T) => nets(t).map((m) => Object.entries(m.stateDict()).map(([k, v]) => [k, Buffer.from(v.bytes()).toString('base64')]));
    assert.deepEqual(w(c), w(a), 'every part: the student (ADD: and the discriminator heads)');
  } finally {
    a.dispose();
    c.dispose();
  }
}
