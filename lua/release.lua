-- release.lua: a session closed; free its binding and mark the instance disconnected.
--
-- The registration itself stays until its TTL runs out, so the instance can come back
-- on a new session (this hub or another) at once.
--
-- KEYS[1] instance hash, KEYS[2] owner string (see register.lua)
-- ARGV[1] owner tag of the closed session, ARGV[2] now in ms, ARGV[3] instance id,
-- ARGV[4] pub/sub channel for instance.unregistered.
--
-- Returns 1 when the binding was this session's and is now released, 0 otherwise.

if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'disconnected', 'lastSeen', ARGV[2])
end
redis.call('PUBLISH', ARGV[4], '{"instanceId":' .. cjson.encode(ARGV[3]) .. ',"reason":"disconnected"}')
return 1
