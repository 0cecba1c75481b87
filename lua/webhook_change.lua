-- webhook_change.lua: removes, enables or rotates the secret of a webhook endpoint.
--
-- KEYS[1] index     zset    endpoint id -> added at (ms)
-- KEYS[2] endpoint  hash    the endpoint
-- KEYS[3] due       zset    its deliveries
-- KEYS[4] tries     hash    attempts per delivery
-- KEYS[5] attempts  stream  its attempt log
-- ARGV[1] 'remove', 'enable' or 'rotate', ARGV[2] id; for 'rotate': ARGV[3] the new
-- secret, ARGV[4] until when (ms) deliveries also carry the old one's signature.
--
-- Returns 0 when there is no such endpoint, 1 otherwise.

if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local op = ARGV[1]
if op == 'remove' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
elseif op == 'enable' then
  redis.call('HSET', KEYS[2], 'state', 'enabled')
  redis.call('HDEL', KEYS[2], 'disabledReason', 'disabledAt', 'failingSince')
elseif op == 'rotate' then
  local old = redis.call('HGET', KEYS[2], 'secret')
  redis.call('HSET', KEYS[2], 'secret', ARGV[3], 'previousSecret', old, 'previousUntil', ARGV[4])
end
return 1
