-- Check preconditions, then apply writes, atomically.
-- KEYS: every key the plan touches. ARGV: one msgpack array, unpacked by the line below (gateway.store.plan's
-- UNPACK; plan.Value says how redis.call writes a number in it). The array, flat (values are never JSON-encoded
-- again, so a stored body travels as one string, as it is):
--   n_checks, then per check: op, key_index, field ("" when none), expected;
--   n_backlog_keys, then those key indexes and the maximum (nothing more when n is 0);
--   n_forms, then per form: command, pattern (a "c", "v" or "s" per argument), the constant ("c") arguments and
--   each "s" argument's tail, in order;
--   then per write: command, key_index, n_args, args...; or form_number, key_index, a value per "v" of its form
--   and two per "s" (the write is the form's command on the key, with the form's arguments and these values in
--   its "v" places; an "s" argument is its head value, then the argument at the place its second value names,
--   counted from the first write's first argument as 0, then the form's tail: an argument an earlier write sent
--   is not sent again).
-- Check ops: "hget" (expected "" means absent), "get" (likewise), "members" (sorted members joined by "\n"),
--   "hget_not" (the field's value, "" when absent, is none of the "\n"-joined values).
-- Returns {"ok", xadd_id...} or {"conflict", check_index} or {"overloaded", backlog}.
local ARGV = cmsgpack.unpack(ARGV[1])
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

-- Each form: its command, its arguments (a table reused by every write of the form: redis.call copies them), the
-- places of its values in them, how many arguments it has, and the tail of each "s" argument by its place (a form
-- without "s" has none: false).
local forms = {}
local n_forms = tonumber(ARGV[i])
i = i + 1
for f = 1, n_forms do
  local command, pattern = ARGV[i], ARGV[i + 1]
  i = i + 2
  local args, places, tails = {}, {}, false
  for a = 1, #pattern do
    local kind = string.sub(pattern, a, a)
    if kind == "v" then
      places[#places + 1] = a
    elseif kind == "s" then
      places[#places + 1] = a
      tails = tails or {}
      tails[a] = ARGV[i]
      i = i + 1
    else
      args[a] = ARGV[i]
      i = i + 1
    end
  end
  forms[f] = {command, args, places, #pattern, tails}
end

local result = {"ok"}
local n = #ARGV
local first_write = i
while i <= n do
  local command, reply
  local form = forms[tonumber(ARGV[i])]
  local key = KEYS[tonumber(ARGV[i + 1])]
  if form then
    local args, places, tails = form[2], form[3], form[5]
    if tails then
      local at = i + 2
      for v = 1, #places do
        local place = places[v]
        local tail = tails[place]
        if tail then
          args[place] = ARGV[at] .. ARGV[first_write + tonumber(ARGV[at + 1])] .. tail
          at = at + 2
        else
          args[place] = ARGV[at]
          at = at + 1
        end
      end
      command = form[1]
      reply = redis.call(command, key, unpack(args, 1, form[4]))
      i = at
    else
      for v = 1, #places do
        args[places[v]] = ARGV[i + 1 + v]
      end
      command = form[1]
      reply = redis.call(command, key, unpack(args, 1, form[4]))
      i = i + 2 + #places
    end
  else
    local n_args = tonumber(ARGV[i + 2])
    command = ARGV[i]
    reply = redis.call(command, key, unpack(ARGV, i + 3, i + 2 + n_args))
    i = i + 3 + n_args
  end
  if command == "XADD" then
    result[#result + 1] = reply
  end
end
return result
