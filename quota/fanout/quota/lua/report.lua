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
  attempt, phase, size = tonumber(attempt), tonumber(phase), tonumber(size)
  retry_after = tonumber(retry_after) or 0
  local result = string.sub(results, at, at + size - 1)
  at = at + size
  local keys = run_keys(ctx, run)
  local st = redis.call('HGET', keys.st, name)
  local cur, att, parent
  if st then cur, att, parent = parse_state(st) end
  if st and cur > 1 and cur < 5 and att == attempt and phase > cur then
    if phase >= 5 and retry_after > 0 then
      local ref, a = run .. '/' .. name, num(att)
      redis.call('HSET', keys.st, name, '1:' .. a .. ':' .. parent)
      count_move(ctx, run, cur, 1)
      redis.call('SREM', KEYS[1], ref)
      redis.call('ZREM', KEYS[2], ref)
      redis.call('ZADD', KEYS[4], ctx.now + retry_after, ref)
      redis.call('XADD', events_key(ctx, keys, run, parent), 'MAXLEN', '~', ctx.maxlen, '*',
        'n', name, 'p', '1', 'a', a, 'r', result)
    elseif phase >= 5 then
      finish(ctx, run, name, att, parent, phase, result, cur)
      if parent == '' then closed[#closed + 1] = run end
    else
      local p, a = num(phase), num(att)
      redis.call('HSET', keys.st, name, p .. ':' .. a .. ':' .. parent)
      count_move(ctx, run, cur, phase)
      redis.call('XADD', events_key(ctx, keys, run, parent), 'MAXLEN', '~', ctx.maxlen, '*', 'n', name, 'p', p, 'a', a)
      if parent == '' then redis.call('HSET', ctx.prefix .. 'run:' .. run, 'phase', phase) end
    end
  else
    ignored = ignored + 1
  end
end
flush(ctx)
local waiting = redis.call('LLEN', KEYS[6]) + redis.call('LLEN', KEYS[7]) + redis.call('ZCARD', KEYS[4])
return {ignored, closed, waiting > 0 and 1 or 0}
