/**
 * Module weights in safetensors files (PyTorch-compatible names and layout).
 *
 * @example
 *   saveModule(unet, 'unet.safetensors', { config: JSON.stringify(cfg) });
 *   loadModule(unet, 'unet.safetensors');          // strict: names and shapes must match
 */
import { loadSafetensors, saveSafetensors } from '../engine/safetensors';
import { dispose } from '../engine/scope';
import { Module } from './module';

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
