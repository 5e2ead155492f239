// Shared by test/nn-layers.test.ts and test/models.test.ts: the PyTorch fixture
// test/fixtures/nn.safetensors (written by scripts/fixtures/nn.py, see its docstring for the
// layout), and the comparison of a Diffuse module against one of its cases.
//
// Tolerance (float32, same libtorch on both sides, so differences are summation order):
//   max |actual - expected| <= 1e-4 * (1 + max |expected|), per tensor, outputs and gradients.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { grad, loadSafetensors, Tensor, tidy } from '../src/engine';
import { Module } from '../src/nn';

export const ROOT = path.resolve(__dirname, '../..');
export const PYTHON = '/usr/bin/python3';
export const NN_PY = path.join(ROOT, 'scripts/fixtures/nn.py');
export const FIXTURE = path.join(ROOT, 'test/fixtures/nn.safetensors');

export interface CaseSpec {
  kind: string;
  args?: unknown[];
  opts?: Record<string, unknown>;
  config?: Record<string, unknown>;
  inputs: string[];
}

export interface Fixture {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

let cached: Fixture | undefined;
/** The fixture, loaded once per process (its tensors are kept for the whole run). */
export function fixture(): Fixture {
  cached ??= loadSafetensors(FIXTURE);
  return cached;
}

export function spec(name: string): CaseSpec {
  const s = fixture().metadata[name];
  assert.ok(s, `fixture has no case ${name}: rerun /usr/bin/python3 scripts/fixtures/nn.py`);
  return JSON.parse(s) as CaseSpec;
}

/** The case's tensors under `<name>.<group>.`, with that prefix removed. */
export function group(name: string, g: string): Record<string, Tensor> {
  const pre = `${name}.${g}.`;
  return Object.fromEntries(
    Object.entries(fixture().tensors)
      .filter(([k]) => k.startsWith(pre))
      .map(([k, t]) => [k.slice(pre.length), t]),
  );
}

export const TOL = 1e-4;

/** max |a - e| <= TOL (1 + max |e|); the message names what differs and by how much. */
export function assertClose(what: string, actual: Tensor, expected: Tensor): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape [${actual.shape}], PyTorch gives [${expected.shape}]`);
  const a = actual.toFloat64Array();
  const e = expected.toFloat64Array();
  let err = 0;
  let scale = 0;
  for (let i = 0; i < e.length; i++) {
    err = Math.max(err, Math.abs(a[i] - e[i]));
    scale = Math.max(scale, Math.abs(e[i]));
  }
  assert.ok(!Number.isNaN(err) && err <= TOL * (1 + scale), `${what}: max abs error ${err.toExponential(3)} > ${TOL} * (1 + ${scale.toPrecision(4)})`);
}

type Forward = Module & { forward(...xs: Tensor[]): Tensor };

/**
 * Loads the case's weights into `m` (strict), runs it on the case's inputs, and compares
 * the output and the gradients of (out * r).sum() w.r.t. every float input and parameter.
 */
export function checkCase(name: string, m: Forward): void {
  const s = spec(name);
  m.loadStateDict(group(name, 'state'), { strict: true });
  m.eval();
  tidy(() => {
    const given = group(name, 'input');
    const xs = s.inputs.map((k) => {
      const t = given[k];
      assert.ok(t, `${name}: input ${k} missing from the fixture`);
      return t.dtype.startsWith('float') ? t.detach().requiresGrad_() : t;
    });
    const out = m.forward(...xs);
    assertClose(`${name} output`, out, fixture().tensors[`${name}.output`]);
    const floatInputs = s.inputs.map((k, i) => [k, xs[i]] as const).filter(([, t]) => t.requiresGrad);
    const params = m.namedParameters();
    const gs = grad(out.mul(fixture().tensors[`${name}.r`]).sum(), [...floatInputs.map(([, t]) => t), ...params.map(([, p]) => p)], { allowUnused: true });
    const want = { input: group(name, 'grad.input'), state: group(name, 'grad.state') };
    assert.deepEqual(Object.keys(want.state).sort(), params.map(([k]) => k).sort(), `${name}: parameter names differ from PyTorch's`);
    floatInputs.forEach(([k, t], i) => assertClose(`${name} d/d${k}`, gs[i] ?? t.mul(0), want.input[k]));
    params.forEach(([k, p], i) => assertClose(`${name} d/d${k}`, gs[floatInputs.length + i] ?? p.mul(0), want.state[k]));
  });
}
