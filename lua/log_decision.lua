-- log_decision.lua (Redis Cluster): the second step of a decision, its event (made or
-- expired) into the log.
--
-- The vote or expiry script fixed the result in the decision's slot; this appends the event in the
-- event log's slot, once: a retry, a later vote or another hub's sweep that logs the same
-- decision again gets the id it was logged with, and no second event. The mark names the
-- decision's decidedAt too: a decision decided anew (its first result lost with a failed
-- primary) is a new decision and gets its own event.
--
-- KEYS[1] stream  stream  decision events, capped
-- KEYS[2] logged  string  '<event id> <decidedAt>' of the logged decision (expires)
-- KEYS[3] published string id of the last event published after its write reached
--                          replicas (see publish_pending.lua)
-- ARGV[1] decision, ARGV[2] value, ARGV[3] voteCount, ARGV[4] quorum,
-- ARGV[5] totalInstances, ARGV[6] decidedAt (ms), ARGV[7] stream cap (approximate MAXLEN),
-- ARGV[8] shard channel for decision events, ARGV[9] how long the logged mark lives (ms),
-- ARGV[10] 'later' when the event is published only once its write is on replicas (the
-- hub runs publish_pending.lua then), '' to publish it at once, ARGV[11] for a decision
-- that expired, its tally at expiry (JSON; ARGV[2] is then '' and ARGV[6] when it
-- expired), '' for a decision made.
--
-- Returns the event id.

local logged = redis.call('GET', KEYS[2])
if logged then
  local id, decided_at = string.match(logged, '^(%S+) (%S+)$')
  if id and decided_at == ARGV[6] then
    return id
  end
end
local publish = ARGV[10] == 'later' and '' or 'SPUBLISH'
local expired_tally = ARGV[11] ~= '' and ARGV[11] or nil
local event_id = log_event(KEYS[1], KEYS[3], ARGV[7], ARGV[8], publish, ARGV[1], ARGV[2],
  ARGV[3], ARGV[4], ARGV[5], ARGV[6], expired_tally)
redis.call('SET', KEYS[2], event_id .. ' ' .. ARGV[6], 'PX', ARGV[9])
return event_id
