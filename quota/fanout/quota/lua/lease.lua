-- Lease up to `want` queued actions of one tenant, within its free concurrency slots, doing at
-- most ARGV[6] units of work (entries popped, runs visited) so that the script stays short
-- however many stale entries wait; the caller calls again when it asks for more.
-- Actions queued again (lost leases, due retries) are served first, then the runs' own queues
-- round-robin. An entry whose action is no longer queued, or whose run has ended, is dropped;
-- an ended run's whole queue is unlinked at once (freed in the background), not popped.
-- A BYOC tenant's actions go only to dispatchers scoped to it: an unscoped caller leases nothing
-- of it (checked here, in the same step as the lease, so a placement change holds at once).
-- An action that waited longer than its spec's max_queued_seconds (since it was queued, or queued
-- again) is not leased: it ends TIMED_OUT here, and its parent's watch hears of it. The limits are
-- kept apart from the specs (mqs:<run>, ActionStore.set_queue_limits), so no spec is parsed here.
-- KEYS: 1 queue, 2 slots, 3 leased, 4 limits, 5 delayed, 6 runs with queued actions, 7 placement,
--       8 stats, 9 closing
-- ARGV: 1 tenant prefix, 2 default max_concurrency, 3 want, 4 now, 5 lease seconds, 6 most work,
--       7 "1" when the caller is a dispatcher scoped to this tenant, 8 serialized "queued too long"
--       result, 9 events maxlen, 10 default max_payload_bytes
-- Returns {heads, specs, actions or runs still waiting, 1 when the work bound stopped it else 0,
-- the tenant's max_payload_bytes (what the leased actions may return; read here, so a lease needs
-- no second round trip for it)}: packed so that the reply costs the caller two strings to parse,
-- not seven values per action.
-- heads joins "<run> <name> <attempt> <admitted at> <spec bytes> <parent>" per action with "\n"
-- (names hold no space or newline; the parent comes last, "" for a root); specs is every leased
-- action's spec, concatenated in the same order.
local prefix, now = ARGV[1], ARGV[4]
local budget = tonumber(ARGV[6])
local ctx = {prefix = prefix, slots = KEYS[2], leased = KEYS[3], stats = KEYS[8], closing = KEYS[9],
  now = tonumber(now), maxlen = ARGV[9]}

local function still_waiting()
  return redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[5]) + redis.call('LLEN', KEYS[6])
end

if ARGV[7] ~= '1' and redis.call('GET', KEYS[7]) == 'byoc' then
  return {'', '', still_waiting(), 0, 0}  -- its work waits for its own dispatchers
end

-- Retries whose backoff has passed join the queue first.
local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 100)
for _, ref in ipairs(due) do
  redis.call('ZREM', KEYS[5], ref)
  redis.call('RPUSH', KEYS[1], ref .. '/' .. now)
end

local limit = tonumber(redis.call('HGET', KEYS[4], 'max_concurrency') or ARGV[2])
local want = math.min(tonumber(ARGV[3]), limit - redis.call('SCARD', KEYS[2]))
local expiry = tonumber(now) + tonumber(ARGV[5])
local heads, specs, refs, work = {}, {}, {}, 0

-- Per run, whether it holds actions with a max_queued_seconds (its mqs: hash), so that only those
-- runs' actions are looked up for it; set beside `live` by run_live.
local limited = {}

local live = {}
-- Per run, how many leased actions left each phase: the run meta's phase counters (see lib.lua).
local leased_from = {}
local function run_live(run)
  if live[run] == nil then
    live[run] = tonumber(redis.call('HGET', prefix .. 'run:' .. run, 'phase') or '9') < 5
    limited[run] = redis.call('EXISTS', prefix .. 'mqs:' .. run) == 1
  end
  return live[run]
end

local function take(run, name, admitted)
  local keys = run_keys(ctx, run)
  local st = redis.call('HGET', keys.st, name)
  if not st then return end
  local phase, attempt, parent = string.match(st, '^(%d+):(%d+):(.*)$')
  if tonumber(phase) > 2 then return end  -- aborted, finished or leased since it was queued
  local most = limited[run] and tonumber(redis.call('HGET', prefix .. 'mqs:' .. run, name) or '0') or 0
  if most > 0 and ctx.now - tonumber(admitted) > most then
    finish(ctx, run, name, tonumber(attempt), parent, 8, ARGV[8], tonumber(phase))
    if parent == '' then live[run] = false end  -- a root's end closes its run
    return
  end
  attempt = num(tonumber(attempt) + 1)
  redis.call('HSET', keys.st, name, '3:' .. attempt .. ':' .. parent)
  local moved = leased_from[run]
  if not moved then
    moved = {}
    leased_from[run] = moved
  end
  moved[phase] = (moved[phase] or 0) + 1
  refs[#refs + 1] = run .. '/' .. name
  local spec = redis.call('HGET', keys.spec, name) or ''
  heads[#heads + 1] = run .. ' ' .. name .. ' ' .. attempt .. ' ' .. admitted .. ' ' .. #spec .. ' ' .. parent
  specs[#specs + 1] = spec
end

while #heads < want and work < budget do
  local entry = redis.call('LPOP', KEYS[1])
  if not entry then break end
  work = work + 1
  local run, name, admitted = string.match(entry, '^([^/]+)/([^/]+)/(.*)$')
  if run_live(run) then take(run, name, admitted) end
end

while #heads < want and work < budget do
  local run = redis.call('LINDEX', KEYS[6], 0)
  if not run then break end
  work = work + 1
  local q = prefix .. 'q:' .. run
  if not run_live(run) then
    redis.call('UNLINK', q)
  else
    while #heads < want and work < budget do
      local entry = redis.call('LPOP', q)
      if not entry then break end
      work = work + 1
      local name, admitted = string.match(entry, '^([^/]+)/(.*)$')
      take(run, name, admitted)
    end
  end
  if redis.call('EXISTS', q) == 0 then
    redis.call('LPOP', KEYS[6])
  else
    redis.call('LMOVE', KEYS[6], KEYS[6], 'LEFT', 'RIGHT')  -- the next call serves the next run
  end
end

flush(ctx)  -- what finish() tallied for the actions that waited too long

-- Slots and leases in a command per group of actions, not two per action.
for i = 1, #refs, 1000 do
  local last = math.min(i + 999, #refs)
  local scored = {}
  for j = i, last do
    scored[#scored + 1] = expiry
    scored[#scored + 1] = refs[j]
  end
  redis.call('SADD', KEYS[2], unpack(refs, i, last))
  redis.call('ZADD', KEYS[3], unpack(scored))
end

for run, moved in pairs(leased_from) do
  local key = prefix .. 'run:' .. run
  if redis.call('HEXISTS', key, 'p1') == 1 then
    local n = 0
    for phase, k in pairs(moved) do
      redis.call('HINCRBY', key, 'p' .. phase, -k)
      n = n + k
    end
    redis.call('HINCRBY', key, 'p3', n)
  end
end

local payload_cap = #heads > 0 and tonumber(redis.call('HGET', KEYS[4], 'max_payload_bytes') or ARGV[10]) or 0
return {table.concat(heads, '\n'), table.concat(specs), still_waiting(), work >= budget and 1 or 0, payload_cap}
