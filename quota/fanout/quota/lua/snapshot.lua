-- Current state of a parent's children plus the event cursor to follow from,
-- read atomically so a watch neither misses nor repeats a change.
-- KEYS: 1 kids(run, parent), 2 states, 3 results, 4 events(run, parent)
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local cursor = '0-0'
if #last > 0 then cursor = last[1][1] end
local out = {cursor}
for _, n in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local st = redis.call('HGET', KEYS[2], n)
  local phase, attempt = string.match(st, '^(%d+):(%d+):')
  local result = ''
  if tonumber(phase) >= 5 then result = redis.call('HGET', KEYS[3], n) or '' end
  out[#out + 1] = n
  out[#out + 1] = phase
  out[#out + 1] = attempt
  out[#out + 1] = result
end
return out
