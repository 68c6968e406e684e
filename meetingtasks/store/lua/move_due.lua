-- Move delayed tasks that are due onto their queue lists, atomically, each only if it is
-- still delayed as it was read: any number of scheduler loops (every worker runs one)
-- may race on the same tasks and each is moved once.
--
-- KEYS[1]  ZSET delayed: task id -> due time
-- KEYS[2]  HASH delayed messages: task id -> JSON [list key, kombu message, status key,
--          doorbell list key]
-- then, for each task i = 1..n, in the order of ARGV:
--   KEYS[3i]      LIST the queue list at the task's priority
--   KEYS[3i + 1]  HASH the task's status
--   KEYS[3i + 2]  LIST that queue's doorbell
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  most tokens a doorbell list keeps
-- ARGV[3]  n
-- then, for each task: its id, its entry as read
-- then the ids read with no entry (removed from the set if they still have none)
-- returns  the number of tasks moved
--
-- The keys come from the entry, written when the task was delayed (base/keys.py);
-- the message is pushed byte for byte as kombu wrote it, and a task still 'scheduled'
-- becomes 'queued' (a retry keeps its 'retrying' until a worker takes it). A task delayed
-- anew meanwhile (a retry) has another entry or a later due time, and waits for it.

local now, most, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local moved = 0
for i = 1, n do
  local id, raw = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local score = tonumber(redis.call('ZSCORE', KEYS[1], id))
  if score and score <= now and redis.call('HGET', KEYS[2], id) == raw then
    local list, status, bell = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
    redis.call('LPUSH', list, cjson.decode(raw)[2])
    if redis.call('LPUSH', bell, 1) > most then redis.call('LTRIM', bell, 0, most - 1) end
    if redis.call('HGET', status, F.status) == 'scheduled' then
      redis.call('HSET', status, F.status, 'queued')
    end
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    moved = moved + 1
  end
end
for a = 4 + 2 * n, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[a]) == 0 then redis.call('ZREM', KEYS[1], ARGV[a]) end
end
return moved
