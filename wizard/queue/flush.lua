-- flush.lua: add a worker's counts of the last second to its node's
-- counters and duration histogram, in one command. Workers keep these in
-- memory (wizard.metrics.Tally) rather than writing them with every task.
--
-- KEYS[1] the node's counters (stats:node:<node>)
-- KEYS[2] the node's duration histogram (stats:duration:<node>)
-- ARGV[1] counts     JSON object field -> whole number to add to KEYS[1]
-- ARGV[2] buckets    JSON object field -> whole number to add to KEYS[2]
-- ARGV[3] sums       JSON object field -> milliseconds to add to KEYS[2]
--
-- Returns the number of fields changed.
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
