-- Reclaim leases whose dispatcher stopped renewing them: free the slot and
-- queue the action again, or fail it once it has lost max attempts leases.
-- Lost leases are counted apart from attempts (lost:<run>), so a task's own
-- retries do not use up its protection against crashed dispatchers.
-- KEYS: 1 slots, 2 leased, 3 queue, 4 stats, 5 closing
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen, 4 max attempts,
--       5 serialized "lease lost" result
local ctx = {prefix = ARGV[1], slots = KEYS[1], leased = KEYS[2], stats = KEYS[4], closing = KEYS[5],
  now = tonumber(ARGV[2]), maxlen = ARGV[3]}
local max_attempts = tonumber(ARGV[4])
local requeued, failed = 0, 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 1000)
for _, ref in ipairs(expired) do
  redis.call('ZREM', KEYS[2], ref)
  redis.call('SREM', KEYS[1], ref)
  local run, name = string.match(ref, '^([^/]+)/(.*)$')
  local st = redis.call('HGET', ctx.prefix .. 'st:' .. run, name)
  if st then
    local cur, att, parent = parse_state(st)
    if cur < 5 then
      local lost = redis.call('HINCRBY', ctx.prefix .. 'lost:' .. run, name, 1)
      if lost < max_attempts then
        redis.call('HSET', ctx.prefix .. 'st:' .. run, name, '1:' .. att .. ':' .. parent)
        count_move(ctx, run, cur, 1)
        redis.call('LPUSH', KEYS[3], ref .. '/' .. ARGV[2])
        requeued = requeued + 1
      else
        finish(ctx, run, name, att, parent, 6, ARGV[5], cur)
        failed = failed + 1
      end
    end
  end
end
flush(ctx)
return {requeued, failed}
