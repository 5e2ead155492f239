// One rank of the collectives test (test/distributed.test.ts starts two, with torchrun's
// environment). Without WORLD_SIZE (as when the test runner loads every file in dist/test)
// it does nothing. Prints one JSON line of results on stdout.
import { tensor, Tensor, tidy } from '../src/engine';
import { DataParallel, DistributedError, ProcessGroup, rendezvousFromEnv } from '../src/distributed';

const rv = rendezvousFromEnv();
if (rv) {
  const pg = ProcessGroup.init(rv);
  const r = pg.rank;
  const values = (t: Tensor) => Array.from(t.toFloat64Array());
  const out: Record<string, unknown> = tidy(() => {
    const sum = tensor([r + 1, 10 * (r + 1)]);
    pg.allReduce([sum]);
    const avg = tensor([r + 1, 10 * (r + 1)], { dtype: 'float64' });
    pg.allReduce([avg], { op: 'avg' });
    const b = tensor([r, r, r]);
    pg.broadcast([b], 1);
    const gathered = pg.allGather(tensor([r, 2 * r + 5], { dtype: 'int64' })).map(values);
    // Gradients of w . c_r with c_r = (r + 1) [1, 2, 3, 4]: the average over 2 ranks is 1.5 [1, 2, 3, 4];
    // 8-byte buckets put each gradient of 2 floats in its own bucket.
    const w1 = tensor([1, 1]).requiresGrad_();
    const w2 = tensor([1, 1]).requiresGrad_();
    w1.mul(tensor([1, 2]).mul(r + 1))
      .sum()
      .add(w2.mul(tensor([3, 4]).mul(r + 1)).sum())
      .backward();
    const buckets = pg.allReduceGradients([w1, w2], 8);
    pg.barrier();
    return { sum: values(sum), avg: values(avg), broadcast: values(b), gathered, grads: [values(w1.grad!), values(w2.grad!)], buckets };
  });
  // Rank 1 builds another model: both ranks refuse to start, naming what differs.
  const dp = new DataParallel(pg);
  try {
    tidy(() => dp.syncStart({ w: tensor(r === 0 ? [1, 2, 3] : [1, 2]) }, 0));
    out.mismatch = null;
  } catch (e) {
    out.mismatch = (e as Error).message;
  }
  pg.destroy();
  try {
    pg.barrier();
  } catch (e) {
    out.destroyed = e instanceof DistributedError ? e.message : String(e);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
