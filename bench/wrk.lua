-- wrk script for bench/load.sh.
-- WRK_ABS_URL set: the request line carries that absolute URI, as an
-- HTTP_PROXY client sends it to a forward proxy; WRK_HOST is the Host header.
-- At the end one machine-readable RESULT line is printed.
local abs = os.getenv("WRK_ABS_URL")
if abs and abs ~= "" then
  wrk.path = abs
  wrk.headers["Host"] = os.getenv("WRK_HOST")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
