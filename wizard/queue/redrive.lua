-- redrive.lua: take a task out of the dead-letter queue and enqueue it
-- afresh, with its attempts reset and no expiry.
--
-- KEYS[1] the dead-letter list (dead_letter_queue)
-- KEYS[2] task hash (task:<id>)
-- KEYS[3] the queue (task_queue)
-- ARGV[1] task_id  the id to redrive
--
-- Returns 1 if enqueued, 0 if it was not in the dead-letter list (or its
-- hash expired).
local task_id = ARGV[1]
if redis.call('LREM', KEYS[1], 1, task_id) == 0 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'status', 'pending', 'attempts', 0)
redis.call('HDEL', KEYS[2], 'reason', 'error', 'finished_at', 'started_at', 'handled_by',
  'outage_attempts')
redis.call('PERSIST', KEYS[2])
redis.call('LPUSH', KEYS[3], task_id)
return 1
