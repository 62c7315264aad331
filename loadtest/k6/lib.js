// Shared by load.js and smoke.js: configuration from the environment, the input generator,
// the request itself, the pool warm-up, and the end-of-test summary (JSON file + text on stdout).
//
// CACHE_RATE semantics (the lab's): every ROW of a request independently repeats an input from a
// small fixed pool with probability CACHE_RATE, otherwise it is a freshly generated row that has
// never been sent before in the run. With BATCH_SIZE=1 (the default) a row is a request, exactly
// the lab's behaviour. The server counts rows, so its hit ratio is expected to be CACHE_RATE.
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

// -- configuration --------------------------------------------------------------------------
function num(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name} must be a number, got ${raw}`);
  return value;
}

function str(name, fallback) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? fallback : raw;
}

// Pre-allocated VUs cover answers up to this many times P99_MS at RATE (see config()).
export const VU_HEADROOM = 4;

// Every knob, from the environment; `defaults` differ between load.js and smoke.js.
export function config(defaults) {
  const cfg = {
    baseUrl: str('BASE_URL', 'http://127.0.0.1:8000').replace(/\/+$/, ''),
    cacheRate: num('CACHE_RATE', defaults.cacheRate),
    batchSize: num('BATCH_SIZE', 1),
    rate: num('RATE', defaults.rate),
    ramp: str('RAMP', defaults.ramp),
    duration: str('DURATION', defaults.duration),
    p99Ms: num('P99_MS', defaults.p99Ms),
    executor: str('EXECUTOR', 'ramping-arrival-rate'),
    poolSize: num('POOL_SIZE', 100),
    seed: str('SEED', ''),
    // Seconds setup() waits after the warm-up, so a Prometheus scraping every SETTLE_S / 2 or
    // faster has seen the warm-up before the load starts (loadtest/report.py --prometheus-url).
    settleS: num('SETTLE_S', 0),
    summaryPath: str('SUMMARY_PATH', 'loadtest/results/summary.json'),
    scenario: defaults.scenario,
  };
  // VUS: the users of ramping-vus, or the VUs an arrival-rate test allocates before it starts:
  // by default enough to keep RATE requests in flight for VU_HEADROOM times the SLO each
  // (Little's law), so k6 never creates VUs mid-test (that stalls iterations and drops them).
  // MAX_VUS defaults to VUS: a run that needs more is one whose answers are far past the SLO.
  const forRate = Math.ceil((cfg.rate * cfg.p99Ms * VU_HEADROOM) / 1000);
  const closedLoop = cfg.executor === 'ramping-vus';
  cfg.vus = num('VUS', closedLoop ? defaults.users : Math.max(defaults.vus, forRate));
  cfg.maxVus = num('MAX_VUS', cfg.vus);
  if (!(cfg.vus >= 1 && cfg.maxVus >= cfg.vus)) throw new Error('VUS must be >= 1 and MAX_VUS >= VUS');
  if (!(cfg.cacheRate >= 0 && cfg.cacheRate <= 1)) throw new Error('CACHE_RATE must be in [0, 1]');
  if (!(Number.isInteger(cfg.batchSize) && cfg.batchSize >= 1 && cfg.batchSize <= 1000)) {
    throw new Error('BATCH_SIZE must be an integer in [1, 1000]');
  }
  if (!(Number.isInteger(cfg.poolSize) && cfg.poolSize >= 1 && cfg.poolSize <= 1000)) {
    throw new Error('POOL_SIZE must be an integer in [1, 1000]');
  }
  if (!['ramping-arrival-rate', 'ramping-vus'].includes(cfg.executor)) {
    throw new Error('EXECUTOR must be ramping-arrival-rate (open loop) or ramping-vus (closed loop)');
  }
  return cfg;
}

// The k6 options: one scenario (a ramp, then a sustained stage) and the SLO as thresholds.
// Thresholds are on the scenario's requests only, so the warm-up in setup() is not measured.
export function options(cfg) {
  const scenario =
    cfg.executor === 'ramping-arrival-rate'
      ? {
          // Open loop: requests start at RATE per second whatever the latency, so latency is
          // measured at a fixed offered load (a slow server cannot slow the test down).
          executor: 'ramping-arrival-rate',
          startRate: 0,
          timeUnit: '1s',
          preAllocatedVUs: cfg.vus,
          maxVUs: cfg.maxVus,
          stages: [
            { duration: cfg.ramp, target: cfg.rate },
            { duration: cfg.duration, target: cfg.rate },
          ],
        }
      : {
          // Closed loop, as the lab ran it: VUS users each send the next request when the last
          // one is answered, so the offered load falls when latency rises.
          executor: 'ramping-vus',
          startVUs: 0,
          stages: [
            { duration: cfg.ramp, target: cfg.vus },
            { duration: cfg.duration, target: cfg.vus },
          ],
          gracefulRampDown: '5s',
        };
  const only = `{scenario:${cfg.scenario}}`;
  return {
    scenarios: { [cfg.scenario]: scenario },
    thresholds: {
      [`http_req_duration${only}`]: [`p(99)<${cfg.p99Ms}`],
      // Any non-2xx, 429 included, is an error, and the SLO allows none.
      [`http_req_failed${only}`]: ['rate==0'],
      [`checks${only}`]: ['rate==1'],
      // An iteration k6 could not start is a request the SLO never saw: the run fails.
      dropped_iterations: ['count==0'],
    },
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'count'],
    setupTimeout: `${60 + cfg.settleS}s`,
    discardResponseBodies: false,
  };
}

// -- inputs ---------------------------------------------------------------------------------
// Realistic values: roughly the 5th to 95th percentiles of the California housing data, placed
// around real Californian cities (a uniform latitude/longitude box would be half ocean).
const CITIES = [
  [34.05, -118.24], [37.77, -122.42], [32.72, -117.16], [37.34, -121.89], [38.58, -121.49],
  [36.74, -119.79], [37.8, -122.27], [35.37, -119.02], [33.95, -117.4], [34.42, -119.7],
  [40.59, -122.39], [40.8, -124.16], [33.77, -118.19], [34.11, -117.29], [36.6, -121.89],
];

// mulberry32: a small seeded PRNG, so the pool is the same in every VU and every run.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const cents = (x) => Math.round(x * 100) / 100;
const between = (rand, lo, hi) => lo + (hi - lo) * rand();

function baseRow(rand, population) {
  const [lat, lon] = CITIES[Math.floor(rand() * CITIES.length)];
  return {
    MedInc: cents(between(rand, 1.6, 7.3)),
    HouseAge: Math.floor(between(rand, 8, 53)),
    AveRooms: cents(between(rand, 3.43, 7.64)),
    AveBedrms: cents(between(rand, 0.94, 1.27)),
    Population: population,
    AveOccup: cents(between(rand, 1.87, 4.33)),
    Latitude: cents(Math.min(41.95, Math.max(32.54, lat + between(rand, -0.15, 0.15)))),
    Longitude: cents(Math.min(-114.31, Math.max(-124.35, lon + between(rand, -0.15, 0.15)))),
  };
}

// The fixed pool: whole cents everywhere and distinct populations, the same in every run and VU.
export function makePool(size) {
  const rand = prng(255);
  return Array.from({ length: size }, (_, i) => baseRow(rand, 1000 + i));
}

// A tag in the digits below a cent: c + 5e-9 + k * 1e-8 with 0 <= k < 1e6 stays within a cent of c,
// is never a whole cent (so never a pool value), and distinct (c, k) give distinct float64 values.
const MILLION = 1e6;
const tag = (c, k) => c + 5e-9 + k * 1e-8;

// Row number `id` of the run with seed `seed` (both integers below 1e12). Four features carry
// (id mod 1e6, id / 1e6, seed mod 1e6, seed / 1e6) below the cent, so two different (id, seed)
// pairs never give the same canonical row, whatever the random parts are: a fresh row is new
// within the run, and across runs with different seeds (against a long-lived server). The random
// parts come from Math.random: a seeded PRNG in k6's JavaScript costs ~5 us a call, too much here.
export function freshRow(id, seed) {
  const row = baseRow(Math.random, Math.floor(between(Math.random, 348, 3288)));
  row.MedInc = tag(row.MedInc, id % MILLION);
  row.AveRooms = tag(row.AveRooms, Math.floor(id / MILLION) % MILLION);
  row.AveOccup = tag(row.AveOccup, seed % MILLION);
  row.AveBedrms = tag(row.AveBedrms, Math.floor(seed / MILLION) % MILLION);
  return row;
}

// -- the test -------------------------------------------------------------------------------
export const poolRows = new Counter('pool_rows'); // rows taken from the pool, in answered requests
export const freshRows = new Counter('fresh_rows'); // fresh rows, in answered requests
export const headerHit = new Rate('x_cache_hit'); // share of answers with X-Cache: HIT
// Latency by X-Cache: does a cache hit stay fast while other requests wait for the model?
const latencyBy = {
  HIT: new Trend('latency_hit', true),
  MISS: new Trend('latency_miss', true),
  PARTIAL: new Trend('latency_partial', true),
};

const JSON_HEADERS = { headers: { 'Content-Type': 'application/json' } };

export function predict(cfg, rows, params) {
  return http.post(`${cfg.baseUrl}/predict`, JSON.stringify(rows), Object.assign({}, JSON_HEADERS, params));
}

// One iteration: BATCH_SIZE rows, each from the pool with probability CACHE_RATE, else fresh.
// Fresh row numbers come from iterationInTest, which k6 makes unique across all VUs.
export function iteration(cfg, pool, data) {
  const first = exec.scenario.iterationInTest * cfg.batchSize;
  const rows = [];
  let fromPool = 0;
  for (let j = 0; j < cfg.batchSize; j++) {
    if (Math.random() < cfg.cacheRate) {
      rows.push(pool[Math.floor(Math.random() * pool.length)]);
      fromPool++;
    } else {
      rows.push(freshRow(first + j, data.seed));
    }
  }
  const res = predict(cfg, rows);
  const ok = check(res, {
    'status is 200': (r) => r.status === 200,
    'one prediction per row': (r) => r.status === 200 && predictions(r) === cfg.batchSize,
  });
  if (res.status === 200) {
    poolRows.add(fromPool);
    freshRows.add(cfg.batchSize - fromPool);
    const cache = res.headers['X-Cache'];
    headerHit.add(cache === 'HIT');
    if (latencyBy[cache]) latencyBy[cache].add(res.timings.duration);
  }
  return ok;
}

function predictions(res) {
  try {
    const body = res.json();
    return Array.isArray(body.prediction) ? body.prediction.length : -1;
  } catch (_) {
    return -1;
  }
}

// -- setup: health, pool warm-up, and a /metrics scrape after it -------------------------------
// The pool is predicted once here, so its rows are cache hits from the first iteration on: the
// run's expected server hit ratio is CACHE_RATE with no warm-up correction. The scrape taken
// after the warm-up is the "before" of the run, so the warm-up's rows are excluded from it.
export function setup(cfg, pool) {
  const health = http.get(`${cfg.baseUrl}/health`);
  if (health.status !== 200) {
    exec.test.abort(`${cfg.baseUrl}/health answered ${health.status}: is the service running?`);
  }
  // Warmed even at CACHE_RATE=0: the model's first call after a start is slow (allocations,
  // lazy imports), and a just-started service should not be measured by it.
  let warmed = 0;
  for (let i = 0; i < pool.length; i += 1000) {
    const res = predict(cfg, pool.slice(i, i + 1000), { tags: { phase: 'warmup' } });
    if (res.status !== 200) exec.test.abort(`pool warm-up answered ${res.status}: ${res.body}`);
    warmed += Math.min(1000, pool.length - i);
  }
  const seed = Math.floor(cfg.seed === '' ? Math.random() * 1e12 : Math.abs(Number(cfg.seed))) % 1e12;
  const warmedAt = Date.now() / 1000;
  if (cfg.settleS > 0) sleep(cfg.settleS);
  return { seed, warmedRows: warmed, warmedAt, loadFrom: Date.now() / 1000, metricsAfterWarmup: scrape(cfg.baseUrl) };
}

// The service's row counters, or null when /metrics is not reachable (e.g. behind a gateway:
// then loadtest/report.py reads them through Prometheus). model_rows: rows that reached the model.
export function scrape(baseUrl) {
  const res = http.get(`${baseUrl}/metrics`, { tags: { phase: 'scrape' } });
  if (res.status !== 200) return null;
  const rows = {};
  // Other labels (model_version, on every service sample) may come before or after source.
  const re = /^housing_api_rows_served_total\{(?:[^}]*,)?source="(\w+)"[^}]*\} ([0-9.e+]+)$/gm;
  let m;
  while ((m = re.exec(res.body)) !== null) rows[m[1]] = Number(m[2]);
  const model = /^housing_api_model_batch_rows_sum(?:\{[^}]*\})? ([0-9.e+]+)$/m.exec(res.body);
  return { rows_served: rows, model_rows: model ? Number(model[1]) : null };
}

// -- summary --------------------------------------------------------------------------------
// The jslib textSummary is a remote import (unreachable offline), and defining handleSummary
// replaces k6's own text summary, so this prints a short one itself.
export function summary(cfg, data) {
  const json = JSON.stringify(Object.assign({ loadtest: cfg }, data), null, 1);
  return { [cfg.summaryPath]: json, stdout: textSummary(cfg, data) };
}

export function textSummary(cfg, data) {
  const only = (name) => data.metrics[`${name}{scenario:${cfg.scenario}}`];
  const d = only('http_req_duration');
  const failed = only('http_req_failed');
  const checks = only('checks');
  const iters = data.metrics.iterations;
  const pool = (data.metrics.pool_rows || { values: { count: 0 } }).values.count;
  const fresh = (data.metrics.fresh_rows || { values: { count: 0 } }).values.count;
  const dropped = data.metrics.dropped_iterations;
  const ms = (v) => (v === undefined ? 'n/a' : `${v.toFixed(2)}ms`);
  const lines = [
    '',
    `  housing-api ${cfg.scenario}: ${cfg.executor}, CACHE_RATE=${cfg.cacheRate}, BATCH_SIZE=${cfg.batchSize}, ` +
      (cfg.executor === 'ramping-arrival-rate' ? `RATE=${cfg.rate}/s` : `VUS=${cfg.vus}`) +
      `, RAMP=${cfg.ramp}, DURATION=${cfg.duration}, ${cfg.baseUrl}`,
    '',
    '  SLO (thresholds)',
  ];
  for (const name of Object.keys(data.metrics).sort()) {
    for (const [expr, t] of Object.entries(data.metrics[name].thresholds || {})) {
      lines.push(`    ${t.ok ? 'PASS' : 'FAIL'}  ${name} ${expr}`);
    }
  }
  lines.push('');
  if (iters) {
    const secs = data.state.testRunDurationMs / 1000;
    lines.push(`  requests ........ ${iters.values.count} in ${secs.toFixed(1)} s (setup and ramp included)`);
  }
  if (d) {
    const v = d.values;
    lines.push(
      `  latency ......... p50=${ms(v['p(50)'])} p90=${ms(v['p(90)'])} p95=${ms(v['p(95)'])} ` +
        `p99=${ms(v['p(99)'])} max=${ms(v.max)}`,
    );
  }
  if (failed) lines.push(`  failed .......... ${(failed.values.rate * 100).toFixed(2)}% (${failed.values.passes} requests)`);
  if (checks) lines.push(`  checks .......... ${(checks.values.rate * 100).toFixed(2)}% passed`);
  if (dropped && dropped.values.count > 0) {
    lines.push(`  dropped ......... ${dropped.values.count} iterations: ${droppedHint(cfg, data)}`);
  } else if (cfg.executor === 'ramping-arrival-rate') {
    lines.push('  dropped ......... 0 iterations');
  }
  if (pool + fresh > 0) {
    lines.push(`  rows ............ ${pool} from the pool, ${fresh} fresh: ${((100 * pool) / (pool + fresh)).toFixed(2)}% repeated`);
  }
  if (data.metrics.x_cache_hit) {
    lines.push(`  X-Cache: HIT .... ${(data.metrics.x_cache_hit.values.rate * 100).toFixed(2)}% of answers`);
  }
  for (const kind of ['hit', 'miss', 'partial']) {
    const t = data.metrics[`latency_${kind}`];
    if (t && t.values.count) {
      lines.push(`    ${kind.padEnd(8, ' ')} ${String(t.values.count).padStart(7, ' ')} answers: p50=${ms(t.values['p(50)'])} p99=${ms(t.values['p(99)'])}`);
    }
  }
  lines.push(`  summary JSON .... ${cfg.summaryPath}`, '');
  return lines.join('\n');
}

// Why k6 dropped iterations, and the knob that would change it.
export function droppedHint(cfg, data) {
  const allocated = data.metrics.vus_max ? data.metrics.vus_max.values.max : cfg.maxVus;
  const busy = data.metrics.vus ? data.metrics.vus.values.max : 0;
  if (allocated > cfg.vus) {
    return `k6 created ${allocated - cfg.vus} VUs mid-test, which stalls iterations: pre-allocate them (VUS=${allocated})`;
  }
  if (busy >= allocated) {
    const ms = Math.round((1000 * allocated) / cfg.rate);
    return `all ${allocated} VUs were waiting for answers, i.e. answers took over ~${ms} ms at RATE=${cfg.rate}: the service is overloaded (raise VUS only to measure how slow)`;
  }
  return `only ${busy} of ${allocated} VUs were busy: k6 could not start iterations on time (short of CPU? it shares the cores with the service)`;
}

// A scenario wired for k6: its options, setup, iteration and summary over one config and one pool.
// load.js and smoke.js differ only in their defaults, so that is all each of them says.
export function scenario(defaults) {
  const cfg = config(defaults);
  const pool = makePool(cfg.poolSize);
  return {
    options: options(cfg),
    setup: () => setup(cfg, pool),
    iteration: (data) => iteration(cfg, pool, data),
    handleSummary: (data) => summary(cfg, data),
  };
}
