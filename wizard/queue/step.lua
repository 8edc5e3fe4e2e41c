-- step.lua: one round trip of a worker's loop. First record the outcomes of
-- the tasks it ran (each fenced by lease owner + attempt), then claim up to
-- `take` new ones. A worker that is busy sends this one script per task (or
-- per batch) and nothing else; only when the queue is empty does it fall
-- back to BLMOVE followed by this script with first = 'head'.
--
-- Recording one outcome: drop the id from the processing list, check the
-- fence, write status + result (or error) + finished_at, set the expiry.
-- lease_expires is left as it was: it means nothing once status is not
-- running (the reaper only reads it for running tasks).
--
-- Claiming one id: it is moved from the queue into the processing list in
-- the same atomic step (reliable-queue pattern, LMOVE; RPOP + LPUSH for a
-- batch), then status running, attempts + 1, a lease (owner + expiry in
-- Valkey's milliseconds). An id whose task is gone or already ended is a
-- stale duplicate and leaves the list; a running one is left for the
-- reaper to judge. Task keys are built here from the ids, which a single
-- Valkey allows (Valkey Cluster would not).
--
-- KEYS[1] processing list of the worker (task_queue:processing:<worker>)
-- KEYS[2] the queue (task_queue)
-- KEYS[3] the node's counters (stats:node:<node>), for fenced_writes
-- ARGV[1] worker_id    the worker (lease holder of what it records)
-- ARGV[2] outcomes     JSON list of [task_id, attempt, status, field, value]:
--                      status 'complete' or 'failed', field 'result' or
--                      'error', value the result (JSON) or the error text
-- ARGV[3] finished_at  Unix seconds, for every outcome
-- ARGV[4] ttl_seconds  how long a finished task stays readable
-- ARGV[5] take         claim at most this many tasks after recording (0: none)
-- ARGV[6] first        '' or 'head': claim the head of the processing list
--                      first (BLMOVE just put an id there), or a task id
--                      (the BRPOP consumer, which has no list)
-- ARGV[7] lease_ms     lease length, milliseconds
-- ARGV[8] now_us       Valkey's clock as the worker tracks it, microseconds;
--                      '' = read TIME here (the claim may run long after the
--                      worker sent it, behind a blocking BLMOVE)
-- ARGV[9] task_prefix  prefix of task hashes ("task:")
--
-- Returns {written, claims}: written holds 1 (recorded, or already
-- recorded by this same attempt) or 0 (refused: the lease was lost) per
-- outcome; claims is flat: id, attempt, operation, a, b for each claim.
local processing, task_queue, stats = KEYS[1], KEYS[2], KEYS[3]
local worker_id, outcomes = ARGV[1], cjson.decode(ARGV[2])
local finished_at, ttl_seconds = ARGV[3], tonumber(ARGV[4])
local take, first, lease_ms = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local now_us, task_prefix = ARGV[8], ARGV[9]

local written = {}
for i, o in ipairs(outcomes) do
  local id, attempt, status, field, value = o[1], o[2], o[3], o[4], o[5]
  local key = task_prefix .. id
  redis.call('LREM', processing, 1, id)
  local f = redis.call('HMGET', key, 'status', 'lease_owner', 'attempts', 'handled_by',
    'error', 'reason')
  if f[1] == status and f[4] == worker_id and f[3] == attempt then
    -- Our own write, repeated because its reply was lost: already done.
    written[i] = 1
  elseif f[1] ~= 'running' or f[2] ~= worker_id or f[3] ~= attempt then
    redis.call('HINCRBY', stats, 'fenced_writes', 1)
    written[i] = 0
  else
    if f[5] or f[6] then
      -- An earlier attempt's error and reason do not describe this outcome.
      redis.call('HDEL', key, 'error', 'reason')
    end
    redis.call('HSET', key, 'status', status, field, value,
      'finished_at', finished_at, 'lease_owner', '')
    redis.call('EXPIRE', key, ttl_seconds)
    written[i] = 1
  end
end

local ids = {}
if first == 'head' then
  local head = redis.call('LINDEX', processing, 0)
  if head then
    ids[1] = head
  end
elseif first ~= '' then
  ids[1] = first
end
local wanted = take - #ids
if wanted == 1 then
  local id = redis.call('LMOVE', task_queue, processing, 'RIGHT', 'LEFT')
  if id then
    ids[#ids + 1] = id
  end
elseif wanted > 1 then
  local popped = redis.call('RPOP', task_queue, wanted)
  if popped then
    redis.call('LPUSH', processing, unpack(popped))
    for _, id in ipairs(popped) do
      ids[#ids + 1] = id
    end
  end
end

local claims = {}
for _, id in ipairs(ids) do
  local key = task_prefix .. id
  local f = redis.call('HMGET', key, 'status', 'attempts', 'operation', 'a', 'b')
  if f[1] == 'pending' then
    if now_us == '' then
      local t = redis.call('TIME')
      now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    local seconds, micros = math.floor(now_us / 1000000), now_us % 1000000
    local attempt = tonumber(f[2] or '0') + 1
    redis.call('HSET', key, 'status', 'running', 'attempts', attempt,
      'handled_by', worker_id, 'lease_owner', worker_id,
      'lease_expires', string.format('%d', math.floor(now_us / 1000) + lease_ms),
      'started_at', string.format('%d.%06d', seconds, micros))
    local n = #claims
    claims[n + 1], claims[n + 2], claims[n + 3] = id, attempt, f[3]
    claims[n + 4], claims[n + 5] = f[4], f[5]
  elseif f[1] ~= 'running' then
    redis.call('LREM', processing, 1, id)
  end
end
return {written, claims}
