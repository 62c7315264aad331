// About 10 seconds of light traffic for CI: every request answered, one prediction per row.
//
//   CACHE_RATE=0.9 .venv/bin/k6 run loadtest/k6/smoke.js
//
// The same knobs as load.js with gentler defaults (20 requests/s, 2 s ramp, 8 s sustained, and a
// p99 of 500 ms, because CI machines are shared); the test suite shortens DURATION further.
import * as lib from './lib.js';

const test = lib.scenario({
  scenario: 'smoke',
  cacheRate: 0.5,
  rate: 20,
  ramp: '2s',
  duration: '8s',
  p99Ms: 500,
  vus: 10,
  users: 5,
});

export const options = test.options;
export const setup = test.setup;
export default test.iteration;
export const handleSummary = test.handleSummary;
