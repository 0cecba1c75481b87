-- mark_logged.lua (Redis Cluster): after a decision's event is in the log, records its event
-- id beside the result, takes the decision off its partition's unlogged set, and starts the
-- decision's retention.
--
-- The scripts that close a decision on a cluster leave its keys without an expiry: however
-- long its event waits for the log (the log's primary failing over, replicas that do not
-- confirm), the decision stays, and the sweep logs it. Its keys expire `retention` after
-- the first mark; a later mark (hubs that logged the same decision at once) leaves the
-- expiry as it is.
--
-- A result that is gone (lost with a failed primary) is not written again: the event id
-- alone would make a key without an expiry, and whatever else is left of the decision is
-- open again and is not retained.
--
-- KEYS[1] result, KEYS[2] the partition's unlogged set, KEYS[3..] the decision's other keys
-- (votes, tally, metadata, ballots, places); ARGV[1] event id, ARGV[2] decision, ARGV[3] how
-- long a closed decision's keys are kept (ms).

local result = KEYS[1]
if redis.call('EXISTS', result) == 1 then
  if redis.call('HEXISTS', result, 'eventId') == 0 then
    redis.call('PEXPIRE', result, ARGV[3])
    for i = 3, #KEYS do
      redis.call('PEXPIRE', KEYS[i], ARGV[3])
    end
  end
  redis.call('HSET', result, 'eventId', ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
