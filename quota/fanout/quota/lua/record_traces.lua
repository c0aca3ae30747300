-- Record traced calls of one running action (@fanout.trace), so its retries replay them.
-- Only while that attempt of the action holds its lease: an action that ended, another attempt or a
-- dropped run records nothing (its traces would outlive what drops them). The run's cap counts every
-- trace at once, so writers on several servers never pass it.
-- KEYS: 1 the run's states, 2 the run's traces. ARGV: 1 the action, 2 its attempt, 3 QUEUED,
-- 4 SUCCEEDED (the first terminal phase), 5 the run's cap, 6.. field, record pairs (the caller
-- sends at most MAX_RECORDS pairs).
-- Returns 1 when recorded, 0 when the attempt no longer runs, -1 when the run is at its cap.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state then return 0 end
local phase, attempt = string.match(state, '^(%d+):(%d+):')
phase = tonumber(phase)
-- Leased and not ended: what an action token needs too (tokens.py).
if attempt ~= ARGV[2] or phase <= tonumber(ARGV[3]) or phase >= tonumber(ARGV[4]) then return 0 end
local pairs_given = (#ARGV - 5) / 2
if redis.call('HLEN', KEYS[2]) + pairs_given > tonumber(ARGV[5]) then return -1 end
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
