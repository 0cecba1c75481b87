-- webhook_settle.lua: records one attempt at a delivery and what follows from it.
--
-- KEYS[1] endpoint  hash    state, last attempt, failingSince
-- KEYS[2] due       zset    delivery -> when it is due (ms)
-- KEYS[3] tries     hash    delivery -> attempts claimed
-- KEYS[4] attempts  stream  the attempt log, capped
-- ARGV[1] delivery (an event id, or 'gap:<id>' for the notice of missing events), ARGV[2]
-- what follows: 'delivered', 'retry' (due again at ARGV[3]),
-- 'given_up', 'gone' (the receiver answered 410: the endpoint is disabled, the delivery
-- waits for it to be enabled again), 'skipped' (not an event the endpoint asked for: no
-- attempt is logged);
-- ARGV[3] when a retry is due (ms), ARGV[4] now (ms), ARGV[5] attempt number, ARGV[6] HTTP
-- status ('' when none), ARGV[7] error ('' when none), ARGV[8] duration (ms), ARGV[9] most
-- entries the attempt log keeps, ARGV[10] disable after failing this long (ms), ARGV[11]
-- the event's id (or the notice's).
--
-- Returns 0 when the endpoint is gone, 2 when this attempt disabled it, 1 otherwise.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local delivery, outcome, now = ARGV[1], ARGV[2], ARGV[4]
-- The notice of missing events is the member 'gap'; the point it was sent for is noted.
local sent_gap = nil
if string.sub(delivery, 1, 4) == 'gap:' then
  sent_gap = string.sub(delivery, 5)
  delivery = 'gap'
end
-- Done with the delivery; but a notice stays due if an earlier point was noted meanwhile.
local function forget()
  if sent_gap and redis.call('HGET', KEYS[1], 'gap') ~= sent_gap then
    redis.call('ZADD', KEYS[2], now, 'gap')
    return
  end
  redis.call('ZREM', KEYS[2], delivery)
  redis.call('HDEL', KEYS[3], delivery)
  if sent_gap then
    redis.call('HDEL', KEYS[1], 'gap')
  end
end
if outcome == 'skipped' then
  forget()
  return 1
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'event', ARGV[11], 'attempt', ARGV[5],
  'status', ARGV[6], 'error', ARGV[7], 'duration', ARGV[8], 'at', now, 'outcome', outcome)
redis.call('HSET', KEYS[1], 'lastEvent', ARGV[11], 'lastAt', now, 'lastStatus', ARGV[6],
  'lastError', ARGV[7], 'lastOutcome', outcome)
if outcome == 'delivered' then
  forget()
  redis.call('HDEL', KEYS[1], 'failingSince')
  return 1
end
if outcome == 'gone' then
  redis.call('ZADD', KEYS[2], 'XX', now, delivery)
  redis.call('HSET', KEYS[1], 'state', 'disabled', 'disabledReason',
    'the receiver answered 410 Gone', 'disabledAt', now)
  return 2
end
if outcome == 'retry' then
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], delivery)
else
  forget()
end
redis.call('HSETNX', KEYS[1], 'failingSince', now)
local since = tonumber(redis.call('HGET', KEYS[1], 'failingSince'))
if tonumber(now) - since >= tonumber(ARGV[10]) then
  redis.call('HSET', KEYS[1], 'state', 'disabled', 'disabledReason',
    'every attempt failed for ' .. math.floor(tonumber(ARGV[10]) / 1000) .. ' s',
    'disabledAt', now)
  return 2
end
return 1
