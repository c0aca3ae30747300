-- Begin aborting some actions of one run, each with all its descendants. Every name is checked
-- first (it exists and, when ARGV[6] is 1, it is a child of ARGV[7]), so a bad request changes
-- nothing. Each unfinished one moves to ABORTED at once; each that has children joins the run's
-- walk list, whose descendants abort_step.lua then aborts in bounded chunks (resumable by any
-- server: the run stays in the tenant's aborting set until its walk is done). Aborting the root
-- closes the run, and close_run.lua does the rest.
-- KEYS: 1 run meta, 2 states, 3 slots, 4 leased, 5 stats, 6 closing, 7 aborting, 8 walk list,
--       9 parents(run)
-- ARGV: 1 tenant prefix, 2 now, 3 events maxlen, 4 serialized "aborted" result, 5 run,
--       6 "1" when the names must be children of ARGV[7], 7 that parent,
--       8 "check" to only check the names (the caller then aborts them in chunks) or "abort",
--       9... the names: at most 1000 to check, about 100 to abort, so the script stays short
-- Returns {'NO_RUN'}, {'NOT_FOUND', name}, {'NOT_CHILD', name}, or {'OK', aborted, roots closed}.
local ctx = {prefix = ARGV[1], slots = KEYS[3], leased = KEYS[4], stats = KEYS[5], closing = KEYS[6],
  now = tonumber(ARGV[2]), maxlen = ARGV[3]}
local run = ARGV[5]
local run_phase = redis.call('HGET', KEYS[1], 'phase')
if not run_phase then return {'NO_RUN'} end
local names = {unpack(ARGV, 9)}
if #names == 0 then return {'OK', 0, 0} end
local states = redis.call('HMGET', KEYS[2], unpack(names))
local parsed = {}
for i, name in ipairs(names) do
  if not states[i] then return {'NOT_FOUND', name} end
  local phase, attempt, parent = parse_state(states[i])
  if ARGV[6] == '1' and parent ~= ARGV[7] then return {'NOT_CHILD', name} end
  parsed[i] = {phase, attempt, parent}
end
-- A finished run's unfinished actions are being aborted by close_run.lua already.
if ARGV[8] == 'check' or tonumber(run_phase) >= 5 then return {'OK', 0, 0} end
local aborted, roots, walking = 0, 0, 0
for i, name in ipairs(names) do
  local phase, attempt, parent = parsed[i][1], parsed[i][2], parsed[i][3]
  -- Read again: a name given twice is aborted once.
  if phase < 5 then phase = parse_state(redis.call('HGET', KEYS[2], name)) end
  if phase < 5 then
    finish(ctx, run, name, attempt, parent, 7, ARGV[4], phase)
    aborted = aborted + 1
    if parent == '' then roots = roots + 1 end
  end
  -- Finished or not, its own children may still run.
  if redis.call('SISMEMBER', KEYS[9], name) == 1 then
    redis.call('RPUSH', KEYS[8], name)
    walking = walking + 1
  end
end
flush(ctx)
if roots > 0 then redis.call('HINCRBY', KEYS[1], 'aborted', aborted) end
if walking > 0 then redis.call('ZADD', KEYS[7], ARGV[2], run) end
return {'OK', aborted, roots}
