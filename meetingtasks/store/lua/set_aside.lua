-- Set a message that can never become a task aside on the malformed list, taking it from
-- where it was: held by a worker (it was fetched), or the landing list of a queue's inbox.
-- Only the caller that removes it pushes it, so recoverers racing on one message, or a
-- fetch and a recoverer, set it aside once.
--
-- KEYS[1]  LIST malformed: entries "<JSON header>\n<raw message>", newest first
-- KEYS[2]  HASH unacked: delivery tag -> message held by a worker
-- KEYS[3]  ZSET unacked_index
-- KEYS[4]  HASH unacked_owner
-- KEYS[5]  LIST the landing list it came from, or the malformed list again (not from one)
-- ARGV[1]  the entry's JSON header (reason, source, time, task id; store/malformed.py)
-- ARGV[2]  the raw message, as it was found
-- ARGV[3]  its delivery tag when it is held, or ''
-- ARGV[4]  '1' when it came from the landing list KEYS[5] (removed by value), else ''
-- ARGV[5]  most entries the malformed list keeps
-- returns  1 if this call set it aside, 0 if someone else had taken it

local tag, landed = ARGV[3], ARGV[4] == '1'
if tag ~= '' then
  if redis.call('HDEL', KEYS[2], tag) == 0 and not landed then return 0 end
  redis.call('ZREM', KEYS[3], tag)
  redis.call('HDEL', KEYS[4], tag)
end
if landed and redis.call('LREM', KEYS[5], 1, ARGV[2]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1] .. '\n' .. ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[5]) - 1)
return 1
