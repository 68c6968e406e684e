-- A worker's heartbeat: renew its consumer id in the roster (drop a retired one and those
-- lapsed a TTL ago) and count the live ones.
--
-- Its first write only frees memory (ZREMRANGEBYSCORE): Redis at its maxmemory refuses a
-- script at its first write that grows memory, but lets one that already wrote run to
-- the end. So a full Redis still takes heartbeats, and no recoverer takes a live
-- worker's running tasks for lost while it drains the queues.
--
-- KEYS[1]  ZSET  consumers: consumer id -> time its heartbeat lapses
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  heartbeat TTL (seconds)
-- ARGV[3]  this worker's current consumer id, or ''
-- ARGV[4]  a consumer id it retires, or ''
-- returns  the number of live consumers (at least 1)

local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[1], ARGV[4]) end
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[1], now + ttl, ARGV[3]) end
return math.max(1, redis.call('ZCOUNT', KEYS[1], now, '+inf'))
