-- quorum_vote.lua: record votes, tally them, and fix each decision once its quorum is met.
--
-- One run takes a batch of votes (one or more, on any decisions) and judges them one after
-- another, in order, exactly as if each were a run of its own: the run is atomic, so no two
-- votes on one decision ever interleave, however many hubs race. A batch shares the run's
-- fixed costs (the call, the clock, the dashboards flag) among its votes, and its votes on
-- one decision share that decision's reads: its metadata, result and vote count are read
-- once and kept current in the script as the votes are judged. When a batch holds more
-- than one vote on a decision (a group answering one question at once), their ballots are
-- read together too, and the ballots, places and tally they record are written together,
-- before the decision closes (which reads them back) and at the end of the run; a lone vote
-- writes its own at once.
-- It runs in one of two modes (ARGV[1]):
-- 'log'   (one Redis) a decision event is appended and published in this same run, and
--         the rate limit is applied here;
-- 'defer' (Redis Cluster, where every key must share one slot: a batch of one partition's
--         votes)
--         a decision made here is put in its partition's "decided, not yet logged" set;
--         the hub then logs it with log_decision.lua and records its event id. The rate
--         limit was reserved in the instance's slot before this run (reserve_vote.lua),
--         and the vote's refused_for carries the refusal when the reservation failed.
--
-- Keys shared by the batch:
-- KEYS[1] index     sorted set  decision -> openedAt, capped (feeds system.get_state)
-- KEYS[2] 'log':   stream      decision events, capped
--         'defer': sorted set  decision -> decidedAt, decided but not yet logged
-- KEYS[3] deadlines sorted set decision -> closesAt, for the decisions still open (on a
--                              cluster, the partition's)
-- KEYS[4] dashboards string    present while some hub has a dashboard listening: votes are
--                              published only then
-- KEYS[5] ('log' only) string  id of the last decision event published after its write
--                              reached replicas (see publish_pending.lua)
-- then six keys per vote, from KEYS[6] ('log') or KEYS[5] ('defer'):
--   votes     sorted set  instanceId -> sequence number (1, 2, 3, ... in arrival order)
--   tally     hash        value -> count
--   result    hash        value, voteCount, decidedAt, eventId (written once, never
--                         changed, except that eventId is added later in 'defer' mode)
--   metadata  hash        decision, totalInstances, quorum, openedAt, closeAfterMs,
--                         closesAt, format, closed (once closed: 'decided' or 'expired')
--   ballots   hash        instanceId -> value
--   'log':   list  the voting instance's recent vote times (ms), newest first
--   'defer': hash  instanceId -> the rate-window place its recorded vote took
--
-- ARGV[1] mode, ARGV[2] stream cap (approximate MAXLEN), ARGV[3] pub/sub channel for
-- decision events, ARGV[4] pub/sub channel for recorded votes (quorum.vote.recorded, for
-- dashboards), ARGV[5] most votes per instance per window (0: no limit; 'log' only),
-- ARGV[6] window in ms, ARGV[7] most decisions the index keeps (the oldest opened drop
-- out), ARGV[8] ('log' only) 'later' when a decision event is published only once its write
-- is on replicas (the hub runs publish_pending.lua then), '' to publish it at once, ARGV[9]
-- ('log' only) how long a closed decision's keys are kept (ms), ARGV[10] how many votes,
-- then eleven arguments per vote, from ARGV[11]:
--   decision name, instanceId, value,
--   totalInstances stated by the caller ('' when omitted; only a stated one can mismatch),
--   totalInstances and quorum to open the decision with (the caller computes the quorum, so
--   the rule has one source; the script only stores it),
--   closeAfterMs stated by the caller ('' when omitted), closeAfterMs to open the decision
--   with (the stated one, or the longest any decision stays open),
--   ('defer' only) milliseconds until the voter's rate window has room when its reservation
--   was refused, '' otherwise, ('defer' only) the place this vote took in the rate window
--   ('' for none),
--   the policy: '' (open as the caller states, without a policy), 'ask' (a policy applies
--   whose terms the hub reads only for a decision not open yet: answer needs_opening
--   instead of opening it) or the terms to open it under, as a JSON object {pattern,
--   threshold, role?, values? (a JSON array, as text), members? (the electorate's
--   instances, with a role), openers?}. A decision opened under a policy keeps it in its
--   metadata (policy, threshold, role, values, openers, and member:<instanceId> for each
--   elector): later votes are judged against those, whatever the caller passes.
--
-- Returns one answer per vote, in order: {outcome, voteCount, totalInstances, quorum,
-- finalDecision or '', recordedValue or '', eventId or '', decidedAt or '', place or ''},
-- place being (for already_voted, 'defer' mode) the rate-window place the recorded vote
-- took: a retry of this very vote finds its own.
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

local deferred = ARGV[1] == 'defer'
local index, log, deadlines, flag = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local published = not deferred and KEYS[5] or nil
local stream_cap, channel, vote_channel = ARGV[2], ARGV[3], ARGV[4]
local rate_max, rate_window = tonumber(ARGV[5]), tonumber(ARGV[6])
local index_cap, publish = ARGV[7], ARGV[8] == 'later' and '' or 'PUBLISH'
local retention = ARGV[9]
-- One clock reading for the batch: its votes happen in one atomic run.
local now = now_ms()
-- What the batch learnt once: whether the dashboards flag is set, whether events wait in
-- the log to be published (nil: not asked yet), and whether a vote opened a decision.
local dashboards, waiting, opened_any = nil, nil, false

-- Whether `wanted` is in the array `list`.
local function contains(list, wanted)
  for _, v in ipairs(list) do
    if v == wanted then
      return true
    end
  end
  return false
end

-- Whether `wanted` is in the JSON array `allowed`.
local function listed(allowed, wanted)
  return contains(cjson.decode(allowed), wanted)
end

-- Opens a decision's metadata under the policy terms `p` (decoded).
local function open_under(meta, p)
  redis.call('HSET', meta, 'policy', p.pattern, 'threshold', p.threshold)
  if p.values then
    redis.call('HSET', meta, 'values', p.values)
  end
  if p.openers then
    redis.call('HSET', meta, 'openers', p.openers)
  end
  if p.role then
    redis.call('HSET', meta, 'role', p.role)
    for _, member in ipairs(p.members) do
      redis.call('HSET', meta, 'member:' .. member, '1')
    end
  end
end

-- The instances voting on each decision in this batch, by its metadata key.
local first_key, voters = deferred and 5 or 6, {}
for i = 0, tonumber(ARGV[10]) - 1 do
  local meta = KEYS[first_key + i * 6 + 3]
  local list = voters[meta]
  if not list then
    list = {}
    voters[meta] = list
  end
  list[#list + 1] = ARGV[11 + i * 11 + 1]
end

-- What the batch knows of each decision its votes are on, by metadata key, and the
-- decisions whose votes wait to be written.
local decisions, unwritten = {}, {}

-- A decision's state as the first of the batch's votes on it reads it (its keys from
-- KEYS[k]): `opened`, its metadata {totalInstances, quorum, closeAfterMs, closesAt, values,
-- role, closed, format}, false where absent; `final`, its result once closed ({value,
-- voteCount, eventId, decidedAt, expiredAt, tally}), else nil; `count`, its votes (nil: not
-- asked yet). With more than one vote of the batch on it, `cast` holds its voters' ballots
-- (instance -> value or false) and `due` what they recorded and is not written yet.
local function decision_at(k)
  local meta = KEYS[k + 3]
  local d = decisions[meta]
  if d then
    return d
  end
  local opened = redis.call('HMGET', meta, 'totalInstances', 'quorum', 'closeAfterMs',
    'closesAt', 'values', 'role', 'closed', 'format')
  d = {votes = KEYS[k], tally = KEYS[k + 1], result = KEYS[k + 2], meta = meta,
    ballots = KEYS[k + 4], opened = opened}
  local batch_voters = voters[meta]
  if #batch_voters > 1 then
    d.cast = {}
    if opened[1] then
      local cast = redis.call('HMGET', d.ballots, unpack(batch_voters))
      for n, instance in ipairs(batch_voters) do
        d.cast[instance] = cast[n]
      end
    end
  end
  if not opened[1] then
    d.count = 0
  elseif opened[7] or opened[8] ~= FORMAT then
    -- Metadata written without `format` does not say whether the decision is closed: its
    -- result is asked instead.
    local final = redis.call('HMGET', d.result, 'value', 'voteCount', 'eventId', 'decidedAt',
      'expiredAt', 'tally')
    if final[1] or final[5] then
      d.final = final
    end
  end
  decisions[meta] = d
  return d
end

-- How many votes decision `d` has.
local function votes_of(d)
  if not d.count then
    d.count = redis.call('ZCARD', d.votes)
  end
  return d.count
end

-- The value `instance` voted on decision `d`, or false.
local function ballot_of(d, instance)
  if d.cast then
    return d.cast[instance] or false
  end
  return redis.call('HGET', d.ballots, instance) or false
end

-- Records `instance`'s ballot for `value` on decision `d` as vote number `seq`, unless it
-- has one: returns whether it was recorded, and (for a lone vote) the value's tally.
local function record(d, instance, value, seq)
  if d.cast then
    if d.cast[instance] then
      return false
    end
    d.cast[instance] = value
    local due = d.due
    if not due then
      due = {ballots = {}, votes = {}, tally = {}, values = {}}
      d.due = due
      unwritten[#unwritten + 1] = d
    end
    local b, v = due.ballots, due.votes
    b[#b + 1], b[#b + 2] = instance, value
    v[#v + 1], v[#v + 2] = seq, instance
    if not due.tally[value] then
      due.tally[value] = 0
      due.values[#due.values + 1] = value
    end
    due.tally[value] = due.tally[value] + 1
    return true
  end
  if d.count == 0 then
    redis.call('HSET', d.ballots, instance, value)
  elseif redis.call('HSETNX', d.ballots, instance, value) == 0 then
    return false
  end
  redis.call('ZADD', d.votes, seq, instance)
  return true, redis.call('HINCRBY', d.tally, value, 1)
end

-- Writes what the votes recorded on decision `d` and not written yet: their ballots, their
-- places, the tally. Returns the tally of the values they were for.
local function write_due(d)
  local due, counts = d.due, {}
  if not due then
    return counts
  end
  redis.call('HSET', d.ballots, unpack(due.ballots))
  redis.call('ZADD', d.votes, unpack(due.votes))
  for _, v in ipairs(due.values) do
    counts[v] = redis.call('HINCRBY', d.tally, v, due.tally[v])
  end
  d.due = nil
  return counts
end

-- The rule that refuses a vote by `instance` for `value` on open decision `d`, in the order
-- the rules win, or nil: 'decided' or 'expired' (its result says it is closed),
-- 'expired_now' (past its deadline), 'not_in_electorate', 'value_refused',
-- 'total_mismatch' or 'close_mismatch'.
local function refusal(d, instance, value, stated_total, stated_close)
  local opened = d.opened
  if d.final then
    return d.final[1] and 'decided' or 'expired'
  elseif past_deadline(opened[4], now) then
    return 'expired_now'
  elseif opened[6] and not redis.call('HGET', d.meta, 'member:' .. instance) then
    return 'not_in_electorate'
  elseif opened[5] and not listed(opened[5], value) then
    return 'value_refused'
  elseif stated_total ~= '' and stated_total ~= opened[1] then
    return 'total_mismatch'
  elseif stated_close ~= '' and opened[3] and stated_close ~= opened[3] then
    return 'close_mismatch'
  end
  return nil
end

-- Judges one vote on decision `d`: its keys from KEYS[k], its arguments from ARGV[a].
local function vote(d, k, a)
  local rate = KEYS[k + 5]
  local votes, tally, result, meta, ballots = d.votes, d.tally, d.result, d.meta, d.ballots
  local decision, instance, value = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local stated_total, stated_close = ARGV[a + 3], ARGV[a + 6]
  local opened = d.opened
  local total, quorum = opened[1], opened[2]

  local function answer(outcome, count, final_value, recorded_value, event_id, decided_at,
      taken)
    return {outcome, count, total, quorum, final_value or '', recorded_value or '',
      event_id or '', decided_at or '', taken or ''}
  end

  -- The answer for an instance whose vote is recorded already (`recorded`, its value), or
  -- nil for one whose vote is not.
  local function already_voted(recorded)
    if not recorded then
      return nil
    end
    local final = d.final or {}
    local taken = deferred and redis.call('HGET', rate, instance) or ''
    return answer('already_voted', votes_of(d), final[1], recorded, final[3], final[4], taken)
  end

  -- Each rule answers only after the one-vote rule: a retry of a vote that counted always
  -- learns so.
  if total then
    local refused = refusal(d, instance, value, stated_total, stated_close)
    if refused then
      local voted = already_voted(ballot_of(d, instance))
      if voted then
        return voted
      end
      local final = d.final
      -- Rule: the result is final. Later votes are not recorded, whatever totalInstances
      -- they state: a decided decision answers every new voter the same way.
      if refused == 'decided' then
        return answer('decided', tonumber(final[2]), final[1], '', final[3], final[4])
      end
      -- Rule: an expired decision is closed. Votes after its deadline are not recorded;
      -- the first to find it past its deadline closes it.
      if refused == 'expired' then
        return answer('expired', tonumber(final[2]), '', final[6], final[3], final[5])
      end
      if refused == 'expired_now' then
        write_due(d)
        local count = string.format('%d', votes_of(d))
        local at_expiry = tally_json(votes, ballots, tally)
        redis.call('HSET', meta, 'closed', 'expired')
        redis.call('ZREM', deadlines, decision)
        opened[7] = 'expired'
        if deferred then
          redis.call('HSET', result, 'expiredAt', now, 'voteCount', count, 'tally', at_expiry)
          redis.call('ZADD', log, now, decision)
          d.final = {false, count, false, false, now, at_expiry}
          return answer('expired_now', count, '', at_expiry, '', now)
        end
        local event_id
        event_id, waiting = log_event(log, published, stream_cap, channel, publish, decision,
          '', count, quorum, total, now, at_expiry, waiting)
        redis.call('HSET', result, 'expiredAt', now, 'voteCount', count, 'tally', at_expiry,
          'eventId', event_id)
        retain({votes, tally, result, meta, ballots}, retention)
        d.final = {false, count, event_id, false, now, at_expiry}
        return answer('expired_now', count, '', at_expiry, event_id, now)
      end
      -- Rule: the first vote fixed the deadline; a different stated closeAfterMs is refused
      -- (the answer's count is the closeAfterMs the decision opened with).
      if refused == 'close_mismatch' then
        return answer('close_mismatch', tonumber(opened[3]))
      end
      -- Rules: a decision opened with an electorate takes votes from its members only; one
      -- opened with allowed values takes no other; the first vote fixed totalInstances.
      return answer(refused, votes_of(d))
    end
  end

  local policy, terms = ARGV[a + 10], nil
  if not total then
    total, quorum = ARGV[a + 4], ARGV[a + 5]
    if policy == 'ask' then
      return answer('needs_opening', 0)
    end
    -- Rule: the policy the decision opens under judges its first vote too.
    if policy ~= '' then
      terms = cjson.decode(policy)
      if terms.role and not contains(terms.members, instance) then
        return answer('not_in_electorate', 0)
      end
      if terms.values and not listed(terms.values, value) then
        return answer('value_refused', 0)
      end
    end
  end

  -- The voter's reservation in its rate window was refused ('defer' mode), or its window
  -- is full ('log' mode): a sliding window kept as the instance's last rate_max vote
  -- times. Only now, so that the answers above still win over the limit.
  local wait_ms = nil
  if ARGV[a + 8] ~= '' then
    wait_ms = tonumber(ARGV[a + 8])
  elseif not deferred and rate_max > 0 then
    local oldest = tonumber(redis.call('LINDEX', rate, rate_max - 1))
    if oldest and oldest + rate_window > tonumber(now) then
      wait_ms = oldest + rate_window - tonumber(now)
    end
  end
  if wait_ms then
    return already_voted(opened[1] and ballot_of(d, instance)) or answer('rate_limited', wait_ms)
  end

  -- Rule: one vote per instance. The vote is recorded unless this instance's already is.
  local seq = votes_of(d) + 1
  if not opened[1] then
    local close_after = ARGV[a + 7]
    local closes_at = string.format('%.0f', tonumber(now) + tonumber(close_after))
    redis.call('HSET', meta, 'decision', decision, 'totalInstances', total, 'quorum', quorum,
      'openedAt', now, 'closeAfterMs', close_after, 'closesAt', closes_at, 'format', FORMAT)
    if terms then
      open_under(meta, terms)
    end
    redis.call('ZADD', deadlines, closes_at, decision)
    -- Indexed in this same run, so a recorded decision is never missing from get_state
    -- (and trimmed to its cap once the batch is judged).
    redis.call('ZADD', index, 'NX', now, decision)
    opened_any = true
    -- Later votes of the batch on it find it open, with these terms.
    opened = {total, quorum, close_after, closes_at, terms and terms.values or false,
      terms and terms.role or false, false, FORMAT}
    d.opened = opened
  end
  local recorded, count = record(d, instance, value, seq)
  if not recorded then
    return already_voted(ballot_of(d, instance))
  end
  d.count = seq
  if deferred then
    if ARGV[a + 9] ~= '' then
      redis.call('HSET', rate, instance, ARGV[a + 9])
    end
  elseif rate_max > 0 then
    if redis.call('LPUSH', rate, now) > rate_max then
      redis.call('LTRIM', rate, 0, rate_max - 1)
    end
    redis.call('PEXPIRE', rate, rate_window)
  end
  -- Votes are published for dashboards only while some hub has one listening.
  if dashboards == nil then
    dashboards = redis.call('EXISTS', flag) == 1
  end
  if dashboards then
    redis.call('PUBLISH', vote_channel, '{"decision":' .. cjson.encode(decision) ..
      ',"instanceId":' .. cjson.encode(instance) .. ',"value":' .. cjson.encode(value) ..
      ',"voteCount":' .. seq .. ',"quorum":' .. quorum .. ',"totalInstances":' .. total .. '}')
  end

  if seq < tonumber(quorum) then
    return answer('recorded', seq)
  end

  -- Quorum reached by this vote: the decision is made, with the winner of rule 5 (this
  -- vote's value when it holds most of the votes, else as the votes say).
  count = count or write_due(d)[value]
  local winner = value
  if count <= seq - count then
    winner = winner_of(votes, ballots)
  end
  local vote_count = string.format('%d', seq)
  redis.call('HSET', meta, 'closed', 'decided')
  redis.call('ZREM', deadlines, decision)
  opened[7] = 'decided'
  if deferred then
    redis.call('HSET', result, 'value', winner, 'voteCount', vote_count, 'decidedAt', now)
    redis.call('ZADD', log, now, decision)
    d.final = {winner, vote_count, false, now, false, false}
    return answer('decided_now', seq, winner, '', '', now)
  end
  local event_id
  event_id, waiting = log_event(log, published, stream_cap, channel, publish, decision, winner,
    vote_count, quorum, total, now, nil, waiting)
  redis.call('HSET', result, 'value', winner, 'voteCount', vote_count, 'decidedAt', now,
    'eventId', event_id)
  retain({votes, tally, result, meta, ballots}, retention)
  d.final = {winner, vote_count, event_id, now, false, false}
  return answer('decided_now', seq, winner, '', event_id, now)
end

local answers = {}
for i = 0, tonumber(ARGV[10]) - 1 do
  local k = first_key + i * 6
  answers[i + 1] = vote(decision_at(k), k, 11 + i * 11)
end
for _, d in ipairs(unwritten) do
  write_due(d)
end
if opened_any then
  redis.call('ZREMRANGEBYRANK', index, 0, -tonumber(index_cap) - 1)
end
return answers
