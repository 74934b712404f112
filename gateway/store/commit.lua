-- Check preconditions, then apply writes, atomically.
-- KEYS: every key the plan touches. ARGV[1]: JSON plan
--   {"checks": [[op, key_index, field_or_nil, expected], ...],
--    "backlog": [[key_index, ...], max] or nil,
--    "writes": [[command, key_index, arg, ...], ...]}
-- Check ops: "hget" (expected "" means absent), "get" (likewise), "members" (sorted members joined by "\n"),
--   "hget_not" (the field's value, "" when absent, is none of the "\n"-joined values).
-- Returns {"ok", xadd_id...} or {"conflict", check_index} or {"overloaded", backlog}.
local plan = cjson.decode(ARGV[1])

for i, check in ipairs(plan.checks) do
  local op, key = check[1], KEYS[check[2]]
  local actual
  if op == "hget" then
    actual = redis.call("HGET", key, check[3]) or ""
  elseif op == "get" then
    actual = redis.call("GET", key) or ""
  elseif op == "members" then
    local members = redis.call("SMEMBERS", key)
    table.sort(members)
    actual = table.concat(members, "\n")
  elseif op == "hget_not" then
    local value = redis.call("HGET", KEYS[check[2]], check[3]) or ""
    for forbidden in string.gmatch(check[4] .. "\n", "([^\n]*)\n") do
      if value == forbidden then
        return {"conflict", tostring(i)}
      end
    end
    actual = check[4]
  else
    return redis.error_reply("unknown check " .. tostring(op))
  end
  if actual ~= check[4] then
    return {"conflict", tostring(i)}
  end
end

if plan.backlog and plan.backlog ~= cjson.null then
  local total = 0
  for _, index in ipairs(plan.backlog[1]) do
    local key = KEYS[index]
    local kind = redis.call("TYPE", key)["ok"]
    if kind == "stream" then
      total = total + redis.call("XLEN", key)
    elseif kind == "zset" then
      total = total + redis.call("ZCARD", key)
    end
  end
  if total >= plan.backlog[2] then
    return {"overloaded", tostring(total)}
  end
end

local result = {"ok"}
for _, write in ipairs(plan.writes) do
  local args = {}
  for j = 3, #write do
    args[#args + 1] = write[j]
  end
  local reply = redis.call(write[1], KEYS[write[2]], unpack(args))
  if write[1] == "XADD" then
    result[#result + 1] = reply
  end
end
return result
