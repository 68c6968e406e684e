-- A consumer takes the next messages to run (as many as it has room for), in one atomic
-- step: records that it holds each, marks its task processing, and skips tasks that must
-- not run.
--
-- Kombu pops with BRPOP and records the message as unacknowledged in a second command:
-- a worker killed between the two loses the message for good. Here it is one step (one
-- write: the message, as it was on the queue, into this consumer's held hash), and
-- a cancelled task (its tombstone exists) or one already over (a redelivered duplicate)
-- is dropped here, so it never reaches a worker.
--
-- KEYS[1..n]   the queue lists to pop from, in order (every queue's highest priority
--              list first, as kombu's BRPOP orders them)
-- KEYS[n+1..2n] for each of those lists, the HASH where this consumer holds what it
--              takes from that list's queue: delivery tag -> raw message
-- KEYS[2n+1]   ZSET deadlines of running tasks
-- KEYS[2n+2]   LIST malformed: entries that can never be a task, with the reason
-- KEYS[2n+3..] the doorbell lists of the queues (cleared when every list is empty)
-- ARGV[1]      n
-- ARGV[2]      now (unix seconds)
-- ARGV[3]      consumer id
-- ARGV[4]      Keys.status_prefix(): status(id) = prefix .. id
-- ARGV[5]      Keys.cancelled_prefix(): cancelled(id) = prefix .. id
-- ARGV[6]      status TTL (seconds)
-- ARGV[7]      seconds past a run's time limit before the monitor calls it lost
-- ARGV[8]      most entries the malformed list keeps
-- ARGV[9]      most messages to take (the consumer's free prefetch slots)
-- ARGV[10]     the header that says nobody watches a task (base/headers.py UNTRACKED):
--              such a task has no record to mark processing
-- ARGV[11]     the header naming the client session that submitted a task (SESSION)
-- ARGV[12]     the header naming the client's request (REQUEST)
-- ARGV[13]     Keys.session_channel(""): a session's channel = prefix .. session id
-- returns      {index of the list popped (1-based), message, index, message, ...} in the
--              order taken (priority order), then {0, JSON header} for each entry set
--              aside (its reason, list and task id: the worker ends its status), or nil
--              when all are empty
--
-- The status and tombstone keys are the only ones built here, from their families'
-- prefixes (base/keys.py: status_prefix, cancelled_prefix), because the task id is
-- only known once the message is popped: declaring them would take a second round trip.
--
-- Nothing popped may make this script fail: it would fail on every fetch, and the worker
-- would take nothing at all. An entry that is not a kombu JSON message (pushed by hand,
-- bytes no JSON decoder here accepts, a tag or id of the wrong type) is set aside on the
-- malformed list with the reason (entries "<JSON header>\n<raw>", store/malformed.py),
-- all checks made before any write; whatever else goes wrong with one entry is caught
-- (pcall) and sets it aside too. The worker checks the rest (policies/message_check.py).

local n = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local over = {completed = true, failed = true, timeout = true, cancelled = true}

local function optional(value)
  if value == cjson.null then return nil end
  return value
end

-- Why a decoded entry cannot be held as a task message, or nil.
local function problem(message)
  if type(message) ~= 'table' then return 'the message is not a JSON object' end
  local properties = message['properties']
  if type(properties) ~= 'table' then return 'the message has no properties object' end
  if type(properties['delivery_tag']) ~= 'string' then
    return 'properties.delivery_tag is not a string'
  end
  local info = optional(properties['delivery_info'])
  if info ~= nil and type(info) ~= 'table' then return 'properties.delivery_info is not an object' end
  local headers = optional(message['headers'])
  if headers ~= nil and type(headers) ~= 'table' then return 'headers is not an object' end
  local id = headers and optional(headers['id'])
  if id ~= nil and type(id) ~= 'string' then return 'headers.id is not a string' end
  return nil
end

local function describe(err)
  if type(err) == 'table' then return tostring(err['err'] or err[1]) end
  return tostring(err)
end

local aside = {}  -- what was set aside, for the worker to report (ends its status)

local function set_aside(list, raw, reason, id)
  local info = {reason = reason, source = list, at = now, task_id = id}
  redis.call('LPUSH', KEYS[2 * n + 2], cjson.encode(info) .. '\n' .. raw)
  redis.call('LTRIM', KEYS[2 * n + 2], 0, tonumber(ARGV[8]) - 1)
  aside[#aside + 1] = 0
  aside[#aside + 1] = cjson.encode(info)
end

-- A task id a set-aside message names, if it is one.
local function id_of(message)
  local headers = type(message) == 'table' and optional(message['headers'])
  local id = type(headers) == 'table' and optional(headers['id'])
  if type(id) == 'string' then return id end
  return nil
end

local function hold(i, raw, message)
  local headers = optional(message['headers']) or {}
  local properties = message['properties']
  local id = optional(headers['id'])
  if id and optional(headers[ARGV[10]]) then
    if redis.call('EXISTS', ARGV[5] .. id) == 1 then return false end  -- cancelled
  elseif id then
    local status_key = ARGV[4] .. id
    local status = redis.call('HGET', status_key, F.status)
    if over[status] then return false end  -- dropped: a duplicate of a run that ended
    if redis.call('EXISTS', ARGV[5] .. id) == 1 then  -- dropped: cancelled
      if status then redis.call('HSET', status_key, F.status, 'cancelled', F.updated_at, ARGV[2]) end
      return false
    end
    local limits = optional(headers['timelimit'])
    local limit = type(limits) == 'table' and (tonumber(limits[1]) or tonumber(limits[2]))
    redis.call('HSET', status_key, F.status, 'processing', F.started_at, ARGV[2],
               F.attempts, (tonumber(headers['retries']) or 0) + 1, F.worker, ARGV[3])
    redis.call('EXPIRE', status_key, tonumber(ARGV[6]))
    local session = optional(headers[ARGV[11]])
    if type(session) == 'string' then  -- a client waits on it: tell it the run started
      local frame = {op = 'progress', task_id = id, status = 'processing'}
      local request = optional(headers[ARGV[12]])
      if type(request) == 'string' then frame['request_id'] = request end
      redis.call('PUBLISH', ARGV[13] .. session, cjson.encode(frame))
    end
    if limit then redis.call('ZADD', KEYS[2 * n + 1], now + limit + tonumber(ARGV[7]), id) end
  end
  redis.call('HSET', KEYS[n + i], properties['delivery_tag'], raw)
  return true
end

local function take(i, raw)
  local list = KEYS[i]
  local decoded, message = pcall(cjson.decode, raw)
  if not decoded then
    set_aside(list, raw, 'the message is not JSON (' .. describe(message) .. ')')
    return false
  end
  local why = problem(message)
  if why then
    set_aside(list, raw, why, id_of(message))
    return false
  end
  local ok, taken = pcall(hold, i, raw, message)
  if not ok then
    set_aside(list, raw, 'the message could not be held (' .. describe(taken) .. ')', id_of(message))
    return false
  end
  return taken
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
    if take(i, raw) then
      taken[#taken + 1] = i
      taken[#taken + 1] = raw
    end
  end
end
if #taken > 0 or #aside > 0 then
  for _, item in ipairs(aside) do taken[#taken + 1] = item end
  return taken
end
for i = 2 * n + 3, #KEYS do redis.call('DEL', KEYS[i]) end
return nil
