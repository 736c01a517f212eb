-- POST /v1/taps batches for bench/wrk.py: every tap id is new (thread index and a
-- per-thread counter above `id_base`), on the given tags in turn; `at` defaults to now.
--
-- args: tags(comma-separated) batch id_base; the ingest key in BENCH_API_KEY

package.path = string.match(debug.getinfo(1, "S").source, "^@(.*/)") .. "?.lua;" .. package.path
require("common")

local cfg = {}
local sent = 0

function init(args)
  cfg.headers = {["X-Api-Key"] = os.getenv("BENCH_API_KEY"), ["Content-Type"] = "application/json"}
  cfg.tags = {}
  for tag in string.gmatch(args[1], "%d+") do table.insert(cfg.tags, tag) end
  cfg.batch, cfg.id_base = tonumber(args[2]), tonumber(args[3])
end

function request()
  -- ids: id_base + index * 1e12 + batch number * batch + position, exact in a double
  local first = cfg.id_base + index * 1e12 + sent * cfg.batch
  sent = sent + 1
  local items = {}
  for i = 1, cfg.batch do
    local tag = cfg.tags[(first + i) % #cfg.tags + 1]
    items[i] = string.format('{"id":%.0f,"tag":%s}', first + i, tag)
  end
  return wrk.format("POST", "/v1/taps", cfg.headers, "[" .. table.concat(items, ",") .. "]")
end
