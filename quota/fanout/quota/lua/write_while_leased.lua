-- Write fields of one action's own record (its traced calls, its report) while, and only while,
-- that attempt of the action holds its lease: an action that ended, another attempt or a dropped
-- run writes nothing (what it wrote would outlive what drops it). The hash's cap counts every
-- field at once, so writers on several servers never pass it.
-- KEYS: 1 the run's states, 2 the run's hash to write. ARGV: 1 the action, 2 its attempt,
-- 3 QUEUED, 4 SUCCEEDED (the first terminal phase), 5 the hash's cap in fields (0: none),
-- 6.. field, value pairs (callers send at most 1000 pairs).
-- Returns 1 when written, 0 when the attempt does not hold its lease, -1 when the hash is at its cap.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state then return 0 end
local phase, attempt = string.match(state, '^(%d+):(%d+):')
phase = tonumber(phase)
-- Leased and not ended: what an action token needs too (tokens.py).
if attempt ~= ARGV[2] or phase <= tonumber(ARGV[3]) or phase >= tonumber(ARGV[4]) then return 0 end
local cap = tonumber(ARGV[5])
if cap > 0 and redis.call('HLEN', KEYS[2]) + (#ARGV - 5) / 2 > cap then return -1 end
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
