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

-- The `quorum.decision.expired` notification's params for one event; `tally` is JSON.
local function expired_json(decision, vote_count, quorum, total, tally, event_id, expired_at)
  return '{"decision":' .. cjson.encode(decision) .. ',"voteCount":' .. vote_count ..
    ',"quorum":' .. quorum .. ',"totalInstances":' .. total .. ',"tally":' .. tally ..
    ',"eventId":"' .. event_id .. '","timestamp":' .. expired_at .. '}'
end

-- The params of the event logged as stream entry `id` with fields `f`.
local function entry_json(id, f)
  -- An entry without the numbers (written by hand) is published with zeros rather than
  -- holding up every event after it.
  local count, quorum = tonumber(f.voteCount) or 0, tonumber(f.quorum) or 0
  local total, at = tonumber(f.totalInstances) or 0, tonumber(f.timestamp) or 0
  if f.event == 'expired' then
    local ok = pcall(cjson.decode, f.tally or '')
    return expired_json(f.decision or '', count, quorum, total, ok and f.tally or '{}', id, at)
  end
  return decision_json(f.decision or '', f.value or '', count, quorum, total, id, at)
end

-- Publishes with `publish` (PUBLISH or SPUBLISH) the logged events after `published` (the
-- id of the last event published this way) up to and including `upto`, at most `most` of
-- them (nil: all of them), in log order, and moves `published` on. Returns how many it
-- published. Without `published`, nothing waits to be published: it returns 0.
local function publish_upto(stream, published, upto, channel, publish, most)
  local from = redis.call('GET', published)
  if not from then
    return 0
  end
  local entries
  if most then
    entries = redis.call('XRANGE', stream, '(' .. from, upto, 'COUNT', most)
  else
    entries = redis.call('XRANGE', stream, '(' .. from, upto)
  end
  for _, entry in ipairs(entries) do
    local f = {}
    for i = 1, #entry[2], 2 do
      f[entry[2][i]] = entry[2][i + 1]
    end
    redis.call(publish, channel, entry_json(entry[1], f))
  end
  if #entries > 0 then
    redis.call('SET', published, entries[#entries][1])
  end
  return #entries
end

-- Most events one run publishes when it publishes the ones that waited for replicas.
local PUBLISH_BATCH = 500

-- Appends a decision event to the capped stream (its entry id is the event id) and returns
-- the id.
-- With `publish` (PUBLISH on one Redis, SPUBLISH on a cluster, in the stream's slot) it is
-- published at once, after every event still waiting (see below), however many: so that
-- every hub gets them in log order, and this one is never left unpublished behind them
-- (at most the log's cap of events, once, in the run that finds them waiting). With publish = '' it is left for publish_pending.lua, which the hub
-- runs once the write is on enough replicas; `published` (the id of the last event
-- published that way) is started just before it if it does not exist yet.
--
-- `expired_tally` is nil for a decision made (`winner` won), and the tally (JSON) at expiry
-- for a decision that expired (`winner` is then '' and `decided_at` when it expired).
-- `waiting` says whether `published` exists, when the caller knows (nil: it is asked).
-- Returns the event id, and whether `published` exists now.
local function log_event(stream, published, cap, channel, publish, decision, winner,
    vote_count, quorum, total, decided_at, expired_tally, waiting)
  if waiting == nil then
    waiting = redis.call('EXISTS', published) == 1
  end
  if publish == '' and not waiting then
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    redis.call('SET', published, last and last[1] or '0-0')
  end
  local event_id
  if expired_tally then
    event_id = redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', 'event', 'expired',
      'decision', decision, 'voteCount', vote_count, 'quorum', quorum,
      'totalInstances', total, 'tally', expired_tally, 'timestamp', decided_at)
  else
    event_id = redis.call('XADD', stream, 'MAXLEN', '~', cap, '*',
      'decision', decision, 'value', winner, 'voteCount', vote_count, 'quorum', quorum,
      'totalInstances', total, 'timestamp', decided_at)
  end
  if publish ~= '' then
    if waiting then
      publish_upto(stream, published, event_id, channel, publish, nil)
    elseif expired_tally then
      redis.call(publish, channel, expired_json(decision, vote_count, quorum, total,
        expired_tally, event_id, decided_at))
    else
      redis.call(publish, channel,
        decision_json(decision, winner, vote_count, quorum, total, event_id, decided_at))
    end
  end
  return event_id, waiting or publish == ''
end
