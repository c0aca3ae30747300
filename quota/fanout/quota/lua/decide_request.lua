-- Approve or deny a pending limit request; approval applies its limits in the same step, each
-- change audited with the requester and the approver. A request is decided once: a second
-- decision (another admin, another server) finds it no longer pending.
-- KEYS: 1 requests, 2 limits, 3 audit, 4 limits with an expiry
-- ARGV: 1 id, 2 "approved" or "denied", 3 approver, 4 now, 5 reason, 6 audit cap,
--       then limit, default pairs (the server defaults, for the audit's old values)
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'NOT_FOUND'} end
local req = cjson.decode(raw)
if req.state ~= 'pending' then return {'DECIDED', req.state} end
local now = tonumber(ARGV[4])
req.state, req.decided_by, req.decided_at, req.decision_reason = ARGV[2], ARGV[3], now, ARGV[5]
local why = ARGV[2] .. ' request ' .. ARGV[1] .. ' of ' .. req.requester .. ' (' .. req.reason .. '): ' .. ARGV[5]
local defaults = {}
for i = 7, #ARGV, 2 do defaults[ARGV[i]] = ARGV[i + 1] end
local changed = 0
if ARGV[2] == 'approved' then
  for limit, new in pairs(req.limits) do
    if defaults[limit] and new > 0 then
      local old = redis.call('HGET', KEYS[2], limit) or defaults[limit]
      redis.call('HSET', KEYS[2], limit, new)
      redis.call('HDEL', KEYS[4], limit)  -- an approved value is for good
      redis.call('LPUSH', KEYS[3], cjson.encode({
        at = now, actor = ARGV[3], tenant = req.tenant, limit = limit, action = 'approve_request',
        subject = ARGV[1], old = tonumber(old), new = new, reason = why}))
      changed = changed + 1
    end
  end
else
  redis.call('LPUSH', KEYS[3], cjson.encode({
    at = now, actor = ARGV[3], tenant = req.tenant, limit = '', action = 'deny_request',
    subject = ARGV[1], old = 0, new = 0, reason = why}))
end
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
local encoded = cjson.encode(req)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
return {'OK', encoded}
