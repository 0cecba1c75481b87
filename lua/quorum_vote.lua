-- quorum_vote.lua: record one vote, tally it, and fix the decision once quorum is met.
--
-- Runs atomically, so no two votes on one decision ever interleave, however many hubs race.
-- It runs in one of two modes (ARGV[13]):
-- 'log'   (one Redis) the decision event is appended and published in this same run, and
--         the rate limit is applied here;
-- 'defer' (Redis Cluster, where every key must share the decision's slot) a decision made
--         here is put in its partition's "decided, not yet logged" set; the hub then logs
--         it with log_decision.lua and records its event id. The rate limit was reserved
--         in the instance's slot before this run (reserve_vote.lua), and ARGV[14] carries
--         the refusal when the reservation failed.
--
-- KEYS[1] votes     sorted set  instanceId -> sequence number (1, 2, 3, ... in arrival order)
-- KEYS[2] tally     hash        value -> count
-- KEYS[3] result    hash        value, voteCount, decidedAt, eventId (written once, never
--                               changed, except that eventId is added later in 'defer' mode)
-- KEYS[4] metadata  hash        decision, totalInstances, quorum, openedAt
-- KEYS[5] ballots   hash        instanceId -> value
-- KEYS[6] index     sorted set  decision -> openedAt, capped (feeds system.get_state)
-- KEYS[7] 'log':   stream      decision events, capped
--         'defer': sorted set  decision -> decidedAt, decided but not yet logged
-- KEYS[8] 'log':   list        the voting instance's recent vote times (ms)
--         'defer': string      the partition's dashboards flag: votes are published only
--                              while it exists (some hub has a dashboard listening)
-- KEYS[9] 'log':   string      id of the last decision event published after its write
--                              reached replicas (see publish_pending.lua)
--         'defer': hash        instanceId -> the rate-window place its recorded vote took
-- KEYS[10] deadlines sorted set decision -> closesAt, for the decisions still open (on a
--                              cluster, the partition's)
-- ARGV[1] decision name, ARGV[2] instanceId, ARGV[3] value,
-- ARGV[4] totalInstances stated by the caller ('' when omitted; only a stated one can mismatch),
-- ARGV[5] totalInstances and ARGV[6] quorum to open the decision with (the caller computes the
-- quorum, so the rule has one source; the script only stores it),
-- ARGV[7] stream cap (approximate MAXLEN), ARGV[8] pub/sub channel for decision events,
-- ARGV[9] most votes per instance per window (0: no limit), ARGV[10] window in ms,
-- ARGV[11] pub/sub channel for recorded votes (quorum.vote.recorded, for dashboards),
-- ARGV[12] most decisions the index keeps (the oldest opened drop out),
-- ARGV[13] mode ('log' or 'defer'), ARGV[14] ('defer' only) milliseconds until the voter's
-- rate window has room when its reservation was refused, '' otherwise, ARGV[15] ('defer'
-- only) the place this vote took in the rate window ('' for none), ARGV[16] ('log' only)
-- 'later' when a decision event is published only once its write is on replicas (the hub
-- runs publish_pending.lua then), '' to publish it at once, ARGV[17] closeAfterMs stated by
-- the caller ('' when omitted), ARGV[18] closeAfterMs to open the decision with (the stated
-- one, or the longest any decision stays open), ARGV[19] ('log' only) how long a closed
-- decision's keys are kept (ms).
-- ARGV[20] policy mode: '' (open as the caller states, without a policy), 'ask' (a policy
-- applies whose terms the hub reads only for a decision not open yet: answer needs_opening
-- instead of opening it) or 'open' (open it under the policy in ARGV[21..26]),
-- ARGV[21] the policy's pattern, ARGV[22] its electorate role ('' for none), ARGV[23] its
-- threshold as written, ARGV[24] its allowed values as a JSON array ('' for any),
-- ARGV[25] the electorate's members as a JSON array (with a role), ARGV[26] its openers'
-- role ('' for none). A decision opened under a policy keeps it in its metadata (policy,
-- threshold, role, values, openers, and member:<instanceId> for each elector): later votes
-- are judged against those, whatever the caller passes.
--
-- Returns {outcome, voteCount, totalInstances, quorum, finalDecision or '', recordedValue or '',
-- eventId or '', decidedAt or '', place or ''}, place being (for already_voted, 'defer' mode)
-- the rate-window place the recorded vote took: a retry of this very vote finds its own.
-- where outcome is one of: recorded, decided_now, already_voted, decided, total_mismatch,
-- close_mismatch (then voteCount holds the closeAfterMs the decision opened with),
-- not_in_electorate, value_refused, needs_opening (nothing written for these three),
-- expired_now (this vote found the decision past its deadline and closed it) or expired
-- (it was closed before; for both, recordedValue holds the tally at expiry, as JSON, and
-- decidedAt when it expired),
-- rate_limited (then voteCount holds the milliseconds until a vote would be accepted).
-- eventId is '' for a closed decision whose event is not logged yet ('defer' mode).
--
-- A decision past its deadline (closesAt) without quorum is closed as expired by the first
-- script that finds it so, this one or expire.lua: the vote that reaches quorum and the
-- deadline cannot both win. A closed decision's keys expire after the retention, which
-- starts once its event is logged: here in 'log' mode, in mark_logged.lua in 'defer' mode.
--
-- Only a vote that would be recorded counts against the rate limit: a retry of a vote that
-- already counted always learns so, and nothing is written for a refused vote.

local votes, tally, result, meta, ballots, index, log, rate =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local decision, instance, value = ARGV[1], ARGV[2], ARGV[3]
local stated_total, opening_total, opening_quorum = ARGV[4], ARGV[5], ARGV[6]
local stream_cap, channel = ARGV[7], ARGV[8]
local rate_max, rate_window = tonumber(ARGV[9]), tonumber(ARGV[10])
local vote_channel = ARGV[11]
local index_cap = tonumber(ARGV[12])
local deferred, refused_for, place = ARGV[13] == 'defer', ARGV[14], ARGV[15]
local stated_close, opening_close, retention = ARGV[17], ARGV[18], ARGV[19]
local deadlines = KEYS[10]
local parts = {votes, tally, result, meta, ballots}

local opened = redis.call('HMGET', meta, 'totalInstances', 'quorum', 'closeAfterMs', 'closesAt',
  'values', 'role', 'member:' .. instance)
local total, quorum = opened[1], opened[2]

local function answer(outcome, count, final_value, recorded_value, event_id, decided_at, taken)
  return {outcome, count, total, quorum, final_value or '', recorded_value or '', event_id or '',
    decided_at or '', taken or ''}
end
local final = redis.call('HMGET', result, 'value', 'voteCount', 'eventId', 'decidedAt',
  'expiredAt', 'tally')

-- Rule: one vote per instance. A retry learns what its first attempt recorded.
local recorded = redis.call('HGET', ballots, instance)
if recorded then
  local taken = deferred and redis.call('HGET', KEYS[9], instance) or ''
  return answer('already_voted', redis.call('ZCARD', votes), final[1], recorded, final[3], final[4],
    taken)
end

-- Rule: the result is final. Later votes are not recorded, whatever totalInstances they
-- state: a decided decision answers every new voter the same way.
if final[1] then
  return answer('decided', tonumber(final[2]), final[1], '', final[3], final[4])
end

-- Rule: an expired decision is closed. Votes after its deadline are not recorded; the
-- first to find it past its deadline closes it.
if final[5] then
  return answer('expired', tonumber(final[2]), '', final[6], final[3], final[5])
end
if total and past_deadline(opened[4], now_ms()) then
  local expired_at = now_ms()
  local count = string.format('%d', redis.call('ZCARD', votes))
  local at_expiry = tally_json(votes, ballots, tally)
  redis.call('HSET', result, 'expiredAt', expired_at, 'voteCount', count, 'tally', at_expiry)
  redis.call('ZREM', deadlines, decision)
  if deferred then
    redis.call('ZADD', log, expired_at, decision)
    return answer('expired_now', count, '', at_expiry, '', expired_at)
  end
  retain(parts, retention)
  local publish = ARGV[16] == 'later' and '' or 'PUBLISH'
  local event_id = log_event(log, KEYS[9], stream_cap, channel, publish, decision, '', count,
    quorum, total, expired_at, at_expiry)
  redis.call('HSET', result, 'eventId', event_id)
  return answer('expired_now', count, '', at_expiry, event_id, expired_at)
end

-- Whether `value` is in the JSON array `allowed`.
local function listed(allowed, wanted)
  for _, v in ipairs(cjson.decode(allowed)) do
    if v == wanted then
      return true
    end
  end
  return false
end

local opening = not total
local policy_mode, electorate = ARGV[20], nil
if opening then
  total, quorum = opening_total, opening_quorum
  if policy_mode == 'ask' then
    return answer('needs_opening', 0)
  end
  if policy_mode == 'open' then
    -- Rule: the policy the decision opens under judges its first vote too.
    if ARGV[22] ~= '' and not listed(ARGV[25], instance) then
      return answer('not_in_electorate', 0)
    end
    if ARGV[24] ~= '' and not listed(ARGV[24], value) then
      return answer('value_refused', 0)
    end
    if ARGV[22] ~= '' then
      electorate = cjson.decode(ARGV[25])
    end
  end
elseif opened[6] and not opened[7] then
  -- Rule: a decision opened with an electorate takes votes from its members only.
  return answer('not_in_electorate', redis.call('ZCARD', votes))
elseif opened[5] and not listed(opened[5], value) then
  -- Rule: a decision opened with allowed values takes no other.
  return answer('value_refused', redis.call('ZCARD', votes))
elseif stated_total ~= '' and stated_total ~= total then
  -- Rule: the first vote fixed totalInstances; a different stated value is refused.
  return answer('total_mismatch', redis.call('ZCARD', votes))
elseif stated_close ~= '' and opened[3] and stated_close ~= opened[3] then
  -- Rule: the first vote fixed the deadline; a different stated closeAfterMs is refused.
  return answer('close_mismatch', tonumber(opened[3]))
end

-- The voter's reservation in its rate window was refused (only now, so that the answers
-- above still win over the limit).
if refused_for ~= '' then
  return answer('rate_limited', tonumber(refused_for))
end

-- Rate limit: a sliding window kept as the instance's last rate_max vote times.
if rate_max > 0 then
  local now = tonumber(now_ms())
  if redis.call('LLEN', rate) >= rate_max then
    local oldest = tonumber(redis.call('LINDEX', rate, rate_max - 1))
    if oldest and oldest + rate_window > now then
      return answer('rate_limited', oldest + rate_window - now)
    end
  end
  redis.call('LPUSH', rate, string.format('%.0f', now))
  redis.call('LTRIM', rate, 0, rate_max - 1)
  redis.call('PEXPIRE', rate, rate_window)
end

if opening then
  local opened_at = now_ms()
  local closes_at = string.format('%.0f', tonumber(opened_at) + tonumber(opening_close))
  redis.call('HSET', meta, 'decision', decision, 'totalInstances', total, 'quorum', quorum,
    'openedAt', opened_at, 'closeAfterMs', opening_close, 'closesAt', closes_at)
  if policy_mode == 'open' then
    redis.call('HSET', meta, 'policy', ARGV[21], 'threshold', ARGV[23])
    if ARGV[24] ~= '' then
      redis.call('HSET', meta, 'values', ARGV[24])
    end
    if ARGV[26] ~= '' then
      redis.call('HSET', meta, 'openers', ARGV[26])
    end
    if electorate then
      redis.call('HSET', meta, 'role', ARGV[22])
      for _, member in ipairs(electorate) do
        redis.call('HSET', meta, 'member:' .. member, '1')
      end
    end
  end
  redis.call('ZADD', deadlines, closes_at, decision)
  -- Indexed in this same run, so a recorded decision is never missing from get_state.
  redis.call('ZADD', index, 'NX', opened_at, decision)
  redis.call('ZREMRANGEBYRANK', index, 0, -index_cap - 1)
end

local seq = redis.call('ZCARD', votes) + 1
redis.call('HSET', ballots, instance, value)
if deferred and place ~= '' then
  redis.call('HSET', KEYS[9], instance, place)
end
redis.call('ZADD', votes, seq, instance)
redis.call('HINCRBY', tally, value, 1)
-- On a cluster a publish reaches every node, so it is made only while a dashboard listens
-- (KEYS[8] is then the dashboards flag).
if not deferred or redis.call('EXISTS', KEYS[8]) == 1 then
  redis.call('PUBLISH', vote_channel, '{"decision":' .. cjson.encode(decision) ..
    ',"instanceId":' .. cjson.encode(instance) .. ',"value":' .. cjson.encode(value) ..
    ',"voteCount":' .. string.format('%d', seq) .. ',"quorum":' .. quorum ..
    ',"totalInstances":' .. total .. '}')
end

if seq < tonumber(quorum) then
  return answer('recorded', seq)
end

-- Quorum reached by this vote. Winner: most votes; on a tie, the value that reached
-- that count first (the earliest sequence number at which it got its last vote).
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

local decided_at = now_ms()
local vote_count = string.format('%d', seq)
redis.call('HSET', result, 'value', winner, 'voteCount', vote_count, 'decidedAt', decided_at)
redis.call('ZREM', deadlines, decision)
if deferred then
  redis.call('ZADD', log, decided_at, decision)
  return answer('decided_now', seq, winner, '', '', decided_at)
end
retain(parts, retention)
local publish = ARGV[16] == 'later' and '' or 'PUBLISH'
local event_id = log_event(log, KEYS[9], stream_cap, channel, publish, decision, winner,
  vote_count, quorum, total, decided_at)
redis.call('HSET', result, 'eventId', event_id)
return answer('decided_now', seq, winner, '', event_id, decided_at)
