-- expire.lua: closes one decision whose deadline passed without quorum, as expired, once.
--
-- Hubs run it for the decisions their deadlines index says are due; a vote can close a
-- decision the same way (quorum_vote.lua). Whichever runs first wins: a decision decided,
-- expired or gone meanwhile is only taken off the index.
--
-- KEYS[1] votes, KEYS[2] tally, KEYS[3] result, KEYS[4] metadata, KEYS[5] ballots (the
-- decision's, as in quorum_vote.lua), KEYS[6] deadlines (decision -> closesAt),
-- KEYS[7] 'log': stream of events / 'defer': the partition's "closed, not yet logged" set,
-- KEYS[8] ('log' only) the published mark (see publish_pending.lua).
-- ARGV[1] decision, ARGV[2] mode ('log' on one Redis, 'defer' on a cluster), ARGV[3] how
-- long a closed decision's keys are kept (ms; 'log' only: on a cluster the retention starts
-- once the event is logged, in mark_logged.lua), ARGV[4] stream cap, ARGV[5] channel for
-- decision events, ARGV[6] 'later' to leave the event for publish_pending.lua, '' to
-- publish it at once.
--
-- Returns {expired (1 or 0), voteCount, quorum, totalInstances, tally (JSON), eventId
-- ('' in 'defer' mode: the hub logs it next), expiredAt}; when it closed nothing, 0 and
-- empty fields.

local votes, tally, result, meta, ballots, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  KEYS[5], KEYS[6]
local decision, deferred, retention = ARGV[1], ARGV[2] == 'defer', ARGV[3]

local opened = redis.call('HMGET', meta, 'totalInstances', 'quorum', 'closesAt')
local final = redis.call('HMGET', result, 'value', 'expiredAt')
if final[1] or final[2] or not opened[1] then
  redis.call('ZREM', deadlines, decision)
  return {0, 0, 0, 0, '', '', 0}
end
local now = now_ms()
if not past_deadline(opened[3], now) then
  return {0, 0, 0, 0, '', '', 0}
end

local count = string.format('%d', redis.call('ZCARD', votes))
local at_expiry = tally_json(votes, ballots, tally)
redis.call('HSET', result, 'expiredAt', now, 'voteCount', count, 'tally', at_expiry)
redis.call('HSET', meta, 'closed', 'expired')
redis.call('ZREM', deadlines, decision)
local event_id = ''
if deferred then
  redis.call('ZADD', KEYS[7], now, decision)
else
  retain({votes, tally, result, meta, ballots}, retention)
  local publish = ARGV[6] == 'later' and '' or 'PUBLISH'
  event_id = log_event(KEYS[7], KEYS[8], ARGV[4], ARGV[5], publish, decision, '', count,
    opened[2], opened[1], now, at_expiry)
  redis.call('HSET', result, 'eventId', event_id)
end
return {1, count, opened[2], opened[1], at_expiry, event_id, now}
