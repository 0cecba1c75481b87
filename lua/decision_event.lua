-- decision_event.lua: the one definition of a decision event, shared by the scripts that
-- log one (prepended to quorum_vote.lua and log_decision.lua when the hub loads them).
--
-- Appends the event to the capped stream (its entry id is the event id), publishes it
-- with `publish` (PUBLISH on one Redis, SPUBLISH on a cluster, in the stream's slot) and
-- returns the id.
local function log_decision(stream, cap, channel, publish, decision, winner, vote_count,
    quorum, total, decided_at)
  local event_id = redis.call('XADD', stream, 'MAXLEN', '~', cap, '*',
    'decision', decision, 'value', winner, 'voteCount', vote_count, 'quorum', quorum,
    'totalInstances', total, 'timestamp', decided_at)
  redis.call(publish, channel, '{"decision":' .. cjson.encode(decision) ..
    ',"value":' .. cjson.encode(winner) .. ',"voteCount":' .. vote_count ..
    ',"quorum":' .. quorum .. ',"totalInstances":' .. total ..
    ',"eventId":"' .. event_id .. '","timestamp":' .. decided_at .. '}')
  return event_id
end
