// Throughput and latency of one scenario against one server. Everything comes from the environment:
//   BASE_URL   server to drive (default http://127.0.0.1:8000)
//   MODE       hits | misses | mixed (half of each batch's rows repeat a warmed pool) | half (each request
//              repeats the pool with probability 0.5)
//   BATCH_SIZE rows per request (default 1)
//   EXECUTOR   vus (closed loop, VUS connections) | rate (open loop, RATE requests/s)
//   VUS, RATE, MAX_VUS (arrival-rate executor), DURATION, POOL (warmed rows, default 64), SEED (keeps fresh rows of runs apart)
//   SUMMARY    where to write the JSON summary
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const MODE = __ENV.MODE || 'hits';
const BATCH = parseInt(__ENV.BATCH_SIZE || '1', 10);
const POOL = parseInt(__ENV.POOL || '64', 10);
const SEED = parseInt(__ENV.SEED || '0', 10);
const DURATION = __ENV.DURATION || '15s';
const PARAMS = { headers: { 'Content-Type': 'application/json' } };

export const options = {
  discardResponseBodies: false,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  scenarios: {
    bench: __ENV.EXECUTOR === 'rate'
      ? { executor: 'constant-arrival-rate', rate: parseInt(__ENV.RATE || '2000', 10), timeUnit: '1s',
          duration: DURATION, preAllocatedVUs: 64, maxVUs: parseInt(__ENV.MAX_VUS || '400', 10) }
      : { executor: 'constant-vus', vus: parseInt(__ENV.VUS || '32', 10), duration: DURATION },
  },
};

// A realistic row whose (MedInc, Population) pair is unique for every n.
export function row(n, seed) {
  return {
    MedInc: 1.5 + (n % 4096) / 1024, HouseAge: 5 + (n % 40), AveRooms: 4.5 + (n % 7) / 10,
    AveBedrms: 1.05, Population: 200 + Math.floor(n / 4096) + seed * 1000000, AveOccup: 2.7,
    Latitude: 34.0 + (n % 50) / 25, Longitude: -118.3 - (n % 30) / 15,
  };
}

export function pool(i) { return row(i % POOL, 999); }

export default function () {
  const it = exec.scenario.iterationInTest;
  const rows = [];
  const coin = Math.random() < 0.5;
  for (let j = 0; j < BATCH; j++) {
    const repeat = MODE === 'hits' || (MODE === 'mixed' && j % 2 === 0) || (MODE === 'half' && coin);
    rows.push(repeat ? pool(it * BATCH + j) : row(it * BATCH + j, SEED));
  }
  const res = http.post(`${BASE_URL}/predict`, JSON.stringify(rows), PARAMS);
  check(res, {
    'status 200': (r) => r.status === 200,
    'one prediction per row': (r) => r.status === 200 && r.json('prediction').length === BATCH,
  });
}

export function handleSummary(data) {
  const out = {};
  out[__ENV.SUMMARY || 'bench-summary.json'] = JSON.stringify(data);
  return out;
}
