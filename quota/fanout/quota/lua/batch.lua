-- Batch parsing, prepended to the admission scripts (see scripts.py). A batch is the protobuf
-- wire form of SubmitBatchRequest.actions as the server received it (admission.py Batch): per
-- action a 0x1A tag, a varint length and the serialized spec, whose first field (0x0A) is its
-- name; an opaque spec comes after an explicit name record (0x0A, varint length, name) instead.

local function varint(s, pos)
  local value, scale = 0, 1
  while true do
    local b = string.byte(s, pos)
    pos = pos + 1
    if b < 128 then return value + b * scale, pos end
    value = value + (b - 128) * scale
    scale = scale * 128
  end
end

-- The batch's names, and each spec's first and last byte (bounds[2i-1], bounds[2i]).
local function parse_batch(wire)
  local names, bounds, pos, size = {}, {}, 1, #wire
  while pos <= size do
    local name
    if string.byte(wire, pos) == 10 then
      local len, at = varint(wire, pos + 1)
      name = string.sub(wire, at, at + len - 1)
      pos = at + len
    end
    if string.byte(wire, pos) ~= 26 then error('malformed batch at byte ' .. pos) end
    local len, start = varint(wire, pos + 1)
    if not name then
      if string.byte(wire, start) ~= 10 then error('malformed batch: no name at byte ' .. start) end
      local name_len, at = varint(wire, start + 1)
      name = string.sub(wire, at, at + name_len - 1)
    end
    names[#names + 1] = name
    bounds[#bounds + 1] = start
    pos = start + len
    bounds[#bounds + 1] = pos - 1
  end
  return names, bounds
end
