-- Priority aging: move the oldest messages of one queue up a level once they waited long.
--
-- KEYS[1..n]  the queue's priority lists, highest level first ({ns}:{queue}, {ns}:{queue}:3, ...)
-- ARGV[1]     now (unix seconds)
-- ARGV[2]     aging period (seconds): every full period of waiting earns one level
-- ARGV[3]     most messages to move in this call
-- ARGV[4..]   the priority step of each list of KEYS, in the same order
-- returns     the number of messages moved
--
-- Lists are LPUSHed and popped from the right, so the right end holds the oldest
-- message. A message's waiting starts at its header mt_enqueued_at (or mt_due_at for a
-- delayed one); its level is where it sits now, its origin the level of properties.priority.
-- Moved messages are LPUSHed: they join the back of the higher level, behind what is
-- already there, so aging never lets a task overtake work of its new level.

local now, period, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local moved = 0

local function origin_level(priority)
  -- the list kombu put `priority` in: the last step not above it
  local level = 1
  for i = 1, #KEYS do
    if tonumber(ARGV[3 + i]) <= (tonumber(priority) or 0) then level = i end
  end
  return level
end

for level = #KEYS, 2, -1 do
  while moved < limit do
    local raw = redis.call('LINDEX', KEYS[level], -1)
    if not raw then break end
    local ok, message = pcall(cjson.decode, raw)
    if not ok or type(message) ~= 'table' then break end
    local headers = message['headers'] or {}
    local since = tonumber(headers['mt_enqueued_at'])
    local due = tonumber(headers['mt_due_at'])
    if due and (not since or due > since) then since = due end
    if not since then break end
    local properties = message['properties'] or {}
    local target = origin_level(properties['priority']) - math.floor((now - since) / period)
    if target < 1 then target = 1 end
    if target >= level then break end
    redis.call('RPOP', KEYS[level])
    redis.call('LPUSH', KEYS[target], raw)
    moved = moved + 1
  end
end
return moved
