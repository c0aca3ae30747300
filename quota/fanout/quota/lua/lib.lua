-- Shared helpers, prepended to the scripts that finish actions (see scripts.py).
-- State values are "<phase>:<attempt>:<parent>"; phases >= 5 are terminal,
-- 7 is ABORTED. The root is the one action whose parent is "".

local function parse_state(st)
  local phase, attempt, parent = string.match(st, '^(%d+):(%d+):(.*)$')
  return tonumber(phase), tonumber(attempt), parent
end

local finish

-- A finished run is kept for ctx.retention seconds, then Redis drops it.
local function expire_run(ctx, run)
  local p = ctx.prefix
  for _, parent in ipairs(redis.call('SMEMBERS', p .. 'parents:' .. run)) do
    redis.call('EXPIRE', p .. 'kids:' .. run .. ':' .. parent, ctx.retention)
    redis.call('EXPIRE', p .. 'ev:' .. run .. ':' .. parent, ctx.retention)
  end
  for _, suffix in ipairs({'run:', 'spec:', 'st:', 'res:', 'parents:', 'lost:'}) do
    redis.call('EXPIRE', p .. suffix .. run, ctx.retention)
  end
end

-- Abort every unfinished action of a run. States are read one by one, not
-- from a snapshot, so nothing is finished twice.
local function abort_unfinished(ctx, run)
  local n = 0
  local stkey = ctx.prefix .. 'st:' .. run
  for _, name in ipairs(redis.call('HKEYS', stkey)) do
    local phase, attempt, parent = parse_state(redis.call('HGET', stkey, name))
    if phase < 5 then
      n = n + finish(ctx, run, name, attempt, parent, 7, ctx.aborted)
    end
  end
  return n
end

-- Move one action to a terminal phase: record the result, free its slot and
-- lease, uncount it from the tenant's queued actions, and tell its parent's
-- watchers. When the root finishes, the run finishes with it and whatever
-- is still unfinished in the run is aborted. Returns how many actions ended.
-- ctx: {prefix, slots, leased, stats, now, maxlen, aborted (result bytes),
--       retention (seconds a finished run is kept)}
finish = function(ctx, run, name, attempt, parent, phase, result)
  redis.call('HSET', ctx.prefix .. 'st:' .. run, name, phase .. ':' .. attempt .. ':' .. parent)
  redis.call('HSET', ctx.prefix .. 'res:' .. run, name, result)
  local ref = run .. '/' .. name
  redis.call('SREM', ctx.slots, ref)
  redis.call('ZREM', ctx.leased, ref)
  redis.call('HINCRBY', ctx.stats, 'queued', -1)
  redis.call('XADD', ctx.prefix .. 'ev:' .. run .. ':' .. parent, 'MAXLEN', '~', ctx.maxlen, '*',
    'n', name, 'p', phase, 'a', attempt, 'r', result)
  if parent ~= '' then return 1 end
  redis.call('HSET', ctx.prefix .. 'run:' .. run, 'phase', phase, 'finished', ctx.now)
  local n = 1 + abort_unfinished(ctx, run)
  expire_run(ctx, run)
  return n
end
