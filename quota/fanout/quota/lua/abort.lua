-- Begin aborting a run: abort its root, which closes the run at once (its
-- phase is ABORTED from here on); close_run.lua then aborts the rest in
-- bounded chunks.
-- KEYS: 1 run meta, 2 slots, 3 leased, 4 stats, 5 closing
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen, 4 serialized "aborted" result, 5 run
-- Returns 1 when this call aborted the run, 0 when the run had finished
-- already, -1 when the run does not exist.
local ctx = {prefix = ARGV[1], slots = KEYS[2], leased = KEYS[3], stats = KEYS[4], closing = KEYS[5],
  now = tonumber(ARGV[2]), maxlen = ARGV[3]}
local root = redis.call('HGET', KEYS[1], 'root')
if not root then return -1 end
if tonumber(redis.call('HGET', KEYS[1], 'phase')) >= 5 then return 0 end
local run = ARGV[5]
local phase, attempt = parse_state(redis.call('HGET', ctx.prefix .. 'st:' .. run, root))
if phase >= 5 then
  close_run(ctx, run, 7)  -- the root ended without closing its run: not written by these scripts
else
  finish(ctx, run, root, attempt, '', 7, ARGV[4], phase)
  redis.call('HINCRBY', KEYS[1], 'aborted', 1)
  flush(ctx)
end
return 1
