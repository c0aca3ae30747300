-- Make one staged chunk of a committed batch visible: specs, states, the parent's children, the
-- run's queue. A name admitted meanwhile by another batch is skipped and its charge given back; so
-- is every name once the run, or the batch's parent, has ended (no longer admitted, and an aborted
-- parent's walk, abort_step.lua, has read its children already), so the counters stay
-- equal to the records. Any server may call this for any committed batch: each chunk is taken
-- (by the meta's `moved` index) by exactly one call. The call that moves the last chunk drops the
-- staging and keeps the meta a while, so the submitter can read the final counts.
-- KEYS: 1 run meta, 2 specs, 3 states, 4 run queue, 5 stats, 6 stage chunks, 7 stage meta,
--       8 the tenant's committed set, 9 the tenant's list of runs with queued actions
-- ARGV: 1 tenant prefix, 2 run, 3 now, 4 "run/batch", 5 meta TTL when done
-- Returns {'MORE'}, {'DONE', fresh, skipped (admitted meanwhile), dropped (the run or the parent ended), present},
-- or {'GONE'} (no such batch, or done long ago).
local run, now = ARGV[2], ARGV[3]
local state = redis.call('HGET', KEYS[7], 'state')
local function totals(status)
  local m = redis.call('HMGET', KEYS[7], 'n', 'skipped', 'dropped', 'present')
  return {status, tonumber(m[1]), tonumber(m[2] or '0'), tonumber(m[3] or '0'), tonumber(m[4])}
end
if not state or state == 'staging' then
  redis.call('ZREM', KEYS[8], ARGV[4])
  return {'GONE'}
end
if state == 'done' then return totals('DONE') end

local parent = redis.call('HGET', KEYS[7], 'parent')
local phase = tonumber(redis.call('HGET', KEYS[1], 'phase') or '-1')
local parent_state = redis.call('HGET', KEYS[3], parent)
local live = phase >= 0 and phase < 5 and parent_state and tonumber(string.match(parent_state, '^(%d+):')) < 5
local at = tonumber(redis.call('HGET', KEYS[7], 'moved') or '0')
local chunks = tonumber(redis.call('HGET', KEYS[7], 'chunks'))
local wire = redis.call('HGET', KEYS[6], at)  -- absent when the chunk held no fresh action
local skipped, dropped, refund = 0, 0, 0
if wire then
  local names, bounds = parse_batch(wire)
  local specs, states, queue, moved = {}, {}, {}, {}
  local cstate, suffix = '1:0:' .. parent, '/' .. now
  local known = {}
  if live then known = redis.call('HMGET', KEYS[3], unpack(names)) end
  for i, n in ipairs(names) do
    local size = bounds[2 * i] - bounds[2 * i - 1] + 1
    if not live then
      dropped = dropped + 1
      refund = refund + size
    elseif known[i] then
      skipped = skipped + 1
      refund = refund + size
    else
      moved[#moved + 1] = n
      specs[#specs + 1] = n
      specs[#specs + 1] = string.sub(wire, bounds[2 * i - 1], bounds[2 * i])
      states[#states + 1] = n
      states[#states + 1] = cstate
      queue[#queue + 1] = n .. suffix
    end
  end
  if #moved > 0 then
    redis.call('HSET', KEYS[2], unpack(specs))
    redis.call('HSET', KEYS[3], unpack(states))
    redis.call('RPUSH', ARGV[1] .. 'kids:' .. run .. ':' .. parent, unpack(moved))
    if redis.call('RPUSH', KEYS[4], unpack(queue)) == #queue then redis.call('RPUSH', KEYS[9], run) end
    if redis.call('HEXISTS', KEYS[1], 'p1') == 1 then redis.call('HINCRBY', KEYS[1], 'p1', #moved) end
  end
  redis.call('HDEL', KEYS[6], at)
end
redis.call('HSET', KEYS[7], 'moved', at + 1)
if skipped > 0 then redis.call('HINCRBY', KEYS[7], 'skipped', skipped) end
if dropped > 0 then redis.call('HINCRBY', KEYS[7], 'dropped', dropped) end
if skipped + dropped > 0 then
  redis.call('HINCRBY', KEYS[5], 'queued', -(skipped + dropped))
  -- A run already dropped has given its bytes back whole, these included.
  if phase >= 0 then
    redis.call('HINCRBY', KEYS[5], 'bytes', -refund)
    redis.call('HINCRBY', KEYS[1], 'bytes', -refund)
    redis.call('HINCRBY', KEYS[1], 'count', -(skipped + dropped))
  end
end

if at + 1 < chunks then
  redis.call('ZADD', KEYS[8], 'XX', now, ARGV[4])
  return {'MORE'}
end
redis.call('UNLINK', KEYS[6])
redis.call('HSET', KEYS[7], 'state', 'done')
redis.call('EXPIRE', KEYS[7], ARGV[5])
redis.call('ZREM', KEYS[8], ARGV[4])
if phase >= 0 then redis.call('HINCRBY', KEYS[1], 'moving', -1) end
return totals('DONE')
