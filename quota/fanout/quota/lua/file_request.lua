-- File a tenant's limit request only while it holds fewer than the cap: the count and the insert
-- in one step, so requests filed at once on several servers never pass it. The platform's index
-- of pending requests is another hash slot: the caller adds the request there after this.
-- KEYS: 1 the tenant's requests hash. ARGV: 1 the cap, 2 the request id, 3 the request as JSON.
-- Returns 1 when filed, 0 when the tenant is at the cap.
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
