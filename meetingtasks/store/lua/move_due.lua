-- Move delayed tasks that are due onto their queue lists, atomically.
--
-- KEYS[1]  ZSET delayed: task id -> due time
-- KEYS[2]  HASH delayed messages: task id -> JSON [list key, kombu message, status key,
--          doorbell list key]
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  most tasks to move in this call
-- ARGV[3]  most tokens a doorbell list keeps
-- returns  the number of tasks moved
--
-- The list and status keys inside each entry were computed by meetingtasks.keys when
-- the task was delayed (its queue and priority list); the message is pushed byte for
-- byte as kombu wrote it, and a task still 'scheduled' becomes 'queued' (a retry keeps
-- its 'retrying' until a worker takes it). Each task is removed from both structures in the same step it is queued,
-- so any number of scheduler loops may run this concurrently without moving one twice.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then
    local entry = cjson.decode(raw)
    redis.call('LPUSH', entry[1], entry[2])
    if entry[4] then
      if redis.call('LPUSH', entry[4], 1) > tonumber(ARGV[3]) then
        redis.call('LTRIM', entry[4], 0, tonumber(ARGV[3]) - 1)
      end
    end
    if entry[3] and redis.call('HGET', entry[3], 'status') == 'scheduled' then
      redis.call('HSET', entry[3], 'status', 'queued')
    end
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return moved
