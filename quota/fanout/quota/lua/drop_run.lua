-- One bounded step of dropping a finished run whose retention has passed:
-- unlink the keys of up to ARGV[4] of its parents (popped from its parents
-- set, so no cursor is needed and a step is never repeated), and with the
-- last step the run's own keys, giving its stored bytes back to the tenant.
-- UNLINK frees big values in the background, so a huge hash costs no more
-- here than a small one.
-- KEYS: 1 finished, 2 stats, 3 run meta, 4 parents(run), 5 the tenant's runs by creation time
-- ARGV: 1 tenant prefix, 2 run, 3 drop runs that finished before this time,
--       4 most parents per step, then the per-parent key suffixes, "|", the per-run key suffixes
-- Returns 1 when the run is gone, 0 when more steps are needed, -1 when it is not due.
local prefix, run = ARGV[1], ARGV[2]
local finished = redis.call('ZSCORE', KEYS[1], run)
if not finished or tonumber(finished) >= tonumber(ARGV[3]) then return -1 end
local per_parent, per_run, i = {}, {}, 5
while ARGV[i] ~= '|' do per_parent[#per_parent + 1] = ARGV[i]; i = i + 1 end
for j = i + 1, #ARGV do per_run[#per_run + 1] = ARGV[j] end

for _, parent in ipairs(redis.call('SPOP', KEYS[4], tonumber(ARGV[4]))) do
  for _, suffix in ipairs(per_parent) do
    redis.call('UNLINK', prefix .. suffix .. run .. ':' .. parent)
  end
end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
if bytes ~= 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -bytes) end
for _, suffix in ipairs(per_run) do
  redis.call('UNLINK', prefix .. suffix .. run)
end
redis.call('ZREM', KEYS[1], run)
redis.call('ZREM', KEYS[5], run)
return 1
