-- discard.lua: remove a task from the dead-letter queue and delete its
-- hash, atomically.
--
-- KEYS[1] the dead-letter list (dead_letter_queue)
-- KEYS[2] task hash (task:<id>)
-- ARGV[1] task_id  the id to delete
--
-- Returns 1 if deleted, 0 if it was not in the dead-letter list.
local task_id = ARGV[1]
if redis.call('LREM', KEYS[1], 1, task_id) == 0 then
  return 0
end
redis.call('DEL', KEYS[2])
return 1
