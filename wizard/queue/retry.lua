-- retry.lua: hand a task back for another attempt, fenced like finish.lua.
-- If the attempts are used up, dead-letter it instead. Used by a worker
-- (timeout, grace period over) and by the reaper for a lost worker (with
-- the owner and attempt it saw).
--
-- KEYS[1] task hash (task:<id>)
-- KEYS[2] processing list of the lease holder
-- KEYS[3] the queue (task_queue)
-- KEYS[4] the delayed set (task_queue:delayed)
-- KEYS[5] the dead-letter list (dead_letter_queue)
-- KEYS[6] the node's counters (stats:node:<node>)
-- ARGV[1] worker_id        the lease holder
-- ARGV[2] attempt          the fencing token
-- ARGV[3] task_id          the task's id
-- ARGV[4] reason           why it is handed back (worker_lost, timeout, ...)
-- ARGV[5] error            a sentence saying what happened
-- ARGV[6] max_attempts     attempts before dead-lettering
-- ARGV[7] due              when to run again, Unix seconds (0 = front of the queue now)
-- ARGV[8] now              Unix seconds, the dead letter's finished_at
-- ARGV[9] dead_letter_ttl  how long a dead letter stays readable, seconds
-- ARGV[10] only_if_expired 1 for the reaper: act only if the lease has run
--                          out by Valkey's clock when this runs, 0 for the holder
-- ARGV[11] count_attempt   1: this attempt counts toward max_attempts; 0: it
--                          does not (the reaper's, for a lease that ran out while
--                          Valkey was unreachable: not the task's fault). It is
--                          added to the hash's outage_attempts instead; attempts
--                          itself never goes down (it is the fencing token).
--
-- Returns 'retry', 'dead', 'fenced' (caller lost the lease), 'gone' (the
-- task expired) or 'renewed' (the reaper's view is stale: the holder
-- renewed its lease since the reaper looked, e.g. while this call waited
-- out a CLIENT PAUSE).
local worker_id, attempt, task_id = ARGV[1], ARGV[2], ARGV[3]
local reason, error_text = ARGV[4], ARGV[5]
local max_attempts, due, now = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local dead_letter_ttl, only_if_expired = tonumber(ARGV[9]), ARGV[10]
local count_attempt = ARGV[11]
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'attempts', 'operation',
  'lease_expires', 'outage_attempts')
if only_if_expired == '1' and f[5] then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if tonumber(f[5]) >= now_ms then
    return 'renewed'
  end
end
redis.call('LREM', KEYS[2], 1, task_id)
if not f[1] then
  return 'gone'
end
if f[1] ~= 'running' or f[2] ~= worker_id or f[3] ~= attempt then
  redis.call('HINCRBY', KEYS[6], 'fenced_writes', 1)
  return 'fenced'
end
local outages = tonumber(f[6] or '0')
if count_attempt == '0' then
  outages = outages + 1
  redis.call('HSET', KEYS[1], 'outage_attempts', outages)
end
if tonumber(f[3] or '0') - outages >= max_attempts then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'reason', reason,
    'error', error_text, 'finished_at', now, 'lease_owner', '')
  redis.call('HDEL', KEYS[1], 'lease_expires')
  redis.call('EXPIRE', KEYS[1], dead_letter_ttl)
  redis.call('LPUSH', KEYS[5], task_id)
  redis.call('HINCRBY', KEYS[6], 'failed:' .. f[4], 1)
  redis.call('HINCRBY', KEYS[6], 'dead_lettered', 1)
  return 'dead'
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'reason', reason,
  'error', error_text, 'lease_owner', '')
redis.call('HDEL', KEYS[1], 'lease_expires')
redis.call('HINCRBY', KEYS[6], 'retried', 1)
if tonumber(due) > 0 then
  redis.call('ZADD', KEYS[4], due, task_id)
else
  redis.call('RPUSH', KEYS[3], task_id)
end
return 'retry'
