-- Admit a batch of actions into one run: all of it or none of it.
-- KEYS: 1 run meta, 2 specs, 3 states, 4 kids(run, parent), 5 queue, 6 limits, 7 stats, 8 slots,
--       9 parents(run): every parent with children, so retention can find their keys
-- ARGV: 1 run, 2 parent ("" for the root), 3 now, 4 default max_fanout,
--       5 default max_queued, 6 mode: create | submit | dry,
--       7 the batch packed as (u16 name length, u32 spec length, name, spec) per action:
--         one argument instead of two per action, which the client library encodes slowly
local run, parent, now, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[6]

if mode == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {'EXISTS'} end
else
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_RUN'} end
  local pst = redis.call('HGET', KEYS[3], parent)
  if not pst then return {'NO_PARENT'} end
  local pphase = tonumber(string.match(pst, '^(%d+):'))
  if pphase >= 5 then return {'PARENT_DONE', pphase} end
end

local used = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local max_fanout = tonumber(redis.call('HGET', KEYS[6], 'max_fanout') or ARGV[4])
local max_queued = tonumber(redis.call('HGET', KEYS[6], 'max_queued') or ARGV[5])
local queued = tonumber(redis.call('HGET', KEYS[7], 'queued') or '0')

local names, bodies = {}, {}
local packed, pos = ARGV[7], 1
while pos <= #packed do
  local name_len, spec_len, start = struct.unpack('>HI4', packed, pos)
  names[#names + 1] = string.sub(packed, start, start + name_len - 1)
  bodies[#bodies + 1] = string.sub(packed, start + name_len, start + name_len + spec_len - 1)
  pos = start + name_len + spec_len
end

-- Resubmitted names (and repeats inside the batch) are success, charged once.
local fresh, seen, present = {}, {}, 0
for i, n in ipairs(names) do
  if seen[n] or redis.call('HEXISTS', KEYS[3], n) == 1 then
    present = present + 1
  else
    seen[n] = true
    fresh[#fresh + 1] = i
  end
end
local k = #fresh

if used + k > max_fanout then return {'FANOUT', max_fanout, used, k} end
if queued + k > max_queued then return {'QUEUED', max_queued, queued, k} end
if mode == 'dry' then return {'OK', k, present, used + k, max_fanout} end

if mode == 'create' then
  redis.call('HSET', KEYS[1], 'root', names[1], 'phase', 1, 'count', 0, 'created', now)
end

-- Write in chunks: one command per thousand actions, not four per action.
local state = '1:0:' .. parent
local specs, states, kids, queue = {}, {}, {}, {}
local function flush()
  if #kids == 0 then return end
  redis.call('HSET', KEYS[2], unpack(specs))
  redis.call('HSET', KEYS[3], unpack(states))
  redis.call('RPUSH', KEYS[4], unpack(kids))
  redis.call('RPUSH', KEYS[5], unpack(queue))
  specs, states, kids, queue = {}, {}, {}, {}
end
for j = 1, k do
  local i = fresh[j]
  local n = names[i]
  specs[#specs + 1] = n
  specs[#specs + 1] = bodies[i]
  states[#states + 1] = n
  states[#states + 1] = state
  kids[#kids + 1] = n
  queue[#queue + 1] = run .. '/' .. n .. '/' .. now
  if #kids == 1000 then flush() end
end
flush()

redis.call('HINCRBY', KEYS[1], 'count', k)
redis.call('SADD', KEYS[9], parent)
redis.call('HINCRBY', KEYS[7], 'queued', k)
-- A parent awaiting its children holds no concurrency slot, so nested
-- fanouts cannot deadlock on the tenant's max_concurrency.
if parent ~= '' then redis.call('SREM', KEYS[8], run .. '/' .. parent) end
return {'OK', k, present, used + k, max_fanout}
