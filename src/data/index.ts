/**
 * Data: 2-D toys, an analytic Gaussian mixture (density, score and exact denoiser
 * at every sigma), Fashion-MNIST from IDX files, emoji from the emoji-datasource
 * packages, folders of PNG/JPEG images, and a
 * seeded, resumable DataLoader. A missing, empty or corrupt dataset throws a
 * DatasetError naming the file.
 *
 * @example
 *   const loader = new DataLoader(loadFashionMNIST({ pad32: true }), { batchSize: 64, seed: 0 });
 *   const { x, labels } = loader.next(); // float32 [64, 1, 32, 32] in [-1, 1], int64 [64]
 */
export * from './errors';
export * from './toys';
export * from './mixture';
export * from './idx';
export * from './fashion-mnist';
export * from './image-codec';
export * from './image-folder';
export * from './emoji';
export * from './loader';
