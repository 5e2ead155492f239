/**
 * Diffuse's cache folder, for results that are slow to compute and cheap to keep (the
 * evaluation reference statistics). Everything in it can be deleted at any time.
 *
 * @example
 *   cacheDir();        // $DIFFUSE_CACHE_DIR, else $XDG_CACHE_HOME/diffuse, else ~/.cache/diffuse
 *   cacheDir('eval');  // .../eval
 */
import * as os from 'node:os';
import * as path from 'node:path';

/** The cache folder (not created here), or `sub` inside it. */
export function cacheDir(sub?: string): string {
  const root = process.env.DIFFUSE_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'diffuse');
  return sub ? path.join(root, sub) : root;
}
