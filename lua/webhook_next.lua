-- webhook_next.lua: one endpoint's next deliveries. Takes the events logged since its
-- cursor into its due set, then claims the deliveries that are due, each for one hub for a
-- lease: a claimed delivery is due again when the lease runs out, so a hub that dies
-- during an attempt leaves it to another hub.
--
-- Events the log deleted (trimmed by its cap) before the endpoint had them, whether not
-- taken yet or waiting for a retry, are replaced by one notice that the events after the
-- earliest point are missing: the member 'gap' of the due set, that point in the
-- endpoint's field 'gap'.
--
-- KEYS[1] endpoint   hash    state, cursor (the last event taken), gap
-- KEYS[2] due        zset    delivery -> when it is due (ms): an event id, or 'gap'
-- KEYS[3] tries      hash    delivery -> attempts claimed
-- KEYS[4] stream     stream  decision events
-- KEYS[5] published  string  the last event published once replicas had it (absent:
--                            nothing waits for replicas)
-- ARGV[1] now in ms, ARGV[2] lease in ms, ARGV[3] most deliveries to claim, ARGV[4] most
-- events to take.
--
-- Returns {} when the endpoint is gone or disabled; otherwise {waiting, claimed...}, where
-- waiting counts the deliveries left due or leased and each claimed delivery is
-- {delivery, attempt, fields}: an event id with its entry's fields, or 'gap:<id>' (events
-- after <id> are missing) with none.

if redis.call('HGET', KEYS[1], 'state') ~= 'enabled' then
  return {}
end
local now = tonumber(ARGV[1])
local cursor = redis.call('HGET', KEYS[1], 'cursor') or '0-0'

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
-- The id just before `id`: a notice that events after it are missing covers `id` itself.
local function predecessor(id)
  local ms, seq = parse(id)
  if seq > 0 then
    return string.format('%d-%d', ms, seq - 1)
  end
  return string.format('%d', ms - 1) .. '-18446744073709551615'
end
local function after(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams > bms or (ams == bms and aseq > bseq)
end
-- Notes that events after `from` are missing: the one notice due covers the earliest.
local function note_gap(from)
  local noted = redis.call('HGET', KEYS[1], 'gap')
  if not noted or after(noted, from) then
    redis.call('HSET', KEYS[1], 'gap', from)
  end
  redis.call('ZADD', KEYS[2], 'NX', now, 'gap')
end

-- Events after the cursor that the log deleted before they were taken.
local info = redis.pcall('XINFO', 'STREAM', KEYS[4])
if type(info) == 'table' and not info.err then
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then
      local deleted = info[i + 1]
      if deleted ~= '0-0' and after(deleted, cursor) then
        note_gap(cursor)
        cursor = deleted
      end
    end
  end
end

local upto = redis.call('GET', KEYS[5]) or '+'
local taken = redis.call('XRANGE', KEYS[4], '(' .. cursor, upto, 'COUNT', ARGV[4])
for _, entry in ipairs(taken) do
  redis.call('ZADD', KEYS[2], 'NX', now, entry[1])
  cursor = entry[1]
end
redis.call('HSET', KEYS[1], 'cursor', cursor)

-- Due events the log deleted while they waited for a retry join the notice first, so that
-- it is claimed below with the earliest point.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[3])
local entries = {}
for _, delivery in ipairs(due) do
  if delivery ~= 'gap' then
    local entry = redis.call('XRANGE', KEYS[4], delivery, delivery)
    if entry[1] then
      entries[delivery] = entry[1][2]
    else
      redis.call('ZREM', KEYS[2], delivery)
      redis.call('HDEL', KEYS[3], delivery)
      note_gap(predecessor(delivery))
    end
  end
end

local claimed = {}
local leased = now + tonumber(ARGV[2])
due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[3])
for _, delivery in ipairs(due) do
  local fields = entries[delivery]
  local name = delivery
  if delivery == 'gap' then
    name = 'gap:' .. redis.call('HGET', KEYS[1], 'gap')
    fields = {}
  end
  if fields then
    redis.call('ZADD', KEYS[2], leased, delivery)
    local attempt = redis.call('HINCRBY', KEYS[3], delivery, 1)
    table.insert(claimed, {name, attempt, fields})
  end
end
local out = {redis.call('ZCARD', KEYS[2])}
for _, c in ipairs(claimed) do
  table.insert(out, c)
end
return out
