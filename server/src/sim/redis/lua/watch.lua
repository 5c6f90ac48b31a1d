-- ARGV: prefix, history, op, client, set id, then per op:
--   change: create ('1' or '0'), add (JSON array), remove (JSON array), max_jobs,
--           max_per_client, max_sets
--           -> {'ok', offset, size, found (JSON), not found (JSON)}, {'none'}, {'client_full'},
--              {'full'}, {'too_large'} or {'dup'}
--   delete: -> {'ok', offset} or {'none'}
--   touch:  more set ids -> {'ok'}
-- Every change of a set is an entry of the log, and a member joins at that entry's offset:
-- a stream reports the member's changes after it, on every replica alike.
local op, client, id = ARGV[3], ARGV[4], ARGV[5]
local set, members = k('watch', id), k('watchm', id)
local now = now_us()
if op == 'touch' then
  for i = 5, #ARGV do
    redis.call('ZADD', k('watches'), 'XX', fmt(now), ARGV[i])
  end
  return {'ok'}
end
local exists = redis.call('EXISTS', set) == 1
if op == 'delete' then
  if not exists or redis.call('HGET', set, 'client') ~= client then
    return {'none'}
  end
  redis.call('DEL', set, members)
  redis.call('ZREM', k('watches'), id)
  redis.call('SREM', k('wc', client), id)
  local offset = append({'k', 'w', 'w', id, 'c', client, 'a', fmt(now), 'op', 'd', 'add', '[]', 'rm', '[]'})
  return {'ok', fmt(offset)}
end
local create = ARGV[6] == '1'
if create then
  if exists then
    return {'dup'}
  end
  if redis.call('SCARD', k('wc', client)) >= tonumber(ARGV[10]) then
    return {'client_full'}
  end
  if redis.call('ZCARD', k('watches')) >= tonumber(ARGV[11]) then
    return {'full'}
  end
elseif not exists or redis.call('HGET', set, 'client') ~= client then
  return {'none'}
end
local add, remove, max = cjson.decode(ARGV[7]), cjson.decode(ARGV[8]), tonumber(ARGV[9])
-- A job joins if it exists, has not expired, and is the client's or the operator's.
local function visible(job)
  local f = redis.call('HMGET', k('job', job), 'c', 'x')
  if not f[1] then
    return false
  end
  if f[2] ~= '' and tonumber(f[2]) <= now then
    return false
  end
  return f[1] == '' or f[1] == client
end
local found, not_found, fresh = {}, {}, 0
for _, job in ipairs(add) do
  if visible(job) then
    found[#found + 1] = job
    if redis.call('HEXISTS', members, job) == 0 then
      fresh = fresh + 1
    end
  else
    not_found[#not_found + 1] = job
  end
end
local removed = {}
for _, job in ipairs(remove) do
  if redis.call('HEXISTS', members, job) == 1 then
    removed[#removed + 1] = job
  end
end
local size = redis.call('HLEN', members) - #removed + fresh
if size > max then
  -- Members that no longer exist make room.
  local dropped = 0
  for _, job in ipairs(redis.call('HKEYS', members)) do
    local f = redis.call('HMGET', k('job', job), 'x')
    local gone = redis.call('EXISTS', k('job', job)) == 0 or (f[1] ~= '' and tonumber(f[1]) <= now)
    if gone then
      local listed = false
      for _, r in ipairs(removed) do
        if r == job then
          listed = true
        end
      end
      if not listed then
        removed[#removed + 1] = job
        dropped = dropped + 1
      end
    end
  end
  size = size - dropped
  if size > max then
    return {'too_large'}
  end
end
if create then
  redis.call('HSET', set, 'client', client)
  redis.call('SADD', k('wc', client), id)
end
redis.call('ZADD', k('watches'), fmt(now), id)
local offset = tonumber(redis.call('GET', k('offset')) or '0') + 1
for _, job in ipairs(removed) do
  redis.call('HDEL', members, job)
end
for _, job in ipairs(found) do
  redis.call('HSETNX', members, job, fmt(offset))
end
local kind = 'p'
if create then
  kind = 'c'
end
append({'k', 'w', 'w', id, 'c', client, 'a', fmt(now), 'op', kind, 'add', json_array(found), 'rm', json_array(removed)})
return {'ok', fmt(offset), fmt(redis.call('HLEN', members)), json_array(found), json_array(not_found)}
