-- Commit a staged batch: check the limits against its totals and charge them, all or nothing.
-- Rejected (or a dry run), the staging is dropped and nothing is charged. Committed, the
-- staging is kept until move.lua has made every action visible, and the batch is recorded
-- in the tenant's committed set so that any server finishes moving it if this one dies.
-- KEYS: 1 run meta, 2 states, 3 limits, 4 stats, 5 slots, 6 parents(run),
--       7 stage chunks, 8 stage meta, 9 the tenant's committed set
-- ARGV: 1 run, 2 parent, 3 now, 4 default max_fanout, 5 default max_queued,
--       6 default max_stored_bytes, 7 chunks staged, 8 "run/batch" (committed set member), 9 1 for a dry run
local run, parent = ARGV[1], ARGV[2]
local function drop() redis.call('UNLINK', KEYS[7], KEYS[8]) end

if tonumber(redis.call('HGET', KEYS[8], 'chunks') or '-1') ~= tonumber(ARGV[7])
  or redis.call('HGET', KEYS[8], 'state') ~= 'staging' then
  return {'LOST'}
end
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then drop(); return {'NO_RUN'} end
if tonumber(phase) >= 5 then drop(); return {'RUN_DONE', phase} end
local pst = redis.call('HGET', KEYS[2], parent)
if not pst then drop(); return {'NO_PARENT'} end
local pphase = tonumber(string.match(pst, '^(%d+):'))
if pphase >= 5 then drop(); return {'PARENT_DONE', pphase} end

local used = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local max_fanout = tonumber(redis.call('HGET', KEYS[3], 'max_fanout') or ARGV[4])
local max_queued = tonumber(redis.call('HGET', KEYS[3], 'max_queued') or ARGV[5])
local max_bytes = tonumber(redis.call('HGET', KEYS[3], 'max_stored_bytes') or ARGV[6])
local queued = tonumber(redis.call('HGET', KEYS[4], 'queued') or '0')
local stored = tonumber(redis.call('HGET', KEYS[4], 'bytes') or '0')
local k = tonumber(redis.call('HGET', KEYS[8], 'n'))
local bytes = tonumber(redis.call('HGET', KEYS[8], 'bytes'))
local present = tonumber(redis.call('HGET', KEYS[8], 'present'))

if used + k > max_fanout then drop(); return {'FANOUT', max_fanout, used, k} end
if queued + k > max_queued then drop(); return {'QUEUED', max_queued, queued, k} end
if k > 0 and stored + bytes > max_bytes then drop(); return {'BYTES', max_bytes, stored, bytes} end
if ARGV[9] == '1' or k == 0 then
  drop()
  if k == 0 and parent ~= '' and ARGV[9] ~= '1' then redis.call('SREM', KEYS[5], run .. '/' .. parent) end
  return {'OK', k, present, used + k, max_fanout, 0}
end

redis.call('HINCRBY', KEYS[1], 'count', k)
redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
redis.call('HINCRBY', KEYS[1], 'moving', 1)
redis.call('HINCRBY', KEYS[4], 'queued', k)
redis.call('HINCRBY', KEYS[4], 'bytes', bytes)
redis.call('SADD', KEYS[6], parent)
-- A parent awaiting its children holds no concurrency slot (see admit.lua).
if parent ~= '' then redis.call('SREM', KEYS[5], run .. '/' .. parent) end
redis.call('HSET', KEYS[8], 'state', 'committed')
redis.call('PERSIST', KEYS[7])
redis.call('PERSIST', KEYS[8])
redis.call('ZADD', KEYS[9], ARGV[3], ARGV[8])
return {'OK', k, present, used + k, max_fanout, 1}
