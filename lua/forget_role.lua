-- forget_role.lua: drop role index entries found stale, unless they were written again since.
--
-- KEYS[1] role index  sorted set  instance id -> time of the registration that listed it
-- ARGV    pairs of instance id and the score it had when it was found stale
--
-- An entry whose score moved (the instance registered with the role again meanwhile) stays.
-- Returns how many entries left.

local left = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    left = left + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return left
