-- Put task messages on their queues (or in the delay store) with their first status.
-- One command for a whole batch of sends: the cost of a send is mostly its commands, so
-- counters and doorbell tokens are added once per batch, not once per message.
--
-- KEYS[1]  HASH   cluster-wide counters, field "<event>:<priority>:<type>" (store/status.py)
-- KEYS[2]  ZSET   delayed task ids by due time
-- KEYS[3]  HASH   delayed task entries
-- KEYS[4]  LIST   the landing list of a queue's inbox the task comes from (an adopted
--                 foreign message, policies/foreign.py), or KEYS[1]
-- then, for each task i = 1..n, in the order sent:
--   KEYS[2 + 3i]  LIST  the queue list at the message's priority
--   KEYS[3 + 3i]  LIST  that queue's doorbell
--   KEYS[4 + 3i]  HASH  the task's record
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  status TTL (seconds)
-- ARGV[3]  most tokens a doorbell keeps
-- ARGV[4]  the message as it lies on the landing list KEYS[4], taken from it first: if
--          it is not there (another worker adopted it), nothing is put; or ''
-- ARGV[5]  the number p of events to publish once the tasks are put (task-sent…),
--          then p channel, message pairs
-- then, for each task, in the order of KEYS:
--   task id, the kombu message ('' when delayed: the entry holds it), due time (unix
--   seconds) or '' to queue now,
--   delayed entry (JSON [list key, message, status key, doorbell key]) or '',
--   first status ('queued' or 'scheduled'), or '' for none: a retry (its record stays
--   what the worker made it), or a task nobody watches (policies/tracking.py: no record),
--   what it is counted under ("<priority>:<type>"), or '' for a retry (counted once),
--   the number m of record fields, then m field, value pairs
-- returns  {the number of tasks put, how many subscribers heard the events}
--
-- A first send writes its record whole, replacing any earlier one of that id (a dead
-- letter sent again): the first write grows memory, so Redis at its maxmemory refuses
-- the script before it changed anything.

local now, ttl, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local counts, rings, bells = {}, {}, {}
if ARGV[4] ~= '' and redis.call('LREM', KEYS[4], 1, ARGV[4]) == 0 then return {0, 0} end

local events = tonumber(ARGV[5])
local i, put = 6 + 2 * events, 0
while i <= #ARGV do
  local k = 1 + 3 * (put + 1)
  local list, bell, key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local id, message, due, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local first, counted, m = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local fields = i + 7
  if first ~= '' then
    local record = {F.status, first, F.created_at, now, unpack(ARGV, fields, fields + 2 * m - 1)}
    if redis.call('HSET', key, unpack(record)) < m + 2 then  -- an earlier record of this id
      redis.call('DEL', key)
      redis.call('HSET', key, unpack(record))
    end
    redis.call('EXPIRE', key, ttl)
  end
  if counted ~= '' then
    local field = 'dispatched:' .. counted
    counts[field] = (counts[field] or 0) + 1
  end
  if due == '' then
    redis.call('LPUSH', list, message)
    if not rings[bell] then bells[#bells + 1] = bell end
    rings[bell] = (rings[bell] or 0) + 1
  else
    redis.call('HSET', KEYS[3], id, entry)
    redis.call('ZADD', KEYS[2], tonumber(due), id)
  end
  put = put + 1
  i = fields + 2 * m
end
for field, n in pairs(counts) do redis.call('HINCRBY', KEYS[1], field, n) end
-- One token per message queued, up to what wakes every idle consumer at once.
for _, bell in ipairs(bells) do
  local room = most - redis.call('LLEN', bell)
  if room > 0 then
    local tokens = {}
    for t = 1, math.min(rings[bell], room) do tokens[t] = 1 end
    redis.call('LPUSH', bell, unpack(tokens))
  end
end
local heard = 0
for e = 6, 5 + 2 * events, 2 do heard = heard + redis.call('PUBLISH', ARGV[e], ARGV[e + 1]) end
return {put, heard}
