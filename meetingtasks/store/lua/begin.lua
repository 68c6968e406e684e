-- A worker is about to run a task: refuse it if cancelled or already over, else mark it
-- processing. One round trip replaces a cancellation check and a status write.
--
-- KEYS[1]  STRING cancelled tombstone of the task
-- KEYS[2]  HASH   status of the task
-- KEYS[3]  ZSET   deadlines of running tasks
-- KEYS[4]  SET    active task ids
-- ARGV[1]  task id
-- ARGV[2]  now (unix seconds)
-- ARGV[3]  deadline (unix seconds) past which the monitor declares a timeout, or ''
-- ARGV[4]  attempt number (1 for the first run)
-- ARGV[5]  worker name
-- ARGV[6]  status TTL (seconds)
-- returns  0 run it, 1 cancelled, 2 already in a terminal status (a redelivered duplicate)

if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local current = redis.call('HGET', KEYS[2], 'status')
if current == 'completed' or current == 'failed' or current == 'timeout' or current == 'cancelled' then
  return 2
end
redis.call('HSET', KEYS[2], 'status', 'processing', 'started_at', ARGV[2],
           'attempts', ARGV[4], 'worker', ARGV[5])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]) end
redis.call('SADD', KEYS[4], ARGV[1])
return 0
