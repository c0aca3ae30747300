-- A run uses a bundle: keep it (and its index entry) for another ARGV[2] seconds.
-- KEYS[1] the tenant's bundle index, KEYS[2] the bundle's hash. ARGV: digest, ttl, expires.
-- Returns the bundle's size, or -1 when it is absent or incomplete.
local size = redis.call('HGET', KEYS[2], 'size')
if not size or redis.call('HEXISTS', KEYS[2], 'n') == 0 then
  return -1
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], size .. ':' .. ARGV[3])
return tonumber(size)
