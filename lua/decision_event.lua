-- decision_event.lua: the one definition of a decision event, shared by the scripts that
-- log or publish one (prepended to quorum_vote.lua, log_decision.lua and
-- publish_pending.lua when the hub loads them).

-- The notification's params for one event.
local function decision_json(decision, winner, vote_count, quorum, total, event_id, decided_at)
  return '{"decision":' .. cjson.encode(decision) ..
    ',"value":' .. cjson.encode(winner) .. ',"voteCount":' .. vote_count ..
    ',"quorum":' .. quorum .. ',"totalInstances":' .. total ..
    ',"eventId":"' .. event_id .. '","timestamp":' .. decided_at .. '}'
end

-- Appends the event to the capped stream (its entry id is the event id) and returns the id.
-- With `publish` (PUBLISH on one Redis, SPUBLISH on a cluster, in the stream's slot) it is
-- published at once. With publish = '' it is left for publish_pending.lua, which the hub
-- runs once the write is on enough replicas; `published` (the id of the last event
-- published that way) is started just before it if it does not exist yet.
local function log_decision(stream, published, cap, channel, publish, decision, winner,
    vote_count, quorum, total, decided_at)
  if publish == '' and redis.call('EXISTS', published) == 0 then
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    redis.call('SET', published, last and last[1] or '0-0')
  end
  local event_id = redis.call('XADD', stream, 'MAXLEN', '~', cap, '*',
    'decision', decision, 'value', winner, 'voteCount', vote_count, 'quorum', quorum,
    'totalInstances', total, 'timestamp', decided_at)
  if publish ~= '' then
    redis.call(publish, channel,
      decision_json(decision, winner, vote_count, quorum, total, event_id, decided_at))
  end
  return event_id
end
