-- Set a message that can never become a task aside on the malformed list, taking it from
-- where it was: held by a worker (it was fetched), or the landing list of a queue's inbox.
-- Only the caller that removes it pushes it, so recoverers racing on one message, or a
-- fetch and a recoverer, set it aside once.
--
-- KEYS[1]  LIST malformed: entries "<JSON header>\n<raw message>", newest first
-- KEYS[2]  HASH where a worker holds it (Keys.held), or KEYS[1] when it is not held
-- KEYS[3]  LIST the landing list it came from, or KEYS[1] when it did not
-- ARGV[1]  the entry's JSON header (reason, source, time, task id; store/malformed.py)
-- ARGV[2]  the raw message, as it was found
-- ARGV[3]  its delivery tag when it is held, or ''
-- ARGV[4]  '1' when it came from the landing list KEYS[3] (removed by value), else ''
-- ARGV[5]  most entries the malformed list keeps
-- returns  1 if this call set it aside, 0 if someone else had taken it

if ARGV[3] ~= '' and redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then return 0 end
if ARGV[4] == '1' and redis.call('LREM', KEYS[3], 1, ARGV[2]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1] .. '\n' .. ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[5]) - 1)
return 1
