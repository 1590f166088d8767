-- wrk script for scripts/bench-vs-nginx.sh: the request pattern of one scenario, and a line of
-- figures at the end that the script parses (wrk's own text output is for people).
--
-- The mode comes from the environment, not from wrk's `-- args`: wrk decides whether requests are
-- built per request (a `request` function exists) when it loads the script, before `init(args)`
-- runs, and a fixed request is cheaper for wrk than a Lua call per request. Fixed modes therefore
-- leave `request` undefined, and the target's path and headers come from wrk's command line.
--
--   BENCH_WRK_MODE=fixed          (default) the URL and -H headers given to wrk, every request
--   BENCH_WRK_MODE=private-random /api/me?cc=private&u=RANDOM: uncacheable, a new key every time
--   BENCH_WRK_MODE=browser-mix    40% JavaScript hits, 40% API hits, 20% private API answers
--
-- Paths are those of `galion-edge-tools loadtest` (tools/src/loadtest/scenarios.rs), on the
-- sample origins' knobs (tools/src/origin.rs: `text?n=N` JavaScript-like bytes, `cc=` the
-- Cache-Control of the answer). Host and Accept-Encoding come from wrk's -H, for every mode.

local mode = os.getenv("BENCH_WRK_MODE") or "fixed"

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

if mode == "private-random" then
  function init(args)
    math.randomseed(os.time() * 1000 + id)
  end

  -- The same answer as api-pass (`Cache-Control: private`), but no two requests share a key,
  -- so neither server can gain from one hot key (a lock, a coalesced miss, a hot bucket).
  function request()
    return wrk.format(nil, "/api/me?cc=private&u=" .. math.random(1e9))
  end
elseif mode == "browser-mix" then
  -- Built once per thread: a table of 100 formatted requests in the mix's proportions, one
  -- picked at random per request (a Lua call, but no formatting on the hot path).
  local reqs = {}

  function init(args)
    math.randomseed(os.time() * 1000 + id)
    -- 40%: JavaScript chunks, 10 KB to 100 KB (cache hits, the brotli variant for Chrome).
    for i = 1, 40 do
      local k = (i - 1) % 10
      reqs[#reqs + 1] = wrk.format(nil, "/api/static/chunk-" .. k .. "/text?n=" .. 10240 * (k + 1))
    end
    -- 40%: API reads the cache serves.
    for i = 1, 40 do
      reqs[#reqs + 1] = wrk.format(nil, "/api/items/" .. (i - 1) % 25 .. "?page=1")
    end
    -- 20%: personalised API answers (Cache-Control: private), always from the origin.
    for i = 1, 20 do
      reqs[#reqs + 1] = wrk.format(nil, "/api/me/" .. (i - 1) % 5 .. "?cc=private")
    end
  end

  function request()
    return reqs[math.random(#reqs)]
  end
elseif mode ~= "fixed" then
  error("BENCH_WRK_MODE: unknown mode " .. mode .. "; known: fixed, private-random, browser-mix")
end

-- One line, `key=value` pairs: requests completed, seconds, latency percentiles in
-- microseconds, and the errors wrk counts (non-2xx/3xx answers under `status`).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "bench-wrk requests=%d seconds=%.3f p50_us=%d p99_us=%d p999_us=%d max_us=%d"
      .. " connect=%d read=%d write=%d timeout=%d status=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
