-- release.lua: give back tasks a worker claimed but never started (the rest
-- of a batch when it is asked to stop), as if it had never taken them:
-- status pending, the attempt it used given back, to the front of the
-- queue. Fenced like step.lua: a task whose lease the worker lost is left
-- alone.
--
-- KEYS[1] processing list of the worker (task_queue:processing:<worker>)
-- KEYS[2] the queue (task_queue)
-- ARGV[1] worker_id    the lease holder
-- ARGV[2] claims       JSON list of [task_id, attempt]
-- ARGV[3] task_prefix  prefix of task hashes ("task:")
--
-- Returns how many tasks went back to the queue.
local worker_id, claims, task_prefix = ARGV[1], cjson.decode(ARGV[2]), ARGV[3]
local released = 0
-- Last first, so the oldest ends at the front of the queue again.
for i = #claims, 1, -1 do
  local id, attempt = claims[i][1], claims[i][2]
  local key = task_prefix .. id
  local f = redis.call('HMGET', key, 'status', 'lease_owner', 'attempts')
  if f[1] == 'running' and f[2] == worker_id and f[3] == attempt then
    redis.call('HSET', key, 'status', 'pending', 'attempts', tonumber(attempt) - 1,
      'lease_owner', '')
    redis.call('HDEL', key, 'lease_expires', 'handled_by', 'started_at')
    redis.call('LREM', KEYS[1], 1, id)
    redis.call('RPUSH', KEYS[2], id)
    released = released + 1
  end
end
return released
