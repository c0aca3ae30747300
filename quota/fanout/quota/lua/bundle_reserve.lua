-- Reserve room for one code bundle under the tenant's caps, or say it is there already.
-- KEYS[1] the tenant's bundle index (digest -> "size:expires"), KEYS[2] the bundle's hash.
-- ARGV: digest, size, now, expires, tenant cap in bytes, most bundles per tenant.
-- Returns {present (0/1), refusal (0 ok, 1 too many bundles, 2 over the byte cap), bytes used by the others}.
-- Bounded: the index holds at most ARGV[6] live entries plus those expired since the last call,
-- and every call prunes the expired ones.
local digest, size, now, expires = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local cap, most = tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('HEXISTS', KEYS[2], 'n') == 1 then
  return {1, 0, 0}
end
local entries = redis.call('HGETALL', KEYS[1])
local used, count = 0, 0
for i = 1, #entries, 2 do
  -- Whole seconds; an entry touched by an older server has a fraction, which still counts.
  local bytes, until_ = string.match(entries[i + 1], '^(%d+):(%d+)%.?%d*$')
  if until_ == nil or tonumber(until_) <= now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif entries[i] ~= digest then
    used = used + tonumber(bytes)
    count = count + 1
  end
end
if count >= most then
  return {0, 1, used}
end
if used + size > cap then
  return {0, 2, used}
end
redis.call('HSET', KEYS[1], digest, size .. ':' .. expires)
return {0, 0, used}
