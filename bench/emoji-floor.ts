/**
 * The emoji floor at every resolution (docs/BENCHMARKS.md): the whole emoji test split
 * (704 images, both styles), area-averaged to 16, 32 and 64 px as the dataset does, measured
 * as if it were samples in emoji-cnn-v1 (16 and 32 px upsampled to 64 by extractFeatures)
 * against the training split at 64 px. A model at 16 or 32 px cannot beat its row.
 *
 * Run: node dist/bench/emoji-floor.js
 */
import { dispose } from '../src/engine/scope';
import { datasetReference, imageMetrics } from '../src/eval/evaluate';
import { featureNetFor } from '../src/eval/feature-net';
import { formatMetric } from '../src/eval/report';
import { loadClassifierData } from '../src/training/classifier';

function main(): void {
  const fnet = featureNetFor('emoji');
  const ref = datasetReference(fnet, { data: 'emoji' });
  try {
    console.log(`test split (704) against ${ref.name} in ${fnet.name}`);
    console.log('| test split at | fd | kid | precision | recall | class accuracy |');
    console.log('| --- | --- | --- | --- | --- | --- |');
    for (const size of [16, 32, 64]) {
      const test = loadClassifierData('emoji', 'test', size);
      try {
        const labels = Array.from(test.labels.toFloat64Array());
        const m = imageMetrics(fnet, ref, test.images, { labels });
        console.log(`| ${size} px | ${['fd', 'kid', 'precision', 'recall', 'accuracy'].map((k) => formatMetric(m[k])).join(' | ')} |`);
      } finally {
        dispose([test.images, test.labels]);
      }
    }
  } finally {
    ref.dispose();
    fnet.net.dispose();
  }
}

main();
