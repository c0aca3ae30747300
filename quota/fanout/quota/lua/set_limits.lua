-- Change a tenant's limits and audit each change in the same step.
-- KEYS: 1 limits, 2 audit
-- ARGV: 1 actor, 2 now, 3 reason, 4 tenant, 5 audit cap, then limit, new value, default per change
local out = {}
for i = 6, #ARGV, 3 do
  local limit, new, default = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], limit) or default
  redis.call('HSET', KEYS[1], limit, new)
  redis.call('LPUSH', KEYS[2], cjson.encode({
    at = tonumber(ARGV[2]), actor = ARGV[1], tenant = ARGV[4], limit = limit,
    old = tonumber(old), new = tonumber(new), reason = ARGV[3]}))
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return #ARGV
