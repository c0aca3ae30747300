-- Renew the leases a dispatcher still runs and tell it which of them wait
-- on children (they hold no slot) and which it should stop: finished or
-- aborted meanwhile, in a run that has finished (its remaining actions are
-- being aborted in chunks and may not be reached yet), or leased again
-- after this lease was lost.
-- KEYS: 1 slots, 2 leased
-- ARGV: 1 tenant prefix, 2 new expiry, then run, name, attempt per lease
-- Returns {waiting indexes, cancelled indexes}, 0-based in lease order.
local waiting, cancelled = {}, {}
local run_over = {}
for i = 3, #ARGV, 3 do
  local run, name, attempt = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local index = (i - 3) / 3
  local ref = run .. '/' .. name
  if run_over[run] == nil then
    run_over[run] = tonumber(redis.call('HGET', ARGV[1] .. 'run:' .. run, 'phase') or '0') >= 5
  end
  local st = redis.call('HGET', ARGV[1] .. 'st:' .. run, name)
  local phase, att
  if st then phase, att = string.match(st, '^(%d+):(%d+):') end
  if run_over[run] or not st or tonumber(phase) >= 5 or tonumber(att) ~= attempt or tonumber(phase) < 3 then
    cancelled[#cancelled + 1] = index
  else
    redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ref)
    if redis.call('SISMEMBER', KEYS[1], ref) == 0 then waiting[#waiting + 1] = index end
  end
end
return {waiting, cancelled}
