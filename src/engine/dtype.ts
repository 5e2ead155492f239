/**
 * Element types of tensors, with the codes the native addon uses.
 *
 * @example
 *   zeros([2, 2], { dtype: 'bfloat16' }).dtype // 'bfloat16'
 */
export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'uint8' | 'bool' | 'int8' | 'int16';

/** Codes shared with native/addon.cc (kCodes): the index is the code. */
export const DTYPES: readonly DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'uint8', 'bool', 'int8', 'int16'];

const SIZES: Record<DType, number> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  uint8: 1,
  bool: 1,
  int8: 1,
  int16: 2,
};

/** Bytes per element. */
export function itemSize(d: DType): number {
  return SIZES[d];
}

/** True for the floating-point types (the ones autograd differentiates). */
export function isFloating(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}

export function dtypeCode(d: DType): number {
  const code = DTYPES.indexOf(d);
  if (code < 0) throw new TypeError(`dtype must be one of ${DTYPES.join(', ')}; got ${JSON.stringify(d)}`);
  return code;
}

export function dtypeFromCode(code: number): DType {
  const d = DTYPES[code];
  if (d === undefined) throw new Error(`unknown dtype code ${code}`);
  return d;
}
