-- finish.lua: record an outcome, fenced by lease owner + attempt. One atomic
-- step: the outcome, status, finish time, expiry, removal from the
-- processing list, counters and the duration histogram.
--
-- KEYS[1] task hash (task:<id>)
-- KEYS[2] processing list of the worker (task_queue:processing:<worker>)
-- KEYS[3] the node's counters (stats:node:<node>)
-- KEYS[4] the node's duration histogram (stats:duration:<node>)
-- ARGV[1] worker_id    the lease holder
-- ARGV[2] attempt      the fencing token (the attempts value of the claim)
-- ARGV[3] status       'complete' or 'failed'
-- ARGV[4] field        'result' or 'error'
-- ARGV[5] value        the result (JSON) or the error text
-- ARGV[6] finished_at  Unix seconds
-- ARGV[7] ttl_seconds  how long the task stays readable
-- ARGV[8] task_id      the task's id
-- ARGV[9] bucket       the histogram bucket ("le" bound, ms, or "+Inf")
-- ARGV[10] duration_ms time the worker spent on it, milliseconds
--
-- Returns 1 if written (or already written by this same attempt), 0 if
-- refused because the caller no longer holds the lease.
local worker_id, attempt, status = ARGV[1], ARGV[2], ARGV[3]
local field, value, finished_at = ARGV[4], ARGV[5], ARGV[6]
local ttl_seconds, task_id = tonumber(ARGV[7]), ARGV[8]
local bucket, duration_ms = ARGV[9], ARGV[10]
redis.call('LREM', KEYS[2], 1, task_id)
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'attempts', 'operation',
  'handled_by')
if f[1] == status and f[5] == worker_id and f[3] == attempt then
  -- Our own write, repeated because its reply was lost: already done.
  return 1
end
if f[1] ~= 'running' or f[2] ~= worker_id or f[3] ~= attempt then
  redis.call('HINCRBY', KEYS[3], 'fenced_writes', 1)
  return 0
end
-- An earlier attempt's error and reason do not describe this outcome.
redis.call('HDEL', KEYS[1], 'lease_expires', 'error', 'reason')
redis.call('HSET', KEYS[1], 'status', status, field, value,
  'finished_at', finished_at, 'lease_owner', '')
redis.call('EXPIRE', KEYS[1], ttl_seconds)
redis.call('HINCRBY', KEYS[3], status .. ':' .. f[4], 1)
redis.call('HINCRBY', KEYS[4], f[4] .. '|' .. bucket, 1)
redis.call('HINCRBYFLOAT', KEYS[4], f[4] .. '|sum', duration_ms)
return 1
