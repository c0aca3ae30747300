-- Stage one chunk of a big batch: write its fresh actions where no dispatcher or watcher looks,
-- counting them and their bytes for commit.lua. Names already in the run, or staged by an
-- earlier chunk of this batch, count as present. The staging keys expire unless committed.
-- KEYS: 1 run meta, 2 states, 3 stage specs, 4 stage order, 5 stage meta
-- ARGV: 1 parent, 2 staging TTL seconds, 3 chunks staged before this one,
--       4 the chunk packed as in admit.lua
-- Returns {'OK'}, {'NO_RUN'}, or {'LOST'} when the staging expired or a chunk went missing.
local staged = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_RUN'} end
if staged == 0 then
  if redis.call('EXISTS', KEYS[5]) == 1 then return {'LOST'} end
  redis.call('HSET', KEYS[5], 'parent', ARGV[1], 'chunks', 0, 'n', 0, 'bytes', 0, 'present', 0,
    'skipped', 0, 'state', 'staging')
elseif tonumber(redis.call('HGET', KEYS[5], 'chunks') or '-1') ~= staged then
  return {'LOST'}
end

local all, specs_at = {}, {}
local packed, pos = ARGV[4], 1
while pos <= #packed do
  local name_len, spec_len, start = struct.unpack('>HI4', packed, pos)
  all[#all + 1] = string.sub(packed, start, start + name_len - 1)
  specs_at[#specs_at + 1] = start + name_len
  pos = start + name_len + spec_len
  specs_at[#specs_at + 1] = pos - 1
end

local in_run = redis.call('HMGET', KEYS[2], unpack(all))
local in_stage = redis.call('HMGET', KEYS[3], unpack(all))
local specs, order, seen, present, bytes, biggest = {}, {}, {}, 0, 0, 0
for i, n in ipairs(all) do
  if in_run[i] or in_stage[i] or seen[n] then
    present = present + 1
  else
    seen[n] = true
    order[#order + 1] = n
    specs[#specs + 1] = n
    specs[#specs + 1] = string.sub(packed, specs_at[2 * i - 1], specs_at[2 * i])
    local size = specs_at[2 * i] - specs_at[2 * i - 1] + 1
    bytes = bytes + size
    if size > biggest then biggest = size end
  end
end
if #order > 0 then
  redis.call('HSET', KEYS[3], unpack(specs))
  redis.call('RPUSH', KEYS[4], unpack(order))
end
-- move.lua takes as many names per chunk as its byte bound allows for the biggest spec.
if biggest > tonumber(redis.call('HGET', KEYS[5], 'biggest') or '0') then
  redis.call('HSET', KEYS[5], 'biggest', biggest)
end
redis.call('HINCRBY', KEYS[5], 'chunks', 1)
redis.call('HINCRBY', KEYS[5], 'n', #order)
redis.call('HINCRBY', KEYS[5], 'bytes', bytes)
redis.call('HINCRBY', KEYS[5], 'present', present)
for i = 3, 5 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return {'OK'}
