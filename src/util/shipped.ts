/**
 * Where the weights shipped in the repository live (models/NAME), resolved from the compiled
 * file's place in dist/src/<folder>/, so it works from any working directory; and whether a
 * folder is one of them.
 *
 * @example
 *   shippedDir('fashion-mnist');   // <repo>/models/fashion-mnist
 */
import * as path from 'node:path';

export function shippedDir(name: string): string {
  return path.resolve(__dirname, '..', '..', '..', 'models', name);
}

/**
 * The name of the shipped model folder `dir` is in (models/NAME/...), or null when it is not
 * inside the package's models/ folder (read-only when installed: write nothing there).
 *
 * @example
 *   shippedName(shippedDir('fashion-mnist'));   // 'fashion-mnist'
 *   shippedName('runs/fashion-mnist');          // null
 */
export function shippedName(dir: string): string | null {
  const rel = path.relative(shippedDir(''), path.resolve(dir));
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return null;
  return rel.split(path.sep)[0];
}

/**
 * Where a model's evaluation reports go by default: next to a user's checkpoint
 * (CHECKPOINT/eval), but for a shipped model (models/NAME, read-only when installed) under
 * the working directory, runs/eval/NAME. `diffuse eval` and `diffuse eval --nll` both use it.
 *
 * @example
 *   defaultReportDir('runs/x');                     // 'runs/x/eval'
 *   defaultReportDir(shippedDir('fashion-mnist'));  // 'runs/eval/fashion-mnist'
 */
export function defaultReportDir(dir: string): string {
  const shipped = shippedName(dir);
  return shipped ? path.join('runs', 'eval', shipped) : path.join(dir, 'eval');
}
