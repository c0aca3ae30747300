-- Record phase reports from dispatchers. Phases only move forward, a report
-- for an older attempt (its lease was lost) is ignored, and an action that
-- is already terminal stays as it is: exactly one terminal phase.
-- KEYS: 1 slots, 2 leased, 3 stats
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen, then run, name, attempt, phase, result per report
local prefix, now, maxlen = ARGV[1], ARGV[2], ARGV[3]
local ignored = 0
for i = 4, #ARGV, 5 do
  local run, name, attempt, phase, result = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4]
  local st = redis.call('HGET', prefix .. 'st:' .. run, name)
  local cur, att, parent
  if st then cur, att, parent = parse_state(st) end
  if st and cur < 5 and att == attempt and phase > cur then
    if phase >= 5 then
      finish(prefix, KEYS[1], KEYS[2], KEYS[3], run, name, att, parent, phase, result, now, maxlen)
    else
      redis.call('HSET', prefix .. 'st:' .. run, name, phase .. ':' .. att .. ':' .. parent)
      redis.call('XADD', prefix .. 'ev:' .. run .. ':' .. parent, 'MAXLEN', '~', maxlen, '*',
        'n', name, 'p', phase, 'a', att)
      if parent == '' then redis.call('HSET', prefix .. 'run:' .. run, 'phase', phase) end
    end
  else
    ignored = ignored + 1
  end
end
return ignored
