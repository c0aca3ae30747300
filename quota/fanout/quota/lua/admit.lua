-- Admit a small batch of actions into one run, all of it or none of it, in one script.
-- Bigger batches are staged, committed and moved in chunks (stage.lua, commit.lua, move.lua);
-- the caller keeps this script's batch small enough to run in a few milliseconds.
-- KEYS: 1 run meta, 2 specs, 3 states, 4 kids(run, parent), 5 run queue, 6 limits, 7 stats, 8 slots,
--       9 parents(run): every parent with children, so retention can find their keys,
--       10 the tenant's list of runs with queued actions, 11 the tenant's runs by creation time
-- ARGV: 1 run, 2 parent ("" for the root), 3 now, 4 default max_fanout, 5 default max_queued,
--       6 default max_stored_bytes, 7 mode: create | submit | dry,
--       8 1 to answer MOVING while a committed batch of the run is still being moved, else 0,
--       9 the batch (batch.lua): one argument instead of two per action, and the request's own
--         bytes, so the server re-serializes nothing
--       10 the inputs' bytes of the batch's one action, held here to the tenant's max_payload_bytes
--          (CreateRun's root: the server reads no limits before this call), or '' when the caller
--          checked them; 11 the default max_payload_bytes
local run, parent, now, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[7]
local packed = ARGV[9]
local all, specs_at = parse_batch(packed)

-- Bad input first: an oversized root is refused even when its run exists already.
if ARGV[10] ~= '' then
  local cap = tonumber(redis.call('HGET', KEYS[6], 'max_payload_bytes') or ARGV[11])
  if tonumber(ARGV[10]) > cap then return {'PAYLOAD', ARGV[10], cap, all[1]} end
end

if mode == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {'EXISTS'} end
else
  local phase = redis.call('HGET', KEYS[1], 'phase')
  if not phase then return {'NO_RUN'} end
  if tonumber(phase) >= 5 then return {'RUN_DONE', phase} end
  -- Finish a committed batch first, so its names count as present, not fresh.
  if ARGV[8] == '1' and tonumber(redis.call('HGET', KEYS[1], 'moving') or '0') > 0 then return {'MOVING'} end
  local pst = redis.call('HGET', KEYS[3], parent)
  if not pst then return {'NO_PARENT'} end
  local pphase = tonumber(string.match(pst, '^(%d+):'))
  if pphase >= 5 then return {'PARENT_DONE', pphase} end
end

local used = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local max_fanout = tonumber(redis.call('HGET', KEYS[6], 'max_fanout') or ARGV[4])
local max_queued = tonumber(redis.call('HGET', KEYS[6], 'max_queued') or ARGV[5])
local max_bytes = tonumber(redis.call('HGET', KEYS[6], 'max_stored_bytes') or ARGV[6])
local queued = tonumber(redis.call('HGET', KEYS[7], 'queued') or '0')
local stored = tonumber(redis.call('HGET', KEYS[7], 'bytes') or '0')

-- Resubmitted names (and repeats inside the batch) are success, charged once.
local known = redis.call('HMGET', KEYS[3], unpack(all))
local names, bodies, seen, present, bytes = {}, {}, {}, 0, 0
for i, n in ipairs(all) do
  if known[i] or seen[n] then
    present = present + 1
  else
    seen[n] = true
    names[#names + 1] = n
    bodies[#bodies + 1] = string.sub(packed, specs_at[2 * i - 1], specs_at[2 * i])
    bytes = bytes + specs_at[2 * i] - specs_at[2 * i - 1] + 1
  end
end
local k = #names

if used + k > max_fanout then return {'FANOUT', max_fanout, used, k} end
if queued + k > max_queued then return {'QUEUED', max_queued, queued, k} end
if k > 0 and stored + bytes > max_bytes then return {'BYTES', max_bytes, stored, bytes} end
if mode == 'dry' then return {'OK', k, present, used + k, max_fanout} end

if mode == 'create' then
  redis.call('HSET', KEYS[1], 'root', names[1], 'phase', 1, 'count', 0, 'created', now, 'bytes', 0, 'p1', 0)
  redis.call('ZADD', KEYS[11], now, run)
end

if k > 0 then
  local state, suffix = '1:0:' .. parent, '/' .. now
  local specs, states, queue = {}, {}, {}
  for i = 1, k do
    specs[2 * i - 1], specs[2 * i] = names[i], bodies[i]
    states[2 * i - 1], states[2 * i] = names[i], state
    queue[i] = names[i] .. suffix
  end
  redis.call('HSET', KEYS[2], unpack(specs))
  redis.call('HSET', KEYS[3], unpack(states))
  redis.call('RPUSH', KEYS[4], unpack(names))
  -- The run joins the tenant's round-robin when its queue was empty.
  if redis.call('RPUSH', KEYS[5], unpack(queue)) == k then redis.call('RPUSH', KEYS[10], run) end
  redis.call('HINCRBY', KEYS[1], 'count', k)
  -- Runs created before the phase counters existed stay uncounted (see lib.lua count_move).
  if redis.call('HEXISTS', KEYS[1], 'p1') == 1 then redis.call('HINCRBY', KEYS[1], 'p1', k) end
  redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
  redis.call('SADD', KEYS[9], parent)
  redis.call('HINCRBY', KEYS[7], 'queued', k)
  redis.call('HINCRBY', KEYS[7], 'bytes', bytes)
end
-- A parent awaiting its children holds no concurrency slot, so nested
-- fanouts cannot deadlock on the tenant's max_concurrency.
if parent ~= '' then redis.call('SREM', KEYS[8], run .. '/' .. parent) end
return {'OK', k, present, used + k, max_fanout}
