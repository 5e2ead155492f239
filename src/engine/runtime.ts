/**
 * The engine's runtime: threads, devices, versions.
 *
 * On load the engine uses every available core (libtorch alone would use 1 here);
 * set DIFFUSE_NUM_THREADS or call setNumThreads to change that. BLAS is Debian's
 * OpenMP build of OpenBLAS (installed by setup), which shares libtorch's OpenMP
 * pool instead of fighting it for the cores.
 *
 * @example
 *   setNumThreads(1);
 *   cuda.isAvailable(); // false on a CPU-only libtorch
 */
import { native } from './native';

export function setNumThreads(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`setNumThreads: n must be a positive integer, got ${n}`);
  native.setNumThreads(n);
}

export function getNumThreads(): number {
  return native.getNumThreads();
}

export { defaultNumThreads } from './native';

export const cuda = {
  isAvailable: (): boolean => native.cudaIsAvailable(),
  deviceCount: (): number => native.cudaDeviceCount(),
};

/** libtorch's version, e.g. '1.13.0'. */
export function torchVersion(): string {
  return native.version();
}

/** libtorch's build configuration and parallel settings (BLAS, oneDNN, OpenMP, threads). */
export function torchConfig(): string {
  return native.config();
}

/**
 * How the host allocator is tuned. On glibc the engine keeps freed tensor memory for the
 * next step instead of returning it to the kernel (no mmap, trim threshold 1 GiB),
 * which saves the page faults that otherwise cost up to half of a small convolution
 * step and two thirds of a 64 px RGB U-Net step; DIFFUSE_MALLOC=default (or any MALLOC_*_ / GLIBC_TUNABLES setting)
 * keeps glibc's own policy. See docs/engine.md, "Memory".
 */
export function mallocPolicy(): string {
  return native.mallocPolicy();
}
