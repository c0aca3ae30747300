-- Shared helpers, prepended to the scripts that finish actions (see scripts.py).
-- State values are "<phase>:<attempt>:<parent>"; phases >= 5 are terminal.

local function parse_state(st)
  local phase, attempt, parent = string.match(st, '^(%d+):(%d+):(.*)$')
  return tonumber(phase), tonumber(attempt), parent
end

-- Move one action to a terminal phase: record the result, free its slot and
-- lease, uncount it from the tenant's queued actions, tell its parent's
-- watchers, and finish the run when it is the root.
local function finish(prefix, slots, leased, stats, run, name, attempt, parent, phase, result, now, maxlen)
  redis.call('HSET', prefix .. 'st:' .. run, name, phase .. ':' .. attempt .. ':' .. parent)
  redis.call('HSET', prefix .. 'res:' .. run, name, result)
  local ref = run .. '/' .. name
  redis.call('SREM', slots, ref)
  redis.call('ZREM', leased, ref)
  redis.call('HINCRBY', stats, 'queued', -1)
  redis.call('XADD', prefix .. 'ev:' .. run .. ':' .. parent, 'MAXLEN', '~', maxlen, '*',
    'n', name, 'p', phase, 'a', attempt, 'r', result)
  if parent == '' then
    redis.call('HSET', prefix .. 'run:' .. run, 'phase', phase, 'finished', now)
  end
end
