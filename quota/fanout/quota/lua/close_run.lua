-- One bounded step of closing a finished run: abort up to ARGV[6] of its
-- unfinished actions, walking its states with HSCAN from the cursor kept in
-- the run meta. Each action is aborted at most once (its state is checked
-- here, in the same script), and the walk may be resumed by any server: the
-- AbortRun call walks it to the end, the periodic loop finishes what a dead
-- server left. The last step records the run for the retention sweeper.
-- KEYS: 1 run meta, 2 states, 3 slots, 4 leased, 5 stats, 6 closing, 7 finished
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen, 4 serialized "aborted" result, 5 run,
--       6 most actions to abort, 7 most states to read
-- Returns {actions aborted, 1 when the run is closed (now or before) else 0}.
local ctx = {prefix = ARGV[1], slots = KEYS[3], leased = KEYS[4], stats = KEYS[5], closing = KEYS[6],
  now = tonumber(ARGV[2]), maxlen = ARGV[3]}
local run = ARGV[5]
if not redis.call('ZSCORE', KEYS[6], run) then return {0, 1} end
local most_aborted, most_read = tonumber(ARGV[6]), tonumber(ARGV[7])
local cursor = redis.call('HGET', KEYS[1], 'cursor') or '0'
local aborted, read = 0, 0
repeat
  local reply = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', 100)
  cursor = reply[1]
  local entries = reply[2]
  for i = 1, #entries, 2 do
    local phase, attempt, parent = parse_state(entries[i + 1])
    if phase < 5 then
      finish(ctx, run, entries[i], attempt, parent, 7, ARGV[4], phase)
      aborted = aborted + 1
    end
  end
  read = read + #entries / 2
until cursor == '0' or aborted >= most_aborted or read >= most_read
flush(ctx)
if aborted > 0 then redis.call('HINCRBY', KEYS[1], 'aborted', aborted) end
if cursor ~= '0' then
  redis.call('HSET', KEYS[1], 'cursor', cursor)
  return {aborted, 0}
end
redis.call('HDEL', KEYS[1], 'cursor')
redis.call('ZREM', KEYS[6], run)
redis.call('ZADD', KEYS[7], redis.call('HGET', KEYS[1], 'finished') or ARGV[2], run)
return {aborted, 1}
