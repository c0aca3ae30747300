-- One bounded step of aborting the descendants of aborted actions (abort_action.lua): walk the
-- run's walk list from its head, reading the head's children from the offset kept in the run meta
-- (`abat`), aborting each unfinished one, and queueing each one that has children of its own.
-- An aborted parent takes no new children (admission refuses them), so each list read is final.
-- Stops after ARGV[6] aborts or ARGV[7] children read; any server may take the next step. Each
-- step moves the run's score in the aborting set to now: the periodic loop takes over only a walk
-- left alone for a while (its server died), so the walker's own count stays whole.
-- KEYS: 1 run meta, 2 states, 3 slots, 4 leased, 5 stats, 6 closing, 7 aborting, 8 walk list,
--       9 parents(run)
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen, 4 serialized "aborted" result, 5 run,
--       6 most actions to abort, 7 most children to read
-- Returns {actions aborted, 1 when the walk is done else 0}.
local ctx = {prefix = ARGV[1], slots = KEYS[3], leased = KEYS[4], stats = KEYS[5], closing = KEYS[6],
  now = tonumber(ARGV[2]), maxlen = ARGV[3]}
local run = ARGV[5]
if redis.call('EXISTS', KEYS[1]) == 0 then  -- the run was dropped meanwhile: nothing is left to abort
  redis.call('DEL', KEYS[8])
  redis.call('ZREM', KEYS[7], run)
  return {0, 1}
end
local most_aborted, most_read = tonumber(ARGV[6]), tonumber(ARGV[7])
local at = tonumber(redis.call('HGET', KEYS[1], 'abat') or '0')
local aborted, read = 0, 0
while aborted < most_aborted and read < most_read do
  local parent = redis.call('LINDEX', KEYS[8], 0)
  if not parent then break end
  local want = math.min(100, most_read - read)
  local kids = redis.call('LRANGE', ctx.prefix .. 'kids:' .. run .. ':' .. parent, at, at + want - 1)
  if #kids > 0 then
    local states = redis.call('HMGET', KEYS[2], unpack(kids))
    local parents = redis.call('SMISMEMBER', KEYS[9], unpack(kids))  -- which have children of their own
    for i, kid in ipairs(kids) do
      if states[i] then
        local phase, attempt, p = parse_state(states[i])
        if phase < 5 then
          finish(ctx, run, kid, attempt, p, 7, ARGV[4], phase)
          aborted = aborted + 1
        end
        if parents[i] == 1 then redis.call('RPUSH', KEYS[8], kid) end
      end
    end
  end
  read = read + #kids
  if #kids < want then
    redis.call('LPOP', KEYS[8])
    at = 0
  else
    at = at + #kids
  end
end
flush(ctx)
if redis.call('LLEN', KEYS[8]) > 0 then
  redis.call('HSET', KEYS[1], 'abat', at)
  redis.call('ZADD', KEYS[7], 'XX', ARGV[2], run)
  return {aborted, 0}
end
redis.call('HDEL', KEYS[1], 'abat')
redis.call('ZREM', KEYS[7], run)
return {aborted, 1}
