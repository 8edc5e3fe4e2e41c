-- scheduler_lock.lua: renew the scheduler's lock only if we still hold it.
--
-- KEYS[1] the lock (scheduler:lock), holding the leader's node id
-- ARGV[1] owner   this node's id
-- ARGV[2] ttl_ms  the lock's new lifetime, milliseconds
--
-- Returns 1 if renewed, 0 if another node holds it (or nobody does).
local owner, ttl_ms = ARGV[1], ARGV[2]
if redis.call('GET', KEYS[1]) == owner then
  return redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return 0
