/**
 * The picture and the counts of docs/data.md's emoji section: a grid with one row per
 * category (the first 4 emoji of the training split in the Google style, then the same 4
 * in the Twitter style), and the number of images per category and split.
 *
 * Run: node dist/bench/emoji-grid.js [--size 64] [--out docs/img/emoji-grid.png]
 */
import { fromBytes } from '../src/engine/create';
import { tidy } from '../src/engine/scope';
import { EMOJI_CATEGORIES, EmojiDataset, loadEmoji } from '../src/data/emoji';
import { imageGrid, writePNG } from '../src/util/image';

const PER_STYLE = 4;

function main(argv: string[]): void {
  const opt = (name: string, dflt: string) => {
    const i = argv.indexOf(`--${name}`);
    return i < 0 ? dflt : argv[i + 1];
  };
  const size = Number(opt('size', '64'));
  const out = opt('out', 'docs/img/emoji-grid.png');
  const splits: Record<'train' | 'test', EmojiDataset> = { train: loadEmoji({ split: 'train', size }), test: loadEmoji({ split: 'test', size }) };
  try {
    // counts: category x split x style
    console.log('| category | train (google + twitter) | test (google + twitter) |');
    console.log('| --- | ---: | ---: |');
    const counts = (ds: EmojiDataset) => {
      const l = ds.labels.toFloat64Array();
      const c = EMOJI_CATEGORIES.map(() => 0);
      l.forEach((v) => c[v]++);
      return c;
    };
    const [tr, te] = [counts(splits.train), counts(splits.test)];
    EMOJI_CATEGORIES.forEach((name, k) => console.log(`| ${name} | ${tr[k]} | ${te[k]} |`));
    console.log(`| all | ${splits.train.images.dim(0)} | ${splits.test.images.dim(0)} |`);
    // the grid: per category, the first PER_STYLE base emoji (no skin-tone variants) in each style
    const ds = splits.train;
    const labels = ds.labels.toFloat64Array();
    const styles = ds.styles.toFloat64Array();
    const pick: number[] = [];
    EMOJI_CATEGORIES.forEach((_, k) => {
      const google = ds.unified
        .map((u, i) => i)
        .filter((i) => labels[i] === k && styles[i] === 0 && !ds.captions[i].includes('skin tone'))
        .slice(0, PER_STYLE);
      const twitter = google.map((i) => ds.unified.findIndex((u, j) => u === ds.unified[i] && styles[j] === 1));
      pick.push(...google, ...twitter);
    });
    tidy(() => {
      const idx = fromBytes(
        BigInt64Array.from(pick, (i) => BigInt(i)),
        'int64',
        [pick.length],
      );
      const x = ds.images.indexSelect(0, idx).float().div(127.5).sub(1); // [9 * 8, 3, size, size] in [-1, 1]
      writePNG(out, imageGrid(x, { ncol: 2 * PER_STYLE, padValue: 255 }));
    });
    console.log(`wrote ${out}: ${EMOJI_CATEGORIES.length} rows (categories) x ${2 * PER_STYLE} (google, then twitter)`);
  } finally {
    for (const ds of Object.values(splits)) [ds.images, ds.labels, ds.styles].forEach((t) => t.dispose());
  }
}

main(process.argv.slice(2));
