-- A tenant's work may have become leasable: mark it ready, then wake every server's lease streams.
-- One script, not a pipeline, so it is one round trip on a Redis Cluster too, where PUBLISH
-- cannot be pipelined; the published message still reaches subscribers on every node.
-- KEYS[1] = the ready set. ARGV[1] = the tenant, ARGV[2] = the wake channel, ARGV[3] = the wake
-- message ("<tenant> <origin>", see keys.WAKE_CHANNEL).
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('PUBLISH', ARGV[2], ARGV[3])
