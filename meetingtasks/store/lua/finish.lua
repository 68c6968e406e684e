-- A task changed status after it ran: retrying, or a terminal status. Counts it and
-- tells whoever waits, once: a terminal status never changes again.
--
-- KEYS[1]  HASH   status of the task
-- KEYS[2]  ZSET   deadlines of running tasks
-- KEYS[3]  SET    active task ids
-- KEYS[4]  HASH   cluster-wide counters
-- ARGV[1]  task id
-- ARGV[2]  new status (retrying, completed, failed, timeout, cancelled)
-- ARGV[3]  now (unix seconds)
-- ARGV[4]  status TTL (seconds)
-- ARGV[5]  error text, or ''
-- ARGV[6]  channel of the dispatcher waiting on it, or ''
-- ARGV[7]  message for that channel
-- ARGV[8]  channel of the client session that submitted it, or ''
-- ARGV[9]  frame for that channel
-- returns  1 if the status changed, 0 if it was already terminal

local current = redis.call('HGET', KEYS[1], 'status')
if current == 'completed' or current == 'failed' or current == 'timeout' or current == 'cancelled' then
  return 0
end
local status = ARGV[2]
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
