-- unregister.lua: remove an instance's registration and binding.
--
-- KEYS[1] instance hash, KEYS[2] owner string (see register.lua)
-- ARGV[1] owner tag of the calling session ('' for a caller without a session), ARGV[2] instance id,
-- ARGV[3] pub/sub channel for instance.unregistered.
--
-- Returns 1 when a registration was removed, 0 when there was none,
-- -1 when the instance is bound to another session (nothing is removed).

local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[2])
local removed = redis.call('DEL', KEYS[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[3], '{"instanceId":' .. cjson.encode(ARGV[2]) .. ',"reason":"unregistered"}')
end
return removed
