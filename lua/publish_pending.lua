-- publish_pending.lua: publishes, in log order, the decision events that wait for their
-- write to reach replicas (`--wait-replicas`), up to one the hub knows is acknowledged.
--
-- Replication is one ordered stream, so an acknowledged event means every event before it
-- is acknowledged too: they are published with it, whichever hub logged them. Each event is
-- published once; hubs drop any event they already delivered.
--
-- KEYS[1] stream     stream  decision events, capped
-- KEYS[2] published  string  id of the last event published (set when the first waiting
--                            event was logged; without it nothing waits)
-- ARGV[1] the acknowledged event id (publish up to and including it), ARGV[2] channel,
-- ARGV[3] 'PUBLISH' or 'SPUBLISH', ARGV[4] most events to publish in this run.
--
-- Returns how many events it published.

local from = redis.call('GET', KEYS[2])
if not from then
  return 0
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. from, ARGV[1], 'COUNT', ARGV[4])
for _, entry in ipairs(entries) do
  local f = {}
  for i = 1, #entry[2], 2 do
    f[entry[2][i]] = entry[2][i + 1]
  end
  redis.call(ARGV[3], ARGV[2], decision_json(f.decision, f.value, f.voteCount, f.quorum,
    f.totalInstances, entry[1], f.timestamp))
end
if #entries > 0 then
  redis.call('SET', KEYS[2], entries[#entries][1])
end
return #entries
