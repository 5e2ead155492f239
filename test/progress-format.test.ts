// formatSeconds, the progress bar's ETA and the CLI's wall times: rounding happens once, so no
// "3m60s" or "1h60m" at the boundaries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatSeconds } from '../src/util/progress';

test('formatSeconds rounds once: 239.6 s is 4m00s, 3599.7 s is 1h00m, 59.6 s is 1m00s', () => {
  assert.deepEqual([0, 12.4, 59.4, 59.6, 61, 239.6, 3599.7, 3661, 7199.9, NaN].map(formatSeconds), ['0s', '12s', '59s', '1m00s', '1m01s', '4m00s', '1h00m', '1h01m', '2h00m', '?']);
});
