-- Abort a run: its root and, through finish(), every unfinished descendant.
-- KEYS: 1 run meta, 2 slots, 3 leased, 4 stats
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen, 4 serialized "aborted" result, 5 run, 6 retention seconds
-- Returns the number of actions aborted, or -1 when the run does not exist.
local ctx = {prefix = ARGV[1], slots = KEYS[2], leased = KEYS[3], stats = KEYS[4],
  now = tonumber(ARGV[2]), maxlen = ARGV[3], aborted = ARGV[4], retention = tonumber(ARGV[6])}
local root = redis.call('HGET', KEYS[1], 'root')
if not root then return -1 end
local run = ARGV[5]
local phase, attempt, parent = parse_state(redis.call('HGET', ctx.prefix .. 'st:' .. run, root))
if phase < 5 then
  return finish(ctx, run, root, attempt, parent, 7, ctx.aborted)
end
return abort_unfinished(ctx, run)
