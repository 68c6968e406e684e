-- A consumer takes the next message, and records that it holds it, in one atomic step.
--
-- Kombu pops with BRPOP and records the message as unacknowledged in a second command:
-- a worker killed between the two loses the message for good. Here both happen at once.
--
-- KEYS[1..n]   the queue lists to pop from, in order (every queue's highest priority
--              list first, as kombu's BRPOP orders them)
-- KEYS[n+1]    HASH unacked: delivery tag -> JSON [message, exchange, routing key]
-- KEYS[n+2]    ZSET unacked_index: delivery tag -> time taken
-- KEYS[n+3]    HASH unacked_owner: delivery tag -> consumer id
-- KEYS[n+4..]  the doorbell lists of the queues (cleared when every list is empty)
-- ARGV[1]      n
-- ARGV[2]      now (unix seconds)
-- ARGV[3]      consumer id
-- returns      {index of the list popped (1-based), message}, or nil when all are empty

local n = tonumber(ARGV[1])
for i = 1, n do
  local raw = redis.call('RPOP', KEYS[i])
  if raw then
    local properties = cjson.decode(raw)['properties']
    local tag = properties['delivery_tag']
    local info = properties['delivery_info'] or {}
    local held = '[' .. raw .. ',' .. cjson.encode(info['exchange'] or '') .. ','
      .. cjson.encode(info['routing_key'] or '') .. ']'
    redis.call('HSET', KEYS[n + 1], tag, held)
    redis.call('ZADD', KEYS[n + 2], tonumber(ARGV[2]), tag)
    redis.call('HSET', KEYS[n + 3], tag, ARGV[3])
    return {i, raw}
  end
end
for i = n + 4, #KEYS do redis.call('DEL', KEYS[i]) end
return nil
