-- renew.lua: extend a lease, only for its current holder and attempt.
--
-- KEYS[1] task hash (task:<id>)
-- ARGV[1] worker_id  the lease holder
-- ARGV[2] attempt    the fencing token (the attempts value of the claim)
-- ARGV[3] lease_ms   new lease length from now, milliseconds
--
-- Returns 1 if renewed, 0 if the lease is not the caller's any more.
local worker_id, attempt, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'attempts')
if f[1] ~= 'running' or f[2] ~= worker_id or f[3] ~= attempt then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease_expires', now_ms + lease_ms)
return 1
