-- A consumer takes the next messages to run (as many as it has room for), in one atomic
-- step: records that it holds each, marks its task processing, and skips tasks that must
-- not run.
--
-- Kombu pops with BRPOP and records the message as unacknowledged in a second command:
-- a worker killed between the two loses the message for good. Here it is one step, and
-- a cancelled task (its tombstone exists) or one already over (a redelivered duplicate)
-- is dropped here, so it never reaches a worker.
--
-- KEYS[1..n]   the queue lists to pop from, in order (every queue's highest priority
--              list first, as kombu's BRPOP orders them)
-- KEYS[n+1]    HASH unacked: delivery tag -> JSON [message, exchange, routing key]
-- KEYS[n+2]    ZSET unacked_index: delivery tag -> time taken
-- KEYS[n+3]    HASH unacked_owner: delivery tag -> consumer id
-- KEYS[n+4]    ZSET deadlines of running tasks
-- KEYS[n+5]    SET  active task ids
-- KEYS[n+6]    LIST malformed: raw entries that are not a kombu JSON message
-- KEYS[n+7..]  the doorbell lists of the queues (cleared when every list is empty)
-- ARGV[1]      n
-- ARGV[2]      now (unix seconds)
-- ARGV[3]      consumer id
-- ARGV[4]      Keys.status_prefix(): status(id) = prefix .. id
-- ARGV[5]      Keys.cancelled_prefix(): cancelled(id) = prefix .. id
-- ARGV[6]      status TTL (seconds)
-- ARGV[7]      seconds past a run's time limit before the monitor calls it lost
-- ARGV[8]      most entries the malformed list keeps
-- ARGV[9]      most messages to take (the consumer's free prefetch slots)
-- returns      {index of the list popped (1-based), message, index, message, ...} in the
--              order taken (priority order), or nil when all are empty
--
-- The status and tombstone keys are the only ones built here, from their families'
-- prefixes (meetingtasks.keys: status_prefix, cancelled_prefix), because the task id is
-- only known once the message is popped: declaring them would take a second round trip.
--
-- An entry that is not a JSON object with a delivery tag (pushed by hand, or bytes no
-- JSON decoder here accepts) is set aside on the malformed list: were it to raise, the
-- script would fail on every fetch and the worker would take nothing at all.

local n = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local over = {completed = true, failed = true, timeout = true, cancelled = true}

local function readable(raw)
  local ok, message = pcall(cjson.decode, raw)
  if not ok or type(message) ~= 'table' or type(message['properties']) ~= 'table'
      or message['properties']['delivery_tag'] == nil then
    return nil
  end
  if message['headers'] ~= nil and type(message['headers']) ~= 'table' then return nil end
  return message
end

local function take(raw)
  local message = readable(raw)
  if not message then
    redis.call('LPUSH', KEYS[n + 6], raw)
    redis.call('LTRIM', KEYS[n + 6], 0, tonumber(ARGV[8]) - 1)
    return false
  end
  local headers = message['headers'] or {}
  local id = headers['id']
  if id then
    local status_key = ARGV[4] .. id
    if redis.call('EXISTS', ARGV[5] .. id) == 1 or over[redis.call('HGET', status_key, 'status')] then
      return false  -- dropped: cancelled, or a duplicate of a run that already ended
    end
    redis.call('HSET', status_key, 'status', 'processing', 'started_at', ARGV[2],
               'attempts', (tonumber(headers['retries']) or 0) + 1, 'worker', ARGV[3])
    redis.call('EXPIRE', status_key, tonumber(ARGV[6]))
    local limits = headers['timelimit']
    local limit = type(limits) == 'table' and (tonumber(limits[1]) or tonumber(limits[2]))
    if limit then redis.call('ZADD', KEYS[n + 4], now + limit + tonumber(ARGV[7]), id) end
    redis.call('SADD', KEYS[n + 5], id)
  end
  local properties = message['properties']
  local tag = properties['delivery_tag']
  local info = properties['delivery_info'] or {}
  local held = '[' .. raw .. ',' .. cjson.encode(info['exchange'] or '') .. ','
    .. cjson.encode(info['routing_key'] or '') .. ']'
  redis.call('HSET', KEYS[n + 1], tag, held)
  redis.call('ZADD', KEYS[n + 2], now, tag)
  redis.call('HSET', KEYS[n + 3], tag, ARGV[3])
  return true
end

-- The first write is a pop, which frees memory: Redis at its maxmemory refuses a script
-- only at a first write that grows memory, so a full Redis still lets workers take
-- messages (and drain it). Keep the RPOP first.
local most = tonumber(ARGV[9])
local taken = {}
for i = 1, n do
  while #taken < 2 * most do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    if take(raw) then
      taken[#taken + 1] = i
      taken[#taken + 1] = raw
    end
  end
end
if #taken > 0 then return taken end
for i = n + 7, #KEYS do redis.call('DEL', KEYS[i]) end
return nil
