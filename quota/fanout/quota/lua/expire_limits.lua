-- Put back the values that a tenant's expired temporary limits replaced, audited. Idempotent:
-- each restored entry is removed in the same step, so a second server finds nothing to do.
-- Bounded: at most one entry per limit (six).
-- KEYS: 1 limits, 2 audit, 3 limits with an expiry
-- ARGV: 1 now, 2 tenant, 3 audit cap
local now = tonumber(ARGV[1])
local restored = 0
local entries = redis.call('HGETALL', KEYS[3])
for i = 1, #entries, 2 do
  local limit, entry = entries[i], cjson.decode(entries[i + 1])
  if entry.expires <= now then
    local current = tonumber(redis.call('HGET', KEYS[1], limit) or -1)
    if entry.restores < 0 then
      redis.call('HDEL', KEYS[1], limit)
    else
      redis.call('HSET', KEYS[1], limit, entry.restores)
    end
    redis.call('HDEL', KEYS[3], limit)
    redis.call('LPUSH', KEYS[2], cjson.encode({
      at = now, actor = 'expiry', tenant = ARGV[2], limit = limit, action = 'limit_expired',
      old = current, new = entry.restores,
      reason = 'temporary value expired; the previous one is back (-1: the server default)'}))
    restored = restored + 1
  end
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return restored
