-- register.lua: write an instance's registration and, for a WebSocket session, bind it.
--
-- KEYS[1] instance  hash    roles, metadata, status, lastSeen, registeredAt (expires after the TTL)
-- KEYS[2] owner     string  owner tag of the session the instance is bound to (expires after the TTL)
-- ARGV[1] owner tag of the calling session ('' for a caller without a session), ARGV[2] TTL in ms,
-- ARGV[3] now in ms, ARGV[4] roles as JSON, ARGV[5] metadata as JSON,
-- ARGV[6] instance id, ARGV[7] pub/sub channel for instance.registered.
--
-- Returns 1 when registered, -1 when the instance is bound to another session.

local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[1], 'roles', ARGV[4], 'metadata', ARGV[5], 'status', 'online',
  'lastSeen', ARGV[3])
redis.call('HSETNX', KEYS[1], 'registeredAt', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
redis.call('PUBLISH', ARGV[7], '{"instanceId":' .. cjson.encode(ARGV[6]) .. ',"roles":' .. ARGV[4] ..
  ',"metadata":' .. ARGV[5] .. ',"status":"online","lastSeen":' .. ARGV[3] .. '}')
return 1
