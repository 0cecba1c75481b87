-- unregister.lua: remove an instance's registration and binding.
--
-- KEYS[1] instance hash, KEYS[2] owner string (see register.lua)
-- ARGV[1] session token ('' for a caller without a session).
--
-- Returns 1 when a registration was removed, 0 when there was none,
-- -1 when the instance is bound to another session (nothing is removed).

local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[2])
return redis.call('DEL', KEYS[1])
