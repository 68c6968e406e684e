-- Finished tasks whose result was read by whoever awaited it (a dispatcher's wait() or
-- callback, AsyncResult.get()): keep each record at most ARGV[1] more seconds
-- (policies/retention.py). Left as they are: a task not completed or cancelled (a
-- failure stays for its dead letter), one a client session may still resume for, one
-- whose route or call chose its retention (the record's 'retention' field).
--
-- KEYS     the tasks' records (HASH)
-- ARGV[1]  seconds
-- returns  how many records were shortened (EXPIRE LT never lengthens one)

local shortened = 0
for i = 1, #KEYS do
  local status, session, chosen = unpack(redis.call('HMGET', KEYS[i], F.status, F.session, F.retention))
  if (status == 'completed' or status == 'cancelled') and not session and not chosen then
    shortened = shortened + redis.call('EXPIRE', KEYS[i], ARGV[1], 'LT')
  end
end
return shortened
