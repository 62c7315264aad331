-- POST bodies for one wrk scenario (bench/run.py passes the arguments after `--`):
--   wrk ... -s bench/wrk/predict.lua URL -- MODE BATCH SEED FORMAT POOL_FILE
-- MODE    hits (every row repeats the warmed pool) | misses (every row never sent before) |
--         mixed (even positions repeat the pool, odd positions are fresh)
-- BATCH   rows per request
-- SEED    keeps the fresh rows of different runs apart
-- FORMAT  service (a JSON array of row objects) | v2 (the V2 inference protocol's tensor, for MLServer)
-- POOL_FILE  one warmed row per line, eight comma-separated numbers (bench/run.py writes it and
--         sends every pool row once before the run, so pool rows are hits)
-- A fresh row is a pool row whose Population is a number no other request uses, so fresh rows
-- are unique without any floating-point formatting here. done() prints one JSON line for run.py.

local FEATURES = { "MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude" }
local POPULATION = 5
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local function split(line)
  local values = {}
  for value in string.gmatch(line, "[^,]+") do
    table.insert(values, value)
  end
  return values
end

-- Text of one row around its Population, in the chosen format: before .. population .. after.
local function row_parts(values, format)
  local before, after = {}, {}
  for i, name in ipairs(FEATURES) do
    local text = format == "v2" and values[i] or string.format('"%s":%s', name, values[i])
    if i < POPULATION then
      table.insert(before, text)
    elseif i > POPULATION then
      table.insert(after, text)
    end
  end
  if format == "v2" then
    return table.concat(before, ",") .. ",", "," .. table.concat(after, ",")
  end
  return "{" .. table.concat(before, ",") .. ',"Population":', "," .. table.concat(after, ",") .. "}"
end

function init(args)
  mode, batch, seed, format = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
  pool_before, pool_after, pool_text = {}, {}, {}
  for line in io.lines(args[5]) do
    local values = split(line)
    local before, after = row_parts(values, format)
    table.insert(pool_before, before)
    table.insert(pool_after, after)
    table.insert(pool_text, before .. values[POPULATION] .. after)
  end
  counter = 0
  -- Fresh Populations: distinct per run (seed), per wrk thread (tid) and per row (counter).
  fresh_base = (seed * 64 + tid) * 2 ^ 32
  if format == "v2" then
    head = string.format('{"inputs":[{"name":"input-0","shape":[%d,8],"datatype":"FP64","data":[', batch)
    tail = "]}]}"
  else
    head, tail = "[", "]"
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if mode == "hits" then
    -- The same few bodies over and over: build them once.
    bodies = {}
    for i = 1, #pool_text do
      local rows = {}
      for j = 0, batch - 1 do
        table.insert(rows, pool_text[(i + j - 1) % #pool_text + 1])
      end
      bodies[i] = head .. table.concat(rows, ",") .. tail
    end
  end
end

function request()
  counter = counter + 1
  if mode == "hits" then
    return wrk.format(nil, nil, nil, bodies[counter % #bodies + 1])
  end
  local rows = {}
  for j = 0, batch - 1 do
    local p = (counter * batch + j) % #pool_text + 1
    if mode == "mixed" and j % 2 == 0 then
      rows[j + 1] = pool_text[p]
    else
      rows[j + 1] = pool_before[p] .. string.format("%d", fresh_base + counter * batch + j) .. pool_after[p]
    end
  end
  return wrk.format(nil, nil, nil, head .. table.concat(rows, ",") .. tail)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
