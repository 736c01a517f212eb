-- Analytics requests for bench/wrk.py. Unless `fixed`, every request asks for another
-- range, so no result cache can answer it: request k starts (k mod 365) days after
-- `base`, plus 15 minutes for each full cycle (on the rollup's grid); threads interleave
-- k, so ranges stay distinct across threads. Dates (end inclusive) while on whole days,
-- then UTC instants (end exclusive).
--
-- args: method path interval tz base(epoch s) days extra stride limit fixed threads;
-- the key in BENCH_API_KEY

package.path = string.match(debug.getinfo(1, "S").source, "^@(.*/)") .. "?.lua;" .. package.path
require("common")

local cfg = {}
local sent = 0

function init(args)
  cfg.method, cfg.path, cfg.interval, cfg.tz = args[1], args[2], args[3], args[4]
  cfg.base, cfg.days, cfg.extra = tonumber(args[5]), tonumber(args[6]), args[7]
  cfg.stride, limit, cfg.fixed = tonumber(args[8]), tonumber(args[9]), args[10] == "1"
  cfg.threads = tonumber(args[11])
  cfg.headers = {["X-Api-Key"] = os.getenv("BENCH_API_KEY"), ["Content-Type"] = "application/json"}
end

local function range(k)
  local shift = math.floor(k / 365) * 900
  local start = cfg.base + (k % 365) * 86400 + shift
  if shift == 0 then
    return os.date("!%Y-%m-%d", start), os.date("!%Y-%m-%d", start + (cfg.days - 1) * 86400)
  end
  return os.date("!%Y-%m-%dT%H:%M:00Z", start), os.date("!%Y-%m-%dT%H:%M:00Z", start + cfg.days * 86400)
end

function request()
  local k = 0
  if not cfg.fixed then
    k = (index + cfg.threads * sent) * cfg.stride
  end
  sent = sent + 1
  local first, last = range(k)
  if cfg.method == "POST" then
    local tz = ""
    if cfg.tz ~= "UTC" then tz = ',"tz":"' .. cfg.tz .. '"' end
    local body = string.format('{"startDate":"%s","endDate":"%s","interval":"%s"%s}',
      first, last, cfg.interval, tz)
    return wrk.format("POST", cfg.path, cfg.headers, body)
  end
  local path = string.format("%s?interval=%s&start=%s&end=%s&tz=%s%s",
    cfg.path, cfg.interval, first, last, cfg.tz, cfg.extra)
  return wrk.format("GET", path, cfg.headers)
end
