-- promote.lua: move due ids from the delayed set to the front of the
-- queue, atomically.
--
-- KEYS[1] the delayed set (task_queue:delayed), scored by due time
-- KEYS[2] the queue (task_queue)
-- ARGV[1] now    Unix seconds; ids due at or before it move
-- ARGV[2] limit  most ids to move in one run
--
-- Returns how many moved.
local now, limit = ARGV[1], tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('RPUSH', KEYS[2], id)
end
return #due
