// `diffuse info`'s loss lines (src/cli/info.ts, lossLines): one unlabeled line for a one-phase run,
// one line per phase, labeled by its name, for a multi-phase run (a checkpoint older than
// state.phases calls its first phase 'first phase'). The CLI output on a dmd2 checkpoint is in
// test/distill-dmd-gan.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lossLines } from '../src/cli/info';
import { encodeFloats } from '../src/training/checkpoint';

const state = (extra: object) => ({ losses: encodeFloats([1, 2, 3]), generators: {}, loader: { step: 3 }, ema: { nimg: 0, updates: 0 }, trainSeconds: 1, ...extra });
const line = (mean: number, min: number, max: number, n: number) => `first 100 steps ${mean.toFixed(4)}, last 100 ${mean.toFixed(4)}, min ${min.toFixed(4)}, max ${max.toFixed(4)} (${n} steps)`;

test('one phase: one unlabeled line', () => {
  assert.deepEqual(lossLines(state({})), [[null, line(2, 1, 3, 3)]]);
  assert.deepEqual(lossLines(null), [[null, 'no history']]);
});

test('several phases: one line per phase, by name, in order', () => {
  const s = state({ phaseLosses: { 'fake score': encodeFloats([0.5, 0.25, 0.75]) }, phases: ['generator', 'fake score'] });
  assert.deepEqual(lossLines(s), [
    ['generator', line(2, 1, 3, 3)],
    ['fake score', line(0.5, 0.25, 0.75, 3)],
  ]);
  const older = state({ phaseLosses: { discriminator: encodeFloats([]) } });
  assert.deepEqual(lossLines(older), [
    ['first phase', line(2, 1, 3, 3)],
    ['discriminator', 'no history'],
  ]);
});
