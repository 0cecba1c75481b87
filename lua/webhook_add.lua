-- webhook_add.lua: adds a webhook endpoint, whose deliveries start after the newest event
-- handed out now.
--
-- KEYS[1] index      zset    endpoint id -> added at (ms)
-- KEYS[2] endpoint   hash    the endpoint
-- KEYS[3] stream     stream  decision events
-- KEYS[4] published  string  the last event published once replicas had it (absent:
--                            nothing waits for replicas)
-- ARGV[1] id, ARGV[2] most endpoints, ARGV[3] now in ms, ARGV[4] url, ARGV[5] event
-- patterns as JSON, ARGV[6] description, ARGV[7] secret, ARGV[8] and ARGV[9] a push
-- subscription's keys p256dh and auth ('' for a webhook).
--
-- Returns 1 when added, 0 when the keyspace holds the most endpoints already, 2 when the
-- id exists: a webhook is kept as it is (an endpoint given at start, which every hub adds);
-- a push subscription takes the new keys and patterns and is enabled (a browser that
-- subscribed again).

local push = ARGV[8] ~= ''
if redis.call('EXISTS', KEYS[2]) == 1 then
  if push then
    redis.call('HSET', KEYS[2], 'events', ARGV[5], 'p256dh', ARGV[8], 'auth', ARGV[9],
      'state', 'enabled')
    redis.call('HDEL', KEYS[2], 'disabledReason', 'disabledAt', 'failingSince')
  end
  return 2
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
local cursor = '0-0'
local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if newest[1] then
  cursor = newest[1][1]
end
-- Events that wait for replicas are not handed out yet: the endpoint gets them too.
local published = redis.call('GET', KEYS[4])
if published then
  cursor = published
end
redis.call('HSET', KEYS[2], 'url', ARGV[4], 'events', ARGV[5], 'description', ARGV[6],
  'addedAt', ARGV[3], 'state', 'enabled', 'secret', ARGV[7], 'cursor', cursor)
if push then
  redis.call('HSET', KEYS[2], 'p256dh', ARGV[8], 'auth', ARGV[9])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
