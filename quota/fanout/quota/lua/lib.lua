-- Shared helpers, prepended to the scripts that finish actions (see scripts.py).
-- State values are "<phase>:<attempt>:<parent>"; phases >= 5 are terminal,
-- 7 is ABORTED. The root is the one action whose parent is "".

local function parse_state(st)
  local phase, attempt, parent = string.match(st, '^(%d+):(%d+):(.*)$')
  return tonumber(phase), tonumber(attempt), parent
end

-- Lua formats a number with sprintf each time one is concatenated or passed to redis.call, and
-- every concatenation hashes a new string: per action, in a batch of thousands, that was a good
-- part of these scripts' time. Phases and attempts take few values in a script: each is formatted
-- once (num); a run's keys are made once per script (ctx.run_keys), a parent's event key once per run.
local formatted = {}
local function num(n)
  local s = formatted[n]
  if not s then
    s = tostring(n)
    formatted[n] = s
  end
  return s
end

local function run_keys(ctx, run)
  local cache = ctx.run_keys
  if not cache then
    cache = {}
    ctx.run_keys = cache
  end
  local k = cache[run]
  if not k then
    local p = ctx.prefix
    k = {st = p .. 'st:' .. run, res = p .. 'res:' .. run, spec = p .. 'spec:' .. run, events = {}}
    cache[run] = k
  end
  return k
end

local function events_key(ctx, keys, run, parent)
  local key = keys.events[parent]
  if not key then
    key = ctx.prefix .. 'ev:' .. run .. ':' .. parent
    keys.events[parent] = key
  end
  return key
end

-- The run meta counts its actions per phase ("p1".."p8"), for ListRuns and the run page. Moves
-- are tallied per run and written by flush_counts, a command per run and phase, not per action.
-- A run created before the counters existed has no "p1" and stays uncounted rather than wrong.
local function count_move(ctx, run, from, to)
  local c = ctx.counts
  if not c then
    c = {}
    ctx.counts = c
  end
  local r = c[run]
  if not r then
    r = {}
    c[run] = r
  end
  r[from] = (r[from] or 0) - 1
  r[to] = (r[to] or 0) + 1
end

local function flush_counts(ctx)
  local c = ctx.counts
  if not c then return end
  ctx.counts = nil
  for run, r in pairs(c) do
    local key = ctx.prefix .. 'run:' .. run
    if redis.call('HEXISTS', key, 'p1') == 1 then
      for phase, delta in pairs(r) do
        if delta ~= 0 then redis.call('HINCRBY', key, 'p' .. phase, delta) end
      end
    end
  end
end

-- The run ends with its root: its phase is final at once (admission and
-- leasing refuse its actions from here on), and its unfinished actions are
-- aborted later by close_run.lua, a bounded chunk per script, because a run
-- may hold millions of them.
local function close_run(ctx, run, phase)
  redis.call('HSET', ctx.prefix .. 'run:' .. run, 'phase', phase, 'finished', ctx.now)
  redis.call('ZADD', ctx.closing, 'NX', ctx.now, run)
end

-- Move one action to a terminal phase: record the result, free its slot and
-- lease, uncount it from the tenant's queued actions, charge the result's
-- bytes to the tenant and the run (the sweeper gives the run's back when it
-- drops the run), and tell its parent's watchers. The root closes the run.
-- The slot, lease and counters are tallied in ctx and written by flush(ctx),
-- once per script rather than once per action: every caller flushes before it returns.
-- `from` is the phase the action leaves (for the run's phase counters); a failure joins the
-- run's failure list, so the run page finds it without walking the run.
-- ctx: {prefix, slots, leased, stats, closing, now, maxlen}
local function finish(ctx, run, name, attempt, parent, phase, result, from)
  local keys, p, a = run_keys(ctx, run), num(phase), num(attempt)
  redis.call('HSET', keys.st, name, p .. ':' .. a .. ':' .. parent)
  redis.call('HSET', keys.res, name, result)
  count_move(ctx, run, from, phase)
  if phase == 6 or phase == 8 then redis.call('LPUSH', ctx.prefix .. 'fail:' .. run, name) end
  local t = ctx.tally
  if not t then
    t = {refs = {}, bytes = 0, runs = {}, run_bytes = {}}
    ctx.tally = t
  end
  t.refs[#t.refs + 1] = run .. '/' .. name
  t.bytes = t.bytes + #result
  if not t.run_bytes[run] then
    t.runs[#t.runs + 1] = run
    t.run_bytes[run] = 0
  end
  t.run_bytes[run] = t.run_bytes[run] + #result
  redis.call('XADD', events_key(ctx, keys, run, parent), 'MAXLEN', '~', ctx.maxlen, '*',
    'n', name, 'p', p, 'a', a, 'r', result)
  if parent == '' then close_run(ctx, run, phase) end
end

-- Write what finish() and count_move() tallied: a command per key, for a bounded group of actions each.
local function flush(ctx)
  flush_counts(ctx)
  local t = ctx.tally
  if not t then return end
  ctx.tally = nil
  local refs = t.refs
  for i = 1, #refs, 1000 do
    local group = {unpack(refs, i, math.min(i + 999, #refs))}
    redis.call('SREM', ctx.slots, unpack(group))
    redis.call('ZREM', ctx.leased, unpack(group))
  end
  redis.call('HINCRBY', ctx.stats, 'queued', -#refs)
  if t.bytes ~= 0 then redis.call('HINCRBY', ctx.stats, 'bytes', t.bytes) end
  for _, run in ipairs(t.runs) do
    if t.run_bytes[run] ~= 0 then redis.call('HINCRBY', ctx.prefix .. 'run:' .. run, 'bytes', t.run_bytes[run]) end
  end
end
