-- Stage one chunk of a big batch where no dispatcher or watcher looks: count its fresh actions and
-- their bytes for commit.lua, and keep the fresh ones as one value (the chunk as it came when all
-- are fresh, the usual case), not a record per action. Names already in the run count as present;
-- the batch holds no name twice (admission.py Batch). The staging keys expire unless committed.
-- KEYS: 1 run meta, 2 states, 3 stage chunks, 4 stage meta
-- ARGV: 1 parent, 2 staging TTL seconds, 3 chunks staged before this one, 4 the chunk (batch.lua)
-- Returns {'OK'}, {'NO_RUN'}, or {'LOST'} when the staging expired or a chunk went missing.
local staged = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_RUN'} end
if staged == 0 then
  if redis.call('EXISTS', KEYS[4]) == 1 then return {'LOST'} end
  redis.call('HSET', KEYS[4], 'parent', ARGV[1], 'chunks', 0, 'moved', 0, 'n', 0, 'bytes', 0, 'present', 0,
    'skipped', 0, 'state', 'staging')
elseif tonumber(redis.call('HGET', KEYS[4], 'chunks') or '-1') ~= staged then
  return {'LOST'}
end

local wire = ARGV[4]
local names, bounds = parse_batch(wire)
local in_run = redis.call('HMGET', KEYS[2], unpack(names))
local present, bytes, records = 0, 0, {}
for i = 1, #names do
  if in_run[i] then
    present = present + 1
  else
    bytes = bytes + bounds[2 * i] - bounds[2 * i - 1] + 1
    records[#records + 1] = i
  end
end
if #records > 0 then
  if present > 0 then  -- keep the fresh records only: each is the bytes after the one before it
    local kept = {}
    for _, i in ipairs(records) do kept[#kept + 1] = string.sub(wire, (bounds[2 * i - 2] or 0) + 1, bounds[2 * i]) end
    wire = table.concat(kept)
  end
  redis.call('HSET', KEYS[3], staged, wire)
end
redis.call('HINCRBY', KEYS[4], 'chunks', 1)
redis.call('HINCRBY', KEYS[4], 'n', #records)
redis.call('HINCRBY', KEYS[4], 'bytes', bytes)
redis.call('HINCRBY', KEYS[4], 'present', present)
for i = 3, 4 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return {'OK'}
