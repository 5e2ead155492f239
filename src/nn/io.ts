/**
 * Module weights in safetensors files (PyTorch-compatible names and layout).
 *
 * @example
 *   saveModule(unet, 'unet.safetensors', { config: JSON.stringify(cfg) });
 *   loadModule(unet, 'unet.safetensors');          // strict: names and shapes must match
 */
import { loadSafetensors, saveSafetensors } from '../engine/safetensors';
import { dispose, tidy } from '../engine/scope';
import { DType } from '../engine/dtype';
import { Tensor } from '../engine/tensor';
import { Module } from './module';

/**
 * A state dict cast to dtype: new tensors, which the caller disposes (how weights are shipped in float16).
 *
 * @example
 *   const half = castTensors(unet.stateDict(), 'float16');  saveSafetensors('unet.safetensors', half);  dispose(half);
 */
export function castTensors(tensors: Record<string, Tensor>, dtype: DType): Record<string, Tensor> {
  return tidy(() => Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, t.to({ dtype })])));
}

/** Writes the module's state dict (atomically) with optional string metadata. */
export function saveModule(m: Module, path: string, metadata?: Record<string, string>): void {
  saveSafetensors(path, m.stateDict(), metadata);
}

/** Loads a state dict file into the module; returns the file's metadata. */
export function loadModule(m: Module, path: string, { strict = true }: { strict?: boolean } = {}): Record<string, string> {
  const { tensors, metadata } = loadSafetensors(path);
  try {
    m.loadStateDict(tensors, { strict });
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  } finally {
    dispose(tensors);
  }
  return metadata;
}
