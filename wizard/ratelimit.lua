-- ratelimit.lua: GCRA, the Generic Cell Rate Algorithm (ITU-T I.371), one
-- atomic check-and-record per request, in Valkey's clock.
--
-- KEYS[1] the client's key (ratelimit:<client>): its theoretical arrival time, ms
-- ARGV[1] interval_ms   emission interval, milliseconds (1000 / rate)
-- ARGV[2] tolerance_ms  burst tolerance, milliseconds (interval * (burst - 1))
--
-- Returns {wait, remaining, reset}: wait is 0 if the request is allowed (and
-- recorded), else the milliseconds until it would be; remaining is how many
-- more requests would pass now; reset is the milliseconds until the whole
-- burst is available again (for the RateLimit response headers).
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local allowed_at = tat - tolerance
if now < allowed_at then
  return {math.ceil(allowed_at - now), 0, math.ceil(tat - now)}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now))
local remaining = math.floor((now + tolerance - next_tat) / interval) + 1
return {0, math.max(remaining, 0), math.ceil(next_tat - now)}
