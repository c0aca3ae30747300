-- One page of a parent's children as they are now, for a watch's replay. A replay reads page
-- after page, each a short script however many children the parent has. The first page also
-- reads the event cursor to follow from, in the same script as its states, so a change made
-- after it is in the stream after that cursor; a change made while later pages are read may
-- show both in a page and again as a live event, never neither.
-- KEYS: 1 kids(run, parent), 2 states, 3 results, 4 events(run, parent)
-- ARGV: 1 offset in the children list, 2 most children, 3 most result bytes (one child always fits),
--       4 1 to read the cursor
-- Returns {cursor or '', next offset or -1 at the end, then name, phase, attempt, result per child}.
local offset, most, most_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cursor = ''
if ARGV[4] == '1' then
  local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
  cursor = '0-0'
  if #last > 0 then cursor = last[1][1] end
end
local names = redis.call('LRANGE', KEYS[1], offset, offset + most - 1)
local out = {cursor, -1}
local bytes, taken = 0, 0
for _, n in ipairs(names) do
  if taken > 0 and bytes >= most_bytes then break end
  taken = taken + 1
  local st = redis.call('HGET', KEYS[2], n)
  if st then  -- absent only while the sweeper drops the run
    local phase, attempt = string.match(st, '^(%d+):(%d+):')
    local result = ''
    if tonumber(phase) >= 5 then result = redis.call('HGET', KEYS[3], n) or '' end
    bytes = bytes + #result
    out[#out + 1] = n
    out[#out + 1] = phase
    out[#out + 1] = attempt
    out[#out + 1] = result
  end
end
if taken < #names or #names == most then out[2] = offset + taken end
return out
