-- The changes of one parent's children after a cursor, for a watch, packed so that the reply
-- is cheap to parse: two strings, however many changes, instead of a stream entry's ten fields
-- each (or a string per result: a reply of a thousand strings cost the server more to parse than
-- the changes were worth). Bounded: at most ARGV[2] entries and about ARGV[3] bytes of results
-- (one entry always fits).
-- KEYS: 1 events(run, parent)
-- ARGV: 1 cursor (changes after it), 2 most entries, 3 most result bytes, 4 the stream's MAXLEN
-- Returns {headers, results}: headers joins "<id> <phase> <attempt> <result bytes> <name>" per
-- change with "\n"; results is every change's result, end to end, in the same order.
-- Returns {'!trimmed'} when changes after the cursor may have been trimmed away: the watch must
-- replay current state instead of following on from the cursor.
if ARGV[1] == '18446744073709551615-18446744073709551615' then return {''} end  -- nothing can follow it

-- Trimming (XADD MAXLEN ~) never leaves a stream shorter than its cap, and nothing else
-- shortens it, so a stream shorter than the cap has lost nothing. A longer one has lost
-- whatever came before its first entry: a cursor older than that entry may have missed some.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
  local fms, fseq = string.match(first, '^(%d+)-(%d+)$')
  local cms, cseq = string.match(ARGV[1], '^(%d+)-(%d+)$')
  fms, fseq, cms, cseq = tonumber(fms), tonumber(fseq), tonumber(cms), tonumber(cseq)
  if cms < fms or (cms == fms and cseq < fseq - 1) then return {'!trimmed'} end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local most_bytes = tonumber(ARGV[3])
local heads, results, bytes = {}, {}, 0
for _, entry in ipairs(entries) do
  if bytes >= most_bytes then break end
  local f, fields = {}, entry[2]
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  local result = f.r or ''
  results[#results + 1] = result
  bytes = bytes + #result
  heads[#heads + 1] = entry[1] .. ' ' .. f.p .. ' ' .. f.a .. ' ' .. #result .. ' ' .. f.n
end
return {table.concat(heads, '\n'), table.concat(results)}
