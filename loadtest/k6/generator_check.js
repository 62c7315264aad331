// Checks the input generator of lib.js without a server (tests/load/test_loadtest.py runs it):
// fresh rows are distinct float64 rows, never pool rows, distinct across run seeds, and realistic.
//
//   .venv/bin/k6 run loadtest/k6/generator_check.js     # exits 99 if a check fails
//
// JSON.stringify prints the shortest string that round-trips a double, so two rows give the same
// string exactly when the server would see the same canonical float64 row.
import { check } from 'k6';
import { freshRow, makePool } from './lib.js';

export const options = {
  iterations: 1,
  vus: 1,
  thresholds: { checks: ['rate==1'] },
};

// The California housing data's minimum and maximum of every feature.
const RANGES = {
  MedInc: [0.4999, 15.0001],
  HouseAge: [1, 52],
  AveRooms: [0.846, 141.91],
  AveBedrms: [0.333, 34.07],
  Population: [3, 35682],
  AveOccup: [0.692, 1243.4],
  Latitude: [32.54, 41.95],
  Longitude: [-124.35, -114.31],
};

const key = (row) => JSON.stringify(Object.keys(RANGES).map((name) => row[name]));
const inRange = (row) => Object.entries(RANGES).every(([name, [lo, hi]]) => row[name] >= lo && row[name] <= hi);

export default function () {
  const pool = makePool(100);
  const poolKeys = new Set(pool.map(key));
  const seen = new Set();
  let fresh = 0;
  let allInRange = pool.every(inRange);
  let poolCollisions = 0;
  const add = (row) => {
    const k = key(row);
    seen.add(k);
    fresh++;
    if (poolKeys.has(k)) poolCollisions++;
    if (!inRange(row)) allInRange = false;
  };
  // Seeds and row numbers around the 1e6 boundaries where a value carries into the next feature.
  const seeds = [0, 1, 999999, 1000000, 123456789012];
  for (const seed of seeds) {
    for (let id = 0; id < 4000; id++) add(freshRow(id, seed));
  }
  for (const base of [999990, 1999990, 999999990, 1e12 - 20]) {
    for (let id = base; id < base + 20; id++) add(freshRow(id, 42));
  }
  check(null, {
    'the pool has 100 distinct rows': () => poolKeys.size === 100,
    'fresh rows are all distinct (across row numbers and seeds)': () => seen.size === fresh,
    'no fresh row is a pool row': () => poolCollisions === 0,
    'every value is within the California data ranges': () => allInRange,
  });
}

export function handleSummary(data) {
  const path = __ENV.SUMMARY_PATH || 'loadtest/results/generator_check.json';
  const lines = data.root_group.checks.map((c) => `  ${c.fails ? 'FAIL' : 'ok  '}  ${c.name}`);
  return { [path]: JSON.stringify(data, null, 1), stdout: `\n${lines.join('\n')}\n\n` };
}
