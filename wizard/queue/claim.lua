-- claim.lua: claim the task a worker just moved to the head of its
-- processing list (or, for the BRPOP consumer, which has no list, the id in
-- task_id): status running, attempts + 1, a lease.
--
-- An id whose task is gone or already ended is a stale duplicate and leaves
-- the list; a running one is left for the reaper to judge. The task key is
-- built from the id inside the script, which a single Valkey allows (Valkey
-- Cluster would not). started_at is Valkey's clock at the claim (the worker
-- may have sent this script long before, waiting on BLMOVE in the same
-- pipeline).
--
-- KEYS[1] processing list (task_queue:processing:<worker>)
-- ARGV[1] worker_id    the claiming worker
-- ARGV[2] lease_ms     lease length, milliseconds
-- ARGV[3] task_prefix  prefix of task hashes ("task:")
-- ARGV[4] task_id      the id to claim; '' = the head of the list
--
-- Returns {id, attempt, operation, a, b}, or false if there is nothing
-- pending to claim.
local worker_id, lease_ms, task_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local id = ARGV[4]
if id == '' then
  id = redis.call('LINDEX', KEYS[1], 0)
  if not id then
    return false
  end
end
local key = task_prefix .. id
local f = redis.call('HMGET', key, 'status', 'operation', 'a', 'b')
if f[1] ~= 'pending' then
  if f[1] ~= 'running' then
    redis.call('LREM', KEYS[1], 1, id)
  end
  return false
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local attempt = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'status', 'running', 'handled_by', worker_id,
  'lease_owner', worker_id, 'lease_expires', now_ms + lease_ms,
  'started_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return {id, attempt, f[2], f[3], f[4]}
