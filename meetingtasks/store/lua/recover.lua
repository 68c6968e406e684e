-- Give messages a consumer holds back to the front of their queue, atomically, each only
-- if that consumer still holds it exactly as read: any number of recoverers (every
-- worker runs one) may race on the same messages and each is given back once.
--
-- KEYS[1]        HASH the consumer's held messages of one queue: delivery tag -> message
-- then, for each message, in the order of ARGV:
--   KEYS[2i]       LIST the queue list at the message's priority
--   KEYS[2i + 1]   LIST that queue's doorbell
-- ARGV[1]        most tokens a doorbell keeps
-- then, for each message i = 1..n: delivery tag, the held entry as read, the message to
-- queue (the held one marked redelivered)
-- returns        the number of messages given back
--
-- Consumers pop from the right (RPOP), so RPUSH puts a message at the front of its list:
-- work a dead worker took is the next to run, as kombu's own restore does.

local most = tonumber(ARGV[1])
local given = 0
local i = 0
for a = 2, #ARGV, 3 do
  i = i + 1
  local tag, held, message = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if redis.call('HGET', KEYS[1], tag) == held then
    local list, bell = KEYS[2 * i], KEYS[2 * i + 1]
    redis.call('RPUSH', list, message)
    if redis.call('LPUSH', bell, 1) > most then redis.call('LTRIM', bell, 0, most - 1) end
    redis.call('HDEL', KEYS[1], tag)
    given = given + 1
  end
end
return given
