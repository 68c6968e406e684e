-- A worker's heartbeat: renew its consumer id in the roster (and the earlier ids of this
-- worker still holding running tasks), drop a retired one, count the live ones.
-- A consumer that lapses stays in the roster until a recoverer gave back what it held
-- (policies/recovery.py), so nothing it held is ever forgotten.
--
-- Its first write only frees memory (ZREM): Redis at its maxmemory refuses a script at
-- its first write that grows memory, but lets one that already wrote run to the end. So
-- a full Redis still takes heartbeats, and no recoverer takes a live worker's running
-- tasks for lost while it drains the queues.
--
-- KEYS[1]  ZSET  consumers: consumer id -> time its heartbeat lapses
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  heartbeat TTL (seconds)
-- ARGV[3]  this worker's current consumer id, or ''
-- ARGV[4]  a consumer id it retires, or ''
-- ARGV[5...] earlier ids of this worker to renew too
-- returns  the number of live consumers (at least 1)

local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[4])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[1], now + ttl, ARGV[3]) end
for i = 5, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
return math.max(1, redis.call('ZCOUNT', KEYS[1], now, '+inf'))
