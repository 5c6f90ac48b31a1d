-- ARGV: prefix, history, op, key (client:route:key), token, then per op:
--   begin:  in-flight TTL ms, max_keys, ttl_us -> {'first'}, {'inflight'} or
--           {'done', fingerprint, status, location, body}
--   finish: fingerprint, status, location, body, ttl_us -> {'ok'} or {'lost'}
--   drop:   -> {'ok'}
-- A key is claimed by its first request (with a token) and holds its answer once that is
-- finished; only the claim's holder can finish or drop it.
local op, name, token = ARGV[3], ARGV[4], ARGV[5]
local key = k('idem', name)
if op == 'begin' then
  local f = redis.call('HMGET', key, 'tok', 'fp', 'st', 'loc', 'body')
  if f[1] then
    if f[2] then
      return {'done', f[2], f[3], f[4] or '', f[5] or ''}
    end
    return {'inflight'}
  end
  local max_keys = tonumber(ARGV[7])
  local now = now_us()
  redis.call('ZREMRANGEBYSCORE', k('idem'), '-inf', fmt(now - tonumber(ARGV[8])))
  while redis.call('ZCARD', k('idem')) >= max_keys do
    local oldest = redis.call('ZPOPMIN', k('idem'))
    redis.call('DEL', k('idem', oldest[1]))
  end
  redis.call('HSET', key, 'tok', token, 'at', fmt(now))
  redis.call('PEXPIRE', key, ARGV[6])
  redis.call('ZADD', k('idem'), fmt(now), name)
  return {'first'}
end
if redis.call('HGET', key, 'tok') ~= token then
  return {'lost'}
end
if op == 'finish' then
  redis.call('HSET', key, 'fp', ARGV[6], 'st', ARGV[7], 'loc', ARGV[8], 'body', ARGV[9])
  local at = tonumber(redis.call('HGET', key, 'at'))
  local left = math.floor((at + tonumber(ARGV[10]) - now_us()) / 1000)
  redis.call('PEXPIRE', key, math.max(1, left))
  return {'ok'}
end
redis.call('DEL', key)
redis.call('ZREM', k('idem'), name)
return {'ok'}
