-- flush.lua: add a worker's counts of the last second to its node's
-- counters and duration histogram, in one command. Workers keep these in
-- memory (wizard.metrics.Tally) rather than writing them with every task.
--
-- A flush whose reply was lost is sent again with the same token; the
-- token of the last one applied is kept for an hour, so a repeat adds
-- nothing (an idempotent write).
--
-- KEYS[1] the node's counters (stats:node:<node>)
-- KEYS[2] the node's duration histogram (stats:duration:<node>)
-- KEYS[3] the last applied token of this worker process (stats:flushed:<id>)
-- ARGV[1] counts     JSON object field -> whole number to add to KEYS[1]
-- ARGV[2] buckets    JSON object field -> whole number to add to KEYS[2]
-- ARGV[3] sums       JSON object field -> milliseconds to add to KEYS[2]
-- ARGV[4] token      this flush's id, the same when it is sent again
--
-- Returns the number of fields changed, or -1 if this token was applied.
if redis.call('GET', KEYS[3]) == ARGV[4] then
  return -1
end
redis.call('SET', KEYS[3], ARGV[4], 'EX', 3600)
local changed = 0
for field, n in pairs(cjson.decode(ARGV[1])) do
  redis.call('HINCRBY', KEYS[1], field, n)
  changed = changed + 1
end
for field, n in pairs(cjson.decode(ARGV[2])) do
  redis.call('HINCRBY', KEYS[2], field, n)
  changed = changed + 1
end
for field, ms in pairs(cjson.decode(ARGV[3])) do
  redis.call('HINCRBYFLOAT', KEYS[2], field, ms)
  changed = changed + 1
end
return changed
