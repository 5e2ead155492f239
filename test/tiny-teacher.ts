// The tiny teacher the distillation tests start from: the default Fashion-MNIST task on a
// 2-level, 8-channel U-Net, 2 steps on 32 images (seconds on one core).
import * as path from 'node:path';
import { resolveTrainConfig } from '../src/training/config';
import { Trainer } from '../src/training/trainer';

/** The teacher's config overrides (also the students' tiny sampling and preview settings). */
export const TINY_TEACHER = {
  dataLimit: 32,
  batchSize: 4,
  steps: 2,
  warmupSteps: 1,
  model: { type: 'unet', modelChannels: 8, groups: 4, channelMult: [1, 2], attentionResolutions: [], midAttention: false, dropout: 0 },
  sampleEvery: 0,
  checkpointEvery: 0,
  sampleCount: 2,
  sampleSteps: 2,
};

/** Trains the tiny teacher into root/teacher (with `model` overriding U-Net fields, e.g. { dropout: 0.1 }) and returns that folder. */
export async function trainTinyTeacher(root: string, model: Record<string, unknown> = {}): Promise<string> {
  const out = path.join(root, 'teacher');
  const t = Trainer.create(resolveTrainConfig({ ...TINY_TEACHER, model: { ...TINY_TEACHER.model, ...model }, out }), { log: null });
  try {
    await t.run();
  } finally {
    t.dispose();
  }
  return out;
}
