// Every failure is a JS Error that names the op (and libtorch's reason) — never a crash.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cat, cuda, F, Generator, ones, tensor, Tensor, zeros } from '../src/engine';

const throwsWith = (fn: () => unknown, ...patterns: RegExp[]) => {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof Error, 'expected an Error');
  for (const p of patterns) assert.match(err.message, p);
};

test("shape mismatches name the op and carry libtorch's message", () => {
  throwsWith(() => zeros([2, 3]).add(zeros([4])), /^add: /, /size of tensor a \(3\) must match/);
  throwsWith(() => zeros([2, 3]).matmul(zeros([2, 3])), /^matmul: /, /cannot be multiplied/);
  throwsWith(() => zeros([6]).reshape([4, 2]), /^reshape: /, /invalid for input of size 6/);
  throwsWith(() => cat([zeros([2, 2]), zeros([3, 3])], 0), /^cat: /);
  throwsWith(() => zeros([2, 2]).select(0, 5), /^select: /, /out of range/);
});

test('bad dtypes and arguments are clear errors', () => {
  throwsWith(() => zeros([2], { dtype: 'float8' as never }), /dtype must be one of/, /float8/);
  throwsWith(() => zeros([2, -1]), /shape must be an array of non-negative integers/);
  throwsWith(() => tensor([[1, 2], [3]]), /ragged/);
  throwsWith(() => tensor([1, 2, 3], { shape: [2, 2] }), /do not fill shape/);
  throwsWith(
    () =>
      tensor([1, 2])
        .long()
        .add(tensor([true, false]))
        .requiresGrad_(),
    /only floating-point tensors can require grad/,
  );
  throwsWith(() => new Generator(-1), /seed must be a non-negative integer/);
  throwsWith(() => new Generator(0).randint(5, 5, [2]), /low < high/);
  throwsWith(() => F.conv2d(zeros([3, 8, 8]), zeros([4, 3, 3, 3])), /conv2d: input must be 4-D/);
  throwsWith(() => F.conv2d(zeros([1, 3, 8, 8]), zeros([4, 3, 3, 3]), { stride: -1 }), /stride must be a non-negative integer/);
  throwsWith(() => F.groupNorm(zeros([1, 6, 2, 2]), 4), /divisible by groups/);
  throwsWith(() => F.dropout(zeros([4]), 0.5), /pass a generator/);
  throwsWith(() => F.interpolate(zeros([1, 1, 4, 4]), { size: 8, mode: 'linear' as never }), /mode must be/);
  throwsWith(() => zeros([2, 2]).item(), /item\(\) needs a tensor with one element/);
  throwsWith(() => (zeros([2]) as unknown as { add(x: unknown): Tensor }).add('x'), /^add: /, /must be a number/);
});

test('autograd misuse is a clear error', () => {
  throwsWith(() => zeros([2]).sum().backward(), /does not require grad/);
  const x = ones([3]).requiresGrad_();
  throwsWith(() => x.mul(2).backward(), /^backward: /, /grad can be implicitly created only for scalar outputs/);
  const y = x.mul(x).sum();
  y.backward();
  throwsWith(() => y.backward(), /^backward: /, /backward through the graph a second time/);
});

test('using a disposed tensor is a clear error', () => {
  const t = zeros([2]);
  t.dispose();
  t.dispose(); // idempotent
  throwsWith(() => t.add(1), /^add: /, /has been disposed/);
  throwsWith(() => t.shape, /has been disposed/);
  throwsWith(() => cat([zeros([1]), t]), /^cat: /, /disposed/);
  assert.equal(String(t), 'Tensor(disposed)');
});

test('an unavailable device is an error, not a crash', { skip: cuda.isAvailable() ? 'CUDA is available here' : false }, () => {
  throwsWith(() => zeros([2], { device: 'cuda:0' }), /^zeros: /);
  throwsWith(() => zeros([2]).to({ device: 'cuda' }), /^to: /);
  throwsWith(() => zeros([2], { device: 'gpu' }), /^zeros: /, /device/i);
});
