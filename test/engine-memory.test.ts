// Memory: scopes free what they should, keep what they should, and a long
// training-like loop leaves the live tensor and byte counts exactly flat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { dispose, F, Generator, grad, keep, memory, noGrad, tensor, Tensor, tidy, zeros } from '../src/engine';

test('tidy frees intermediates and keeps the result (nested in arrays and objects)', () => {
  const before = memory().tensors;
  const out = tidy(() => {
    const a = zeros([4]);
    const b = a.add(1).mul(3);
    return { sum: b.sum(), parts: [b.exp(), 7] };
  });
  assert.equal(memory().tensors, before + 2);
  assert.equal(out.sum.item(), 12);
  dispose(out);
  assert.equal(memory().tensors, before);
});

test('nested tidy hands its result to the parent scope, which frees it', () => {
  const before = memory().tensors;
  let inner: Tensor | undefined;
  tidy(() => {
    inner = tidy(() => zeros([2]).add(1));
    assert.equal(inner.isDisposed, false);
  });
  assert.equal(inner!.isDisposed, true);
  assert.equal(memory().tensors, before);
});

test('keep() exempts a tensor from every scope', () => {
  const before = memory().tensors;
  let kept: Tensor | undefined;
  tidy(() => {
    kept = keep(zeros([3]).add(2));
  });
  assert.equal(kept!.isDisposed, false);
  assert.deepEqual(kept!.toArray(), [2, 2, 2]);
  kept!.dispose();
  assert.equal(memory().tensors, before);
});

test('a throwing tidy still frees everything it made', () => {
  const before = memory().tensors;
  assert.throws(
    () =>
      tidy(() => {
        zeros([8]).add(1);
        throw new Error('boom');
      }),
    /boom/,
  );
  assert.equal(memory().tensors, before);
});

test('tidy rejects async functions with a clear error', () => {
  assert.throws(() => tidy((async () => zeros([1])) as unknown as () => Tensor), /synchronous/);
});

test('views share storage: bytes are counted once', () => {
  const before = memory();
  const a = zeros([1000]);
  const v = a.view([10, 100]);
  const after = memory();
  assert.equal(after.tensors, before.tensors + 2);
  assert.equal(after.bytes - before.bytes, 4000);
  a.dispose();
  assert.equal(memory().bytes - before.bytes, 4000, 'the view keeps the storage alive');
  v.dispose();
  assert.deepEqual(memory(), before);
});

test('10,000 training-like steps leave live tensors and bytes flat', () => {
  const g = new Generator(0);
  const params = tidy(() => [g.randn([64, 2]).mul(0.5), zeros([64]), g.randn([64, 64]).mul(0.1), zeros([64]), g.randn([2, 64]).mul(0.1), zeros([2])]);
  params.forEach((p) => p.requiresGrad_());
  const x = g.randn([128, 2]);
  const y = g.randn([128, 2]);
  const step = () =>
    tidy(() => {
      let h = F.linear(x, params[0], params[1]).silu();
      h = F.linear(h, params[2], params[3]).silu();
      const loss = F.mseLoss(F.linear(h, params[4], params[5]), y);
      const grads = grad(loss, params);
      noGrad(() => params.forEach((p, i) => p.add_(grads[i]!, -1e-3)));
      return loss.item();
    });
  for (let i = 0; i < 100; i++) step(); // warm-up: caches, allocator
  const before = memory();
  const rss0 = process.memoryUsage().rss;
  let first = 0;
  let last = 0;
  for (let i = 0; i < 10_000; i++) {
    last = step();
    if (i === 0) first = last;
  }
  const after = memory();
  assert.equal(after.tensors, before.tensors, 'live tensors');
  assert.equal(after.bytes, before.bytes, 'live bytes');
  assert.ok(last < first, `the loop trains (loss ${first} -> ${last})`);
  const grew = (process.memoryUsage().rss - rss0) / 2 ** 20;
  assert.ok(grew < 64, `resident memory grew by ${grew.toFixed(1)} MiB`);
  dispose([...params, x, y]);
});

test('tensors nobody frees are released by the garbage collector (the backstop)', async () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
  };
  await settle(); // collect what earlier tests left to the GC
  const before = memory().tensors;
  (() => {
    for (let i = 0; i < 200; i++) tensor([i]).add(1); // never disposed, no scope
  })();
  assert.ok(memory().tensors >= before + 200);
  await settle();
  assert.equal(memory().tensors, before);
});

test('tensors freed by their scope are never reported to V8; tensors left to the GC are', async () => {
  await new Promise((r) => setImmediate(r)); // earlier tests' unscoped tensors are registered
  const before = memory().gcBytes;
  const out = tidy(() => {
    const a = zeros([256, 1024]); // 1 MiB
    const b = a.add(1);
    assert.equal(memory().gcBytes, before, 'tensors in a scope are not reported');
    return b;
  });
  await new Promise((r) => setImmediate(r)); // the escaped tensor is handed to the GC backstop
  assert.equal(memory().gcBytes, before + 2 ** 20, 'the tensor returned from the outermost tidy is reported');
  const view = out.reshape([-1]); // same storage: not reported twice
  await new Promise((r) => setImmediate(r));
  assert.equal(memory().gcBytes, before + 2 ** 20);
  out.dispose();
  view.dispose();
  assert.equal(memory().gcBytes, before, 'freeing the storage takes its bytes back');
});

test('memory pressure alone makes V8 collect unscoped tensors (no gc() call)', async () => {
  const base = memory().hostBytes;
  let peak = 0;
  for (let i = 0; i < 100; i++) {
    zeros([4, 1024, 1024]).add(1); // 2 x 16 MiB, never disposed: 3.2 GB in all
    await new Promise((r) => setImmediate(r));
    peak = Math.max(peak, memory().hostBytes - base);
  }
  assert.ok(peak < 2 ** 30, `live host memory peaked at ${(peak / 2 ** 20).toFixed(0)} MiB`);
});
