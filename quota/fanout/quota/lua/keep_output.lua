-- Keep what one attempt of an action printed, counted in the tenant's stored bytes (and the run's,
-- given back when the run is dropped). Written again (a report resent), it counts the difference.
-- A run already dropped keeps nothing: the output would outlive what drops it.
-- KEYS: 1 the run's outputs, 2 the run's meta, 3 the tenant's stats. ARGV: 1 "<action>/<attempt>", 2 the output.
-- Returns 1 when kept, 0 when the run is gone.
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local adding = #ARGV[2] - redis.call('HSTRLEN', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if adding ~= 0 then
  redis.call('HINCRBY', KEYS[2], 'bytes', adding)
  redis.call('HINCRBY', KEYS[3], 'bytes', adding)
end
return 1
