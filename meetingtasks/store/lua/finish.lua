-- A task's run ended (or will be retried): store Celery's result and move our status,
-- in one step, in the task's one record. Counts it and tells whoever waits, once: a
-- terminal status never changes again, and neither does its result.
--
-- KEYS[1]  HASH   the task's record: status, ids, times, and its result's fields
-- KEYS[2]  ZSET   deadlines of running tasks
-- KEYS[3]  HASH   cluster-wide counters, field "<event>:<priority>:<type>"
-- KEYS[4]  HASH   where the worker holds the run's message (Keys.held), or KEYS[1] when
--                 there is none to release
-- KEYS[5]  STRING Celery's result key of the task, where a foreign producer's client
--                 reads its result (docs/wire.md), or KEYS[1]
-- ARGV[1]  task id
-- ARGV[2]  new status (retrying, completed, failed, timeout, cancelled), or '' to only
--          store the result
-- ARGV[3]  now (unix seconds)
-- ARGV[4]  seconds the record is kept from now: the status TTL while the task is not
--          over, its retention once it is (policies/retention.py)
-- ARGV[5]  error text, or ''
-- ARGV[6]  channel of the dispatcher waiting on it, or ''
-- ARGV[7]  message for that channel
-- ARGV[8]  channel of the client session that submitted it, or ''
-- ARGV[9]  frame for that channel
-- ARGV[10] delivery tag of the message of this run, or '': the run is over, so the
--          message is acknowledged here, with its result (no duplicate after success)
-- ARGV[11] channel where Celery's AsyncResult.get() waits for this result, or '' when
--          the result is not stored
-- ARGV[12] Celery's meta of the result, published there
-- ARGV[13] what the task is counted under ("<priority>:<type>", store/queueing.py), or ''
--          to read them from its record
-- ARGV[14] '1' to also store the result under KEYS[5] as Celery's Redis backend does,
--          kept as long as the record, or ''
-- ARGV[15...] the result's fields, field, value pairs (celery_ext/result_record.py);
--          they replace those of any earlier result (base/record.py RESULT_FIELDS)
-- returns  1 if the status changed (or the result was stored), 0 if it was already over

-- Releasing the message comes first: a write that frees memory, so Redis at its
-- maxmemory (which refuses a script only at a first write that grows memory) still
-- records a run's end, and workers drain a full Redis.
local status = ARGV[2]
if ARGV[10] ~= '' and status ~= '' then redis.call('HDEL', KEYS[4], ARGV[10]) end
local current, task_type, priority = unpack(redis.call('HMGET', KEYS[1], F.status, F.type, F.priority))
if current == 'completed' or current == 'failed' or current == 'timeout' or current == 'cancelled' then
  return 0  -- a lost worker's late report never overwrites how the task ended
end
local stored = ARGV[11] ~= ''
if stored then
  redis.call('HDEL', KEYS[1], F.result, F.state, F.traceback, F.children, F.meta)
end
if status == '' then
  if not stored then return 0 end
  redis.call('HSET', KEYS[1], unpack(ARGV, 15, #ARGV))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  if ARGV[14] == '1' then redis.call('SET', KEYS[5], ARGV[12], 'EX', tonumber(ARGV[4])) end
  redis.call('PUBLISH', ARGV[11], ARGV[12])
  return 1
end

local fields = {F.status, status, F.updated_at, ARGV[3]}
if ARGV[5] ~= '' then fields[#fields + 1] = F.error; fields[#fields + 1] = ARGV[5] end
if stored then
  for f = 15, #ARGV do fields[#fields + 1] = ARGV[f] end
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZREM', KEYS[2], ARGV[1])
if stored then
  if ARGV[14] == '1' then redis.call('SET', KEYS[5], ARGV[12], 'EX', tonumber(ARGV[4])) end
  redis.call('PUBLISH', ARGV[11], ARGV[12])
end

local event = status
if status == 'retrying' then event = 'retried' end
local counted = ARGV[13]
if counted == '' and task_type then counted = (priority or '') .. ':' .. task_type end
if counted ~= '' then redis.call('HINCRBY', KEYS[3], event .. ':' .. counted, 1) end

if status ~= 'retrying' and ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
if ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
return 1
