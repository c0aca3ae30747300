-- Write fields of one action's own record (its traced calls, its report) while, and only while,
-- that attempt of the action holds its lease: an action that ended, another attempt or a dropped
-- run writes nothing (what it wrote would outlive what drops it). What it adds counts against the
-- tenant's max_stored_bytes like its specs and results, and goes back when the run is dropped.
-- The hash's cap in fields counts every field at once, so writers on several servers never pass it.
-- KEYS: 1 the run's states, 2 the run's hash to write, 3 the run's meta, 4 the tenant's stats.
-- ARGV: 1 the action, 2 its attempt, 3 QUEUED, 4 SUCCEEDED (the first terminal phase), 5 the hash's
--       cap in fields (0: none), 6 the tenant's max_stored_bytes, 7.. field, value pairs (callers
--       send at most 1000 pairs).
-- Returns 1 when written, 0 when the attempt does not hold its lease, -1 when the hash is at its
-- cap, {-2, stored, adding} when the tenant's stored bytes would pass max_stored_bytes.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state then return 0 end
local phase, attempt = string.match(state, '^(%d+):(%d+):')
phase = tonumber(phase)
-- Leased and not ended: what an action token needs too (tokens.py).
if attempt ~= ARGV[2] or phase <= tonumber(ARGV[3]) or phase >= tonumber(ARGV[4]) then return 0 end
local cap = tonumber(ARGV[5])
if cap > 0 and redis.call('HLEN', KEYS[2]) + (#ARGV - 6) / 2 > cap then return -1 end
local adding = 0
for i = 7, #ARGV, 2 do
  adding = adding + #ARGV[i + 1] - redis.call('HSTRLEN', KEYS[2], ARGV[i])
end
local stored = tonumber(redis.call('HGET', KEYS[4], 'bytes') or '0')
if adding > 0 and stored + adding > tonumber(ARGV[6]) then return {-2, stored, adding} end
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if adding ~= 0 then
  redis.call('HINCRBY', KEYS[3], 'bytes', adding)
  redis.call('HINCRBY', KEYS[4], 'bytes', adding)
end
return 1
