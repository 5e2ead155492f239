/**
 * Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70,000 grayscale 28 x 28 images of
 * clothing in 10 classes, 60,000 for training and 10,000 for test, read from the
 * IDX files of Debian's dataset-fashion-mnist (installed by `npm run setup`).
 *
 * @example
 *   const train = loadFashionMNIST({ split: 'train', pad32: true });
 *   train.images; // uint8 [60000, 1, 32, 32]
 *   train.labels; // int64 [60000], values 0..9; train.classNames[9] === 'Ankle boot'
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fromBytes } from '../engine/create';
import { tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { DatasetError } from './errors';
import { readIdxImages, readIdxLabels } from './idx';
import { imageSubset, type ImageDataset } from './loader';

/** Where Debian's dataset-fashion-mnist puts the files. */
export const FASHION_MNIST_DEFAULT_DIR = '/usr/share/datasets/fashion-mnist';

/** The ten classes, in label order. */
export const FASHION_MNIST_CLASSES: readonly string[] = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

export interface FashionMNISTOptions {
  /** 'train' (60,000 images, default) or 'test' (10,000). */
  split?: 'train' | 'test';
  /** Folder of the IDX files (gzipped or not); default $DIFFUSE_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist. */
  dir?: string;
  /** Pads 2 black pixels on each side to 32 x 32, so a U-Net can halve the size three times (default false). */
  pad32?: boolean;
}

/** The dataset folder in use: options, then $DIFFUSE_FASHION_MNIST_DIR, then Debian's. */
export function fashionMNISTDir(dir?: string): string {
  return dir ?? (process.env.DIFFUSE_FASHION_MNIST_DIR || FASHION_MNIST_DEFAULT_DIR);
}

function locate(dir: string, stem: string): string {
  for (const name of [`${stem}.gz`, stem]) {
    const f = path.join(dir, name);
    if (fs.existsSync(f)) return f;
  }
  throw new DatasetError(
    path.join(dir, `${stem}.gz`),
    `Fashion-MNIST file not found. Run \`npm run setup\` (it installs Debian's dataset-fashion-mnist into ${FASHION_MNIST_DEFAULT_DIR}), ` +
      'or set DIFFUSE_FASHION_MNIST_DIR to a folder holding the four IDX files.',
  );
}

/** Loads one split: images uint8 [N, 1, 28, 28] (or [N, 1, 32, 32] with pad32), labels int64 [N]. */
export function loadFashionMNIST({ split = 'train', dir, pad32 = false }: FashionMNISTOptions = {}): ImageDataset {
  if (split !== 'train' && split !== 'test') throw new TypeError(`loadFashionMNIST: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const root = fashionMNISTDir(dir);
  const prefix = split === 'train' ? 'train' : 't10k';
  const imageFile = locate(root, `${prefix}-images-idx3-ubyte`);
  const labelFile = locate(root, `${prefix}-labels-idx1-ubyte`);
  const img = readIdxImages(imageFile);
  const lab = readIdxLabels(labelFile, FASHION_MNIST_CLASSES.length);
  const [n, rows, cols] = img.dims;
  if (rows !== 28 || cols !== 28) throw new DatasetError(imageFile, `Fashion-MNIST images are 28 x 28, this file holds ${rows} x ${cols}`);
  if (lab.dims[0] !== n) throw new DatasetError(labelFile, `holds ${lab.dims[0]} labels but ${imageFile} holds ${n} images`);
  const labels = BigInt64Array.from(lab.data, (v) => BigInt(v));
  return tidy(() => {
    const images = fromBytes(img.data, 'uint8', [n, 1, rows, cols]); // [N, 1, 28, 28]
    return {
      images: pad32 ? images.pad([2, 2, 2, 2]) : images, // [N, 1, 32, 32]
      labels: fromBytes(labels, 'int64', [n]),
      classNames: FASHION_MNIST_CLASSES.slice(),
    };
  });
}

/**
 * n images of a split (uint8 [n, 1, 28, 28], or 32 x 32 with pad32) and their labels: all of
 * them, or a seeded random subset when n is smaller (the same subset for the same seed).
 *
 * @example
 *   const { x, labels } = fashionMNISTSubset(1000, { split: 'test', seed: 0 });
 */
export function fashionMNISTSubset(n: number, { seed = 0, ...opts }: FashionMNISTOptions & { seed?: number } = {}): { x: Tensor; labels: number[] } {
  const ds = loadFashionMNIST(opts);
  try {
    return imageSubset(ds, n, { seed, what: `the ${opts.split ?? 'train'} split` });
  } finally {
    ds.images.dispose();
    ds.labels.dispose();
  }
}
