-- Check preconditions, then apply writes, atomically.
-- KEYS: every key the plan touches. ARGV, flat (values are never JSON-encoded again, so a stored body travels
-- as one argument, as it is):
--   n_checks, then per check: op, key_index, field ("" when none), expected;
--   n_backlog_keys, then those key indexes and the maximum (nothing more when n is 0);
--   then per write: command, key_index, n_args, args...
-- Check ops: "hget" (expected "" means absent), "get" (likewise), "members" (sorted members joined by "\n"),
--   "hget_not" (the field's value, "" when absent, is none of the "\n"-joined values).
-- Returns {"ok", xadd_id...} or {"conflict", check_index} or {"overloaded", backlog}.
local i = 1
local n_checks = tonumber(ARGV[i])
i = i + 1
for c = 1, n_checks do
  local op, key, field, expected = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local actual
  if op == "hget" then
    actual = redis.call("HGET", key, field) or ""
  elseif op == "get" then
    actual = redis.call("GET", key) or ""
  elseif op == "members" then
    local members = redis.call("SMEMBERS", key)
    table.sort(members)
    actual = table.concat(members, "\n")
  elseif op == "hget_not" then
    local value = redis.call("HGET", key, field) or ""
    for forbidden in string.gmatch(expected .. "\n", "([^\n]*)\n") do
      if value == forbidden then
        return {"conflict", tostring(c)}
      end
    end
    actual = expected
  else
    return redis.error_reply("unknown check " .. tostring(op))
  end
  if actual ~= expected then
    return {"conflict", tostring(c)}
  end
end

local n_backlog = tonumber(ARGV[i])
i = i + 1
if n_backlog > 0 then
  local total = 0
  for b = 0, n_backlog - 1 do
    local key = KEYS[tonumber(ARGV[i + b])]
    local kind = redis.call("TYPE", key)["ok"]
    if kind == "stream" then
      total = total + redis.call("XLEN", key)
    elseif kind == "zset" then
      total = total + redis.call("ZCARD", key)
    end
  end
  local maximum = tonumber(ARGV[i + n_backlog])
  i = i + n_backlog + 1
  if total >= maximum then
    return {"overloaded", tostring(total)}
  end
end

local result = {"ok"}
local n = #ARGV
while i <= n do
  local command, key, n_args = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  local reply = redis.call(command, key, unpack(ARGV, i + 3, i + 2 + n_args))
  i = i + 3 + n_args
  if command == "XADD" then
    result[#result + 1] = reply
  end
end
return result
