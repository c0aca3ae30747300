-- Change a tenant's limits and audit each change in the same step.
-- KEYS: 1 limits, 2 audit, 3 limits with an expiry
-- ARGV: 1 actor, 2 now, 3 reason, 4 tenant, 5 audit cap, 6 until (0: for good),
--       then limit, new value, default per change
local expires = tonumber(ARGV[6])
for i = 7, #ARGV, 3 do
  local limit, new, default = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local stored = redis.call('HGET', KEYS[1], limit)
  local old = stored or default
  if expires > 0 then
    -- A second temporary value keeps the first one's restore point: expiry returns to the value
    -- that was in force before any temporary change.
    local restores = tonumber(stored or -1)
    local pending = redis.call('HGET', KEYS[3], limit)
    if pending then restores = cjson.decode(pending).restores end
    redis.call('HSET', KEYS[3], limit, cjson.encode({value = tonumber(new), restores = restores, expires = expires}))
  else
    redis.call('HDEL', KEYS[3], limit)
  end
  redis.call('HSET', KEYS[1], limit, new)
  local reason = ARGV[3]
  if expires > 0 then reason = reason .. ' (until ' .. ARGV[6] .. ')' end
  redis.call('LPUSH', KEYS[2], cjson.encode({
    at = tonumber(ARGV[2]), actor = ARGV[1], tenant = ARGV[4], limit = limit, action = 'set_limit',
    old = tonumber(old), new = tonumber(new), reason = reason}))
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return #ARGV
