-- wrk script for scripts/soak.sh: a weighted mix of requests, and totals by status at the end.
-- Paths are the sample origins' (tools/src/origin.rs); hosts are the soak config's sites.

local encodings = { "identity", "gzip", "br", "gzip, deflate, br" }
local post_body = string.rep("x", 4096)

local function pick(t) return t[math.random(#t)] end

-- weight, function returning method, path, headers, body
local mix = {
  -- api zone hits (50 hot keys, three encoding variants each)
  { 35, function()
      return "GET", "/api/hot/" .. math.random(50), { ["Accept-Encoding"] = pick(encodings) }
    end },
  -- static zone hits (static extension on the frontend route)
  { 10, function()
      return "GET", "/assets/app" .. math.random(200) .. ".js", { ["Accept-Encoding"] = pick(encodings) }
    end },
  -- misses: new URLs, stored on disk and evicted as the zone fills
  { 15, function()
      return "GET", "/api/miss/" .. math.random(1e9) .. "/bytes?n=" .. math.random(32768), {}
    end },
  -- 1 MiB objects (disk tier, memory tier when they fit)
  { 3, function()
      return "GET", "/api/big/" .. math.random(20) .. "/bytes?n=1048576", {}
    end },
  -- uncached, compressed on every request
  { 10, function()
      return "GET", "/nocache/page/text?n=20000", { ["Accept-Encoding"] = pick({ "gzip", "br" }) }
    end },
  -- 404s: cached for a minute, and uncached
  { 3, function() return "GET", "/api/nf/" .. math.random(100) .. "/status?code=404", {} end },
  { 2, function() return "GET", "/nocache/nf/status?code=404", {} end },
  -- POST bodies (never cached)
  { 12, function()
      return "POST", "/api/echo", { ["Content-Type"] = "application/octet-stream" }, post_body
    end },
  -- the other site, pass-through
  { 10, function() return "GET", "/studio/page", { Host = "galion.studio" } end },
}

local total_weight = 0
for _, m in ipairs(mix) do total_weight = total_weight + m[1] end

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
  counts = {}
end

function request()
  local r = math.random(total_weight)
  for _, m in ipairs(mix) do
    r = r - m[1]
    if r <= 0 then
      local method, path, headers, body = m[2]()
      if headers.Host == nil then headers.Host = "galion.app" end
      return wrk.format(method, path, headers, body)
    end
  end
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local keys = {}
  for status in pairs(total) do table.insert(keys, status) end
  table.sort(keys)
  io.write(string.format("requests %d in %.0f s (%.0f/s); responses by status:",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6)))
  for _, status in ipairs(keys) do io.write(string.format(" %d=%d", status, total[status])) end
  local e = summary.errors
  io.write(string.format("\nsocket errors: connect %d, read %d, write %d, timeout %d\n",
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format("latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
