/**
 * How fast the DataLoader makes batches, against how fast training consumes them:
 * Fashion-MNIST load time, then ms per batch of 64 at 32 x 32 (gray, and RGB from
 * the same data tripled), with and without random flips.
 *
 * Run: npx tsc -p tsconfig.json && node dist/bench/data.js
 */
import { getNumThreads, memory, tidy, torchVersion } from '../src/engine';
import { DataLoader, ImageDataset, loadFashionMNIST } from '../src/data';

function msPerBatch(loader: DataLoader, batches: number): number {
  for (let i = 0; i < 20; i++) tidy(() => void loader.next()); // warm up
  const t0 = performance.now();
  for (let i = 0; i < batches; i++) tidy(() => void loader.next()); // frees each batch
  return (performance.now() - t0) / batches;
}

function main(): void {
  console.log(`diffuse data bench: libtorch ${torchVersion()}, ${getNumThreads()} threads`);
  let t0 = performance.now();
  const gray: ImageDataset = loadFashionMNIST({ split: 'train', pad32: true });
  console.log(`load Fashion-MNIST train (60000 x 1 x 32 x 32, gunzip + IDX checks): ${(performance.now() - t0).toFixed(0)} ms`);
  const rgb = tidy(() => gray.images.repeat([1, 3, 1, 1])); // [60000, 3, 32, 32]
  const before = memory().tensors;
  const rows: [string, ImageDataset['images'], boolean][] = [
    ['gray 1x32x32', gray.images, false],
    ['gray 1x32x32 + flips', gray.images, true],
    ['RGB 3x32x32', rgb, false],
    ['RGB 3x32x32 + flips', rgb, true],
  ];
  for (const [name, images, flip] of rows) {
    const loader = new DataLoader({ images, labels: gray.labels }, { batchSize: 64, seed: 0, flip });
    t0 = performance.now();
    tidy(() => void loader.batchAt(0)); // the first batch of an epoch also draws the permutation
    const first = performance.now() - t0;
    const ms = msPerBatch(loader, 2000);
    loader.dispose();
    console.log(`batch of 64, ${name.padEnd(22)} ${ms.toFixed(3)} ms/batch (${((64 / ms) * 1000).toFixed(0)} samples/s); first of an epoch (randperm of 60000) ${first.toFixed(2)} ms`);
  }
  console.log(`live tensors after the loops: ${memory().tensors - before} more than before`);
}

main();
