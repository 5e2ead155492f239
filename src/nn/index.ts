/**
 * Neural-network building blocks: Module (parameters with PyTorch names), layers,
 * attention, noise-level embeddings, resampling, and state-dict files.
 *
 * @example
 *   const net = new Linear(2, 64);
 *   saveModule(net, 'net.safetensors');
 *   loadModule(net, 'net.safetensors');
 */
export * from './module';
export * from './init';
export * from './layers';
export * from './attention';
export * from './embeddings';
export * from './resample';
export * from './io';
export * from './lora';
