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
-- ARGV[3] 'PUBLISH' or 'SPUBLISH'.
--
-- Returns how many events it published (at most PUBLISH_BATCH; the rest in a later run).

return publish_upto(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], PUBLISH_BATCH)
