-- ARGV: prefix, history, ttl_us, id. Decides a cancel by Redis's clock, once:
-- {'none'}, {'finished', offset}, {'already', offset} or {'canceled', offset}; the offset is
-- where the job's end is logged ('' when unknown).
local ttl, id = tonumber(ARGV[3]), ARGV[4]
local key = k('job', id)
local f = redis.call('HMGET', key, 't', 'd', 'h', 'x', 'e', 'c', 'me')
if not f[1] then
  return {'none'}
end
local now = now_us()
if f[4] ~= '' and tonumber(f[4]) <= now then
  return {'none'}
end
if f[5] == 'n' then
  return {'finished', f[7] or ''}
end
if f[5] then
  return {'already', f[7] or ''}
end
local t, d = tonumber(f[1]), tonumber(f[2])
if f[3] ~= '1' and now >= t + d then
  -- Past its natural end by this clock: it ended on its own, whether or not that is logged.
  redis.call('HSET', key, 'e', 'n')
  redis.call('ZREM', k('finishes'), id)
  local me = f[7]
  if not me then
    me = fmt(append({'k', 'e', 'j', id, 'a', fmt(now), 'e', 'n', 'x', ''}))
    redis.call('HSET', key, 'me', me)
  end
  return {'finished', me}
end
local word = 'c' .. fmt(now)
redis.call('HSET', key, 'e', word)
redis.call('ZREM', k('finishes'), id)
local x = ''
if f[4] ~= '' then
  local nx = math.min(tonumber(f[4]), now + ttl)
  x = fmt(nx)
  redis.call('HSET', key, 'x', x)
  redis.call('ZADD', k('expiries'), x, id)
  if f[6] ~= '' then
    redis.call('ZADD', k('client', f[6]), 'XX', x, id)
  end
end
if f[6] ~= '' then
  redis.call('ZREM', k('heygen', f[6]), id)
end
local offset = fmt(append({'k', 'e', 'j', id, 'a', fmt(now), 'e', word, 'x', x}))
redis.call('HSET', key, 'me', offset)
return {'canceled', offset}
