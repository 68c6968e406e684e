-- A task's run ended (or will be retried): store Celery's result and move our status,
-- in one step. Counts it and tells whoever waits, once: a terminal status never
-- changes again, and neither does a result Celery recorded as SUCCESS.
--
-- KEYS[1]  HASH   status of the task
-- KEYS[2]  ZSET   deadlines of running tasks
-- KEYS[3]  SET    active task ids
-- KEYS[4]  HASH   cluster-wide counters
-- KEYS[5]  STRING Celery's result of the task (its result backend's key)
-- KEYS[6]  HASH   unacked: delivery tag -> message held by a worker
-- KEYS[7]  ZSET   unacked_index
-- KEYS[8]  HASH   unacked_owner
-- ARGV[1]  task id
-- ARGV[2]  new status (retrying, completed, failed, timeout, cancelled), or '' to only
--          store the result
-- ARGV[3]  now (unix seconds)
-- ARGV[4]  seconds the record is kept from now: the status TTL while the task is not
--          over, its retention once it is (policies/retention.py); the result too
-- ARGV[5]  error text, or ''
-- ARGV[6]  channel of the dispatcher waiting on it, or ''
-- ARGV[7]  message for that channel
-- ARGV[8]  channel of the client session that submitted it, or ''
-- ARGV[9]  frame for that channel
-- ARGV[10] Celery's encoded result meta, or '' when the result is not stored
-- ARGV[11] result expiry (seconds; 0: none)
-- ARGV[12] delivery tag of the message of this run, or '': the run is over, so the
--          message is acknowledged here, with its result (no duplicate after success)
-- returns  1 if the status changed (or the result was stored), 0 if it was already over

-- Releasing the message comes first: a write that frees memory, so Redis at its
-- maxmemory (which refuses a script only at a first write that grows memory) still
-- records a run's end, and workers drain a full Redis.
local status = ARGV[2]
if ARGV[12] ~= '' and status ~= '' then
  redis.call('HDEL', KEYS[6], ARGV[12])
  redis.call('ZREM', KEYS[7], ARGV[12])
  redis.call('HDEL', KEYS[8], ARGV[12])
end
local current = redis.call('HGET', KEYS[1], 'status')
if current == 'completed' or current == 'failed' or current == 'timeout' or current == 'cancelled' then
  if status ~= '' then return 0 end
end
if ARGV[10] ~= '' then
  -- Celery's own guard: a lost worker's late report never overwrites a success.
  local stored = redis.call('GET', KEYS[5])
  if stored then
    local ok, meta = pcall(cjson.decode, stored)
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
  end
  if tonumber(ARGV[11]) > 0 then
    redis.call('SET', KEYS[5], ARGV[10], 'EX', tonumber(ARGV[11]))
  else
    redis.call('SET', KEYS[5], ARGV[10])
  end
  redis.call('PUBLISH', KEYS[5], ARGV[10])
end
if status == '' then return 1 end

redis.call('HSET', KEYS[1], 'status', status, 'updated_at', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])

local event = status
if status == 'retrying' then event = 'retried' end
redis.call('HINCRBY', KEYS[4], event, 1)
local task_type = redis.call('HGET', KEYS[1], 'type')
if task_type then redis.call('HINCRBY', KEYS[4], 'type:' .. task_type .. ':' .. event, 1) end
local priority = redis.call('HGET', KEYS[1], 'priority')
if priority then redis.call('HINCRBY', KEYS[4], 'priority:' .. priority .. ':' .. event, 1) end

if status ~= 'retrying' and ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
if ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
return 1
