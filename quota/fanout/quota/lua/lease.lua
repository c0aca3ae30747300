-- Lease up to `want` queued actions of one tenant, within its free concurrency slots.
-- Returns {leased rows, actions still waiting in the queue or for a retry}.
-- KEYS: 1 queue, 2 slots, 3 leased, 4 limits, 5 delayed
-- ARGV: 1 tenant prefix, 2 default max_concurrency, 3 want, 4 now, 5 lease seconds
local prefix = ARGV[1]

-- Retries whose backoff has passed join the queue first.
local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[4], 'LIMIT', 0, 1000)
for _, ref in ipairs(due) do
  redis.call('ZREM', KEYS[5], ref)
  redis.call('RPUSH', KEYS[1], ref .. '/' .. ARGV[4])
end

local limit = tonumber(redis.call('HGET', KEYS[4], 'max_concurrency') or ARGV[2])
local want = math.min(tonumber(ARGV[3]), limit - redis.call('SCARD', KEYS[2]))
local expiry = tonumber(ARGV[4]) + tonumber(ARGV[5])
local out = {}
while #out < want do
  local entry = redis.call('LPOP', KEYS[1])
  if not entry then break end
  local run, name, admitted = string.match(entry, '^([^/]+)/([^/]+)/(.*)$')
  local stkey = prefix .. 'st:' .. run
  local st = redis.call('HGET', stkey, name)
  if st then
    local phase, attempt, parent = string.match(st, '^(%d+):(%d+):(.*)$')
    -- Skip entries whose action was aborted or finished while queued.
    if tonumber(phase) <= 2 then
      attempt = tonumber(attempt) + 1
      redis.call('HSET', stkey, name, '3:' .. attempt .. ':' .. parent)
      local ref = run .. '/' .. name
      redis.call('SADD', KEYS[2], ref)
      redis.call('ZADD', KEYS[3], expiry, ref)
      local spec = redis.call('HGET', prefix .. 'spec:' .. run, name)
      out[#out + 1] = {run, name, parent, attempt, spec, admitted}
    end
  end
end
return {out, redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[5])}
