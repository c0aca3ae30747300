-- Record phase reports from dispatchers. Phases only move forward, a report
-- for an attempt that no longer holds the lease is ignored (an older attempt,
-- or the same one reclaimed and queued again: the attempt number moves on only
-- at the next lease, so a queued action takes no report at all), and an action that
-- is already terminal stays as it is: exactly one terminal phase. A failure
-- with retries left goes back to the queue after its backoff instead.
-- A root's terminal report closes its run (lib.lua close_run); the caller
-- then aborts the run's unfinished actions in bounded steps (close_run.lua).
-- KEYS: 1 slots, 2 leased, 3 stats, 4 delayed, 5 closing, 6 queue, 7 runs
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen,
--       4 "<run> <name> <attempt> <phase> <result bytes> <retry after>" per report, joined by "\n",
--       5 the reports' results end to end: two arguments per batch, not six per report
-- Returns {reports ignored, runs closed, 1 if the tenant has work waiting (queued, staged or delayed) else 0}:
-- the caller wakes the lease streams for a freed slot only if something waits for it.
local ctx = {prefix = ARGV[1], slots = KEYS[1], leased = KEYS[2], stats = KEYS[3], closing = KEYS[5],
  now = tonumber(ARGV[2]), maxlen = ARGV[3]}
local ignored, closed = 0, {}
local results, at = ARGV[5], 1
for run, name, attempt, phase, size, retry_after in string.gmatch(ARGV[4], '(%S+) (%S+) (%d+) (%d+) (%d+) ([^\n]+)') do
  attempt, phase, retry_after = tonumber(attempt), tonumber(phase), tonumber(retry_after) or 0
  local result = string.sub(results, at, at + tonumber(size) - 1)
  at = at + tonumber(size)
  local stkey = ctx.prefix .. 'st:' .. run
  local st = redis.call('HGET', stkey, name)
  local cur, att, parent
  if st then cur, att, parent = parse_state(st) end
  if st and cur > 1 and cur < 5 and att == attempt and phase > cur then
    local evkey = ctx.prefix .. 'ev:' .. run .. ':' .. parent
    if phase >= 5 and retry_after > 0 then
      local ref = run .. '/' .. name
      redis.call('HSET', stkey, name, '1:' .. att .. ':' .. parent)
      count_move(ctx, run, cur, 1)
      redis.call('SREM', KEYS[1], ref)
      redis.call('ZREM', KEYS[2], ref)
      redis.call('ZADD', KEYS[4], ctx.now + retry_after, ref)
      redis.call('XADD', evkey, 'MAXLEN', '~', ctx.maxlen, '*', 'n', name, 'p', 1, 'a', att, 'r', result)
    elseif phase >= 5 then
      finish(ctx, run, name, att, parent, phase, result, cur)
      if parent == '' then closed[#closed + 1] = run end
    else
      redis.call('HSET', stkey, name, phase .. ':' .. att .. ':' .. parent)
      count_move(ctx, run, cur, phase)
      redis.call('XADD', evkey, 'MAXLEN', '~', ctx.maxlen, '*', 'n', name, 'p', phase, 'a', att)
      if parent == '' then redis.call('HSET', ctx.prefix .. 'run:' .. run, 'phase', phase) end
    end
  else
    ignored = ignored + 1
  end
end
flush(ctx)
local waiting = redis.call('LLEN', KEYS[6]) + redis.call('LLEN', KEYS[7]) + redis.call('ZCARD', KEYS[4])
return {ignored, closed, waiting > 0 and 1 or 0}
