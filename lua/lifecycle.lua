-- lifecycle.lua: the end of a decision's life, shared by the scripts that close one
-- (prepended to quorum_vote.lua and expire.lua when the hub loads them).

-- What a decision's metadata holds as `format` when it also says whether the decision is
-- closed (`closed`: 'decided' or 'expired', beside the result): a vote then reads the
-- result only for a closed decision. Metadata without it is asked its result every time.
local FORMAT = '2'

-- The server's time in ms, as a string.
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- The tally as a JSON object, values in the order each first received a vote.
local function tally_json(votes, ballots, tally)
  local voters = redis.call('ZRANGE', votes, 0, -1)
  if #voters == 0 then
    return '{}'
  end
  local values = redis.call('HMGET', ballots, unpack(voters))
  local seen, parts = {}, {}
  for _, v in ipairs(values) do
    if v and not seen[v] then
      seen[v] = true
      parts[#parts + 1] = cjson.encode(v) .. ':' .. (redis.call('HGET', tally, v) or '0')
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- The winner of a decision whose votes are `votes` (instance -> sequence number) and
-- `ballots` (instance -> value): most votes; on a tie, the value that reached that count
-- first (the earliest sequence number at which it got its last vote).
local function winner_of(votes, ballots)
  local voters = redis.call('ZRANGE', votes, 0, -1)
  local values = redis.call('HMGET', ballots, unpack(voters))
  local counts, reached_at = {}, {}
  for i, v in ipairs(values) do
    counts[v] = (counts[v] or 0) + 1
    reached_at[v] = i
  end
  local winner, best_count, best_at = nil, 0, 0
  for v, c in pairs(counts) do
    if c > best_count or (c == best_count and reached_at[v] < best_at) then
      winner, best_count, best_at = v, c, reached_at[v]
    end
  end
  return winner
end

-- A closed decision's keys (`parts`) expire `retention` ms from now. Only once its event is
-- in the log: on one Redis the run that closes a decision logs it too and calls this; on a
-- cluster the closing run leaves the keys without an expiry and mark_logged.lua sets it, so
-- that a decision is never gone before its event is logged.
local function retain(parts, retention)
  for _, key in ipairs(parts) do
    redis.call('PEXPIRE', key, retention)
  end
end

-- Whether a decision with deadline `closes_at` (ms, '' or false for none) is past it at
-- `now` (ms).
local function past_deadline(closes_at, now)
  return closes_at and closes_at ~= '' and tonumber(now) >= tonumber(closes_at)
end
