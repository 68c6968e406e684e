-- Put task messages on their queues (or in the delay store) with their first status.
-- One command for a whole batch of sends: the cost of a send is mostly its commands, so
-- counters and doorbell tokens are added once per batch, not once per message.
--
-- KEYS[1]  HASH   cluster-wide counters
-- KEYS[2]  ZSET   delayed task ids by due time
-- KEYS[3]  HASH   delayed task entries
-- then, for each task i = 1..n, in the order sent:
--   KEYS[1 + 3i]  LIST  the queue list at the message's priority
--   KEYS[2 + 3i]  LIST  that queue's doorbell
--   KEYS[3 + 3i]  HASH  the task's status
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  status TTL (seconds)
-- ARGV[3]  most tokens a doorbell keeps
-- ARGV[4]  the number p of events to publish once the tasks are put (task-sent…),
--          then p channel, message pairs
-- then, for each task, in the order of KEYS:
--   task id, the kombu message ('' when delayed: the entry holds it), due time (unix
--   seconds) or '' to queue now,
--   delayed entry (JSON [list key, message, status key, doorbell key]) or '',
--   first status ('queued' or 'scheduled'), or '' for a retry (its status stays),
--   the number m of status fields, then m field, value pairs (type and priority first)
-- returns  the number of tasks put

local now, ttl, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local counts, rings, bells = {}, {}, {}

local function count(field)
  counts[field] = (counts[field] or 0) + 1
end

local events = tonumber(ARGV[4])
local i, put = 5 + 2 * events, 0
while i <= #ARGV do
  local k = 3 * (put + 1)
  local list, bell, key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local id, message, due, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local first, m = ARGV[i + 4], tonumber(ARGV[i + 5])
  local fields = i + 6
  if first ~= '' then
    if redis.call('EXISTS', key) == 1 then
      -- A write that grows memory comes first: Redis at maxmemory refuses a script at
      -- its first such write, but lets one that already wrote (a DEL) run to the end.
      redis.call('HSET', key, 'status', first)
      redis.call('DEL', key)  -- a task sent anew (dead-letter requeue) starts afresh
    end
    redis.call('HSET', key, 'status', first, 'created_at', now,
               unpack(ARGV, fields, fields + 2 * m - 1))
    redis.call('EXPIRE', key, ttl)
    count('dispatched')
    count('type:' .. ARGV[fields + 1] .. ':dispatched')
    count('priority:' .. ARGV[fields + 3] .. ':dispatched')
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
  local tokens = {}
  for t = 1, math.min(rings[bell], most) do tokens[t] = 1 end
  if redis.call('LPUSH', bell, unpack(tokens)) > most then
    redis.call('LTRIM', bell, 0, most - 1)
  end
end
for e = 5, 4 + 2 * events, 2 do redis.call('PUBLISH', ARGV[e], ARGV[e + 1]) end
return put
