-- unclaim.lua: move an id that was never claimed out of a processing list,
-- atomically: a pending task goes back to the front of the queue, a
-- vanished or ended one is only dropped, and one claimed meanwhile
-- (running) is left where it is.
--
-- KEYS[1] processing list (task_queue:processing:<worker>)
-- KEYS[2] task hash (task:<id>)
-- KEYS[3] the queue (task_queue)
-- ARGV[1] task_id  the id to move
--
-- Returns 1 if requeued, else 0.
local task_id = ARGV[1]
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'running' then
  return 0
end
if redis.call('LREM', KEYS[1], 1, task_id) == 0 then
  return 0
end
if status == 'pending' then
  redis.call('RPUSH', KEYS[3], task_id)
  return 1
end
return 0
