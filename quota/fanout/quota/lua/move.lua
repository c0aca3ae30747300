-- Make one bounded chunk of a committed batch visible: specs, states, the parent's children,
-- the run's queue. A name admitted meanwhile by another batch is skipped and its charge given
-- back; so is every name once the run has ended (its actions are no longer admitted), so the
-- counters stay equal to the records. Any server may call this for any committed batch: each
-- name is popped from the staging by exactly one call. The call that moves the last chunk
-- drops the staging and keeps the meta a while, so the submitter can read the final counts.
-- KEYS: 1 run meta, 2 specs, 3 states, 4 run queue, 5 stats, 6 stage specs, 7 stage order,
--       8 stage meta, 9 the tenant's committed set, 10 the tenant's list of runs with queued actions
-- ARGV: 1 tenant prefix, 2 run, 3 now, 4 most actions, 5 most spec bytes (counted as the batch's
--       biggest spec times the actions), 6 "run/batch", 7 meta TTL when done
-- Returns {'MORE'}, {'DONE', fresh, skipped (admitted meanwhile), dropped (the run ended), present},
-- or {'GONE'} (no such batch, or done long ago).
local run, now = ARGV[2], ARGV[3]
local state = redis.call('HGET', KEYS[8], 'state')
local function totals(status)
  local m = redis.call('HMGET', KEYS[8], 'n', 'skipped', 'dropped', 'present')
  return {status, tonumber(m[1]), tonumber(m[2] or '0'), tonumber(m[3] or '0'), tonumber(m[4])}
end
if not state or state == 'staging' then
  redis.call('ZREM', KEYS[9], ARGV[6])
  return {'GONE'}
end
if state == 'done' then return totals('DONE') end

local parent = redis.call('HGET', KEYS[8], 'parent')
local phase = tonumber(redis.call('HGET', KEYS[1], 'phase') or '-1')
local live = phase >= 0 and phase < 5
local biggest = math.max(1, tonumber(redis.call('HGET', KEYS[8], 'biggest') or '1'))
local most = math.max(1, math.min(tonumber(ARGV[4]), math.floor(tonumber(ARGV[5]) / biggest)))
local cstate, suffix = '1:0:' .. parent, '/' .. now
local specs, states, queue, moved = {}, {}, {}, {}
local skipped, dropped, refund = 0, 0, 0
local names = redis.call('LPOP', KEYS[7], most) or {}
if #names > 0 then
  local bodies = redis.call('HMGET', KEYS[6], unpack(names))
  local known = {}
  if live then known = redis.call('HMGET', KEYS[3], unpack(names)) end
  for i, n in ipairs(names) do
    local spec = bodies[i]
    if not live then
      dropped = dropped + 1
      refund = refund + #spec
    elseif known[i] then
      skipped = skipped + 1
      refund = refund + #spec
    else
      moved[#moved + 1] = n
      specs[#specs + 1] = n
      specs[#specs + 1] = spec
      states[#states + 1] = n
      states[#states + 1] = cstate
      queue[#queue + 1] = n .. suffix
    end
  end
end
if #moved > 0 then
  redis.call('HSET', KEYS[2], unpack(specs))
  redis.call('HSET', KEYS[3], unpack(states))
  redis.call('RPUSH', ARGV[1] .. 'kids:' .. run .. ':' .. parent, unpack(moved))
  if redis.call('RPUSH', KEYS[4], unpack(queue)) == #queue then redis.call('RPUSH', KEYS[10], run) end
end
if skipped > 0 then redis.call('HINCRBY', KEYS[8], 'skipped', skipped) end
if dropped > 0 then redis.call('HINCRBY', KEYS[8], 'dropped', dropped) end
if skipped + dropped > 0 then
  redis.call('HINCRBY', KEYS[5], 'queued', -(skipped + dropped))
  -- A run already dropped has given its bytes back whole, these included.
  if phase >= 0 then
    redis.call('HINCRBY', KEYS[5], 'bytes', -refund)
    redis.call('HINCRBY', KEYS[1], 'bytes', -refund)
    redis.call('HINCRBY', KEYS[1], 'count', -(skipped + dropped))
  end
end

if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('ZADD', KEYS[9], 'XX', now, ARGV[6])
  return {'MORE'}
end
redis.call('UNLINK', KEYS[6])
redis.call('HSET', KEYS[8], 'state', 'done')
redis.call('EXPIRE', KEYS[8], ARGV[7])
redis.call('ZREM', KEYS[9], ARGV[6])
if phase >= 0 then redis.call('HINCRBY', KEYS[1], 'moving', -1) end
return totals('DONE')
