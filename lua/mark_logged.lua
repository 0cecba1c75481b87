-- mark_logged.lua (Redis Cluster): after a decision's event is in the log, records its event
-- id beside the result and takes the decision off its partition's unlogged set.
--
-- A result that expired meanwhile (its retention ran out) is not written again: the event
-- id alone would make a key without an expiry.
--
-- KEYS[1] result, KEYS[2] the partition's unlogged set; ARGV[1] event id, ARGV[2] decision.

if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'eventId', ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
