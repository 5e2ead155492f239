/**
 * Where the weights shipped in the repository live (models/NAME), resolved from the compiled
 * file's place in dist/src/<folder>/, so it works from any working directory.
 *
 * @example
 *   shippedDir('fashion-mnist');   // <repo>/models/fashion-mnist
 */
import * as path from 'node:path';

export function shippedDir(name: string): string {
  return path.resolve(__dirname, '..', '..', '..', 'models', name);
}
