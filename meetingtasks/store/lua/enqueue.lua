-- Put one task message on its queue (or in the delay store) with its first status.
-- One command for what is otherwise ten: the cost of a send is mostly its commands.
--
-- KEYS[1]  HASH   status of the task
-- KEYS[2]  HASH   cluster-wide counters
-- KEYS[3]  LIST   the queue list at the message's priority   (sent now)
-- KEYS[4]  LIST   the queue's doorbell                       (sent now)
-- KEYS[5]  ZSET   delayed task ids by due time                (sent for later)
-- KEYS[6]  HASH   delayed task entries                        (sent for later)
-- ARGV[1]  task id
-- ARGV[2]  the kombu message
-- ARGV[3]  due time (unix seconds), or '' to queue now
-- ARGV[4]  delayed entry: JSON [list key, message, status key, doorbell key], or ''
-- ARGV[5]  first status ('queued' or 'scheduled'), or '' for a retry (its status stays)
-- ARGV[6]  now (unix seconds)
-- ARGV[7]  status TTL (seconds)
-- ARGV[8]  most tokens a doorbell keeps
-- ARGV[9..] the status record's fields, as field, value pairs (type and priority first)
-- returns  1

if ARGV[5] ~= '' then
  redis.call('DEL', KEYS[1])  -- a task sent anew (dead-letter requeue) starts afresh
  redis.call('HSET', KEYS[1], 'status', ARGV[5], 'created_at', ARGV[6], unpack(ARGV, 9))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
  redis.call('HINCRBY', KEYS[2], 'dispatched', 1)
  redis.call('HINCRBY', KEYS[2], 'type:' .. ARGV[10] .. ':dispatched', 1)
  redis.call('HINCRBY', KEYS[2], 'priority:' .. ARGV[12] .. ':dispatched', 1)
end
if ARGV[3] == '' then
  redis.call('LPUSH', KEYS[3], ARGV[2])
  redis.call('LPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[8]) - 1)
else
  redis.call('HSET', KEYS[6], ARGV[1], ARGV[4])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[3]), ARGV[1])
end
return 1
