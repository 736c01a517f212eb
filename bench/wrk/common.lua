-- Shared by the benchmark's wrk scripts: per-thread response counting, non-2xx
-- bookkeeping and one JSON line of results at the end (parsed by bench/wrk.py).
-- wrk runs each thread in its own Lua state: setup() and done() run in the main state
-- and read the threads' globals with thread:get().

local threads = {}
responses, non2xx, first_bad, limit = 0, 0, "", 0

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
  if limit > 0 and responses == limit then
    -- wrk's main thread sleeps for the whole --duration whatever the threads do;
    -- bench/wrk.py interrupts it (SIGINT) once every thread has said this.
    io.write("BENCH_LIMIT\n")
    io.flush()
    wrk.thread:stop()
  end
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

function done(summary, latency, requests)
  local total, bad, sample = 0, 0, ""
  for _, thread in ipairs(threads) do
    total = total + thread:get("responses")
    bad = bad + thread:get("non2xx")
    if sample == "" then sample = thread:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"responses":%d,"non2xx":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p95":%d,"p99":%d},' ..
    '"first_bad":%s}\n',
    summary.requests, summary.duration, total, bad,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    json_string(sample)))
end
