-- ARGV: prefix, history, max_jobs, max_per_client, ttl_us, hang_ttl_us, client, heygen_max, n,
-- then per job: id, record, duration_us, hang ('1' or '0').
-- Creates every job or none: {'ok', offset...}, {'store_full'}, {'client_full'},
-- {'busy', retry_after_us} (HeyGen's running jobs; '-1': no wait makes room) or {'dup'}.
local max_jobs, max_per_client = tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, hang_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local client, heygen_max, n = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local now = now_us()
local live = '(' .. fmt(now)
if client ~= '' then
  local mine = redis.call('ZCOUNT', k('client', client), live, '+inf')
  if mine + n > max_per_client then
    return {'client_full'}
  end
end
local held = redis.call('ZCOUNT', k('expiries'), live, '+inf') + redis.call('EXISTS', k('job', 'legacy'))
if held + n > max_jobs then
  return {'store_full'}
end
if heygen_max > 0 then
  local running_key = k('heygen', client)
  redis.call('ZREMRANGEBYSCORE', running_key, '-inf', fmt(now))
  local running = redis.call('ZCARD', running_key)
  if running + n > heygen_max then
    local need = running + n - heygen_max
    if need > running then
      return {'busy', '-1'}
    end
    local ends = redis.call('ZRANGE', running_key, need - 1, need - 1, 'WITHSCORES')
    return {'busy', fmt(math.max(0, tonumber(ends[2]) - now))}
  end
end
for i = 0, n - 1 do
  if redis.call('EXISTS', k('job', ARGV[10 + i * 4])) == 1 then
    return {'dup'}
  end
end
local out = {'ok'}
for i = 0, n - 1 do
  local id, rec = ARGV[10 + i * 4], ARGV[11 + i * 4]
  local dur, hang = tonumber(ARGV[12 + i * 4]), ARGV[13 + i * 4]
  local key = k('job', id)
  local ends_at = now + dur
  local x = ends_at + ttl
  if hang == '1' then
    x = now + hang_ttl
  end
  redis.call('HSET', key, 'r', rec, 'c', client, 't', fmt(now), 'd', fmt(dur), 'h', hang,
    'g', '0', 'x', fmt(x))
  keep_until(key, x, now)
  redis.call('ZADD', k('expiries'), fmt(x), id)
  if hang ~= '1' then
    redis.call('ZADD', k('finishes'), fmt(ends_at), id)
  end
  if client ~= '' then
    redis.call('ZADD', k('client', client), fmt(x), id)
    keep_until(k('client', client), x, now)
  end
  if heygen_max > 0 then
    local until_us = ends_at
    if hang == '1' then
      until_us = x
    end
    redis.call('ZADD', k('heygen', client), fmt(until_us), id)
    keep_until(k('heygen', client), until_us, now)
  end
  local offset = append({'k', 'c', 'j', id, 'a', fmt(now), 'r', rec, 'c', client,
    't', fmt(now), 'd', fmt(dur), 'h', hang, 'g', '0', 'x', fmt(x)})
  redis.call('HSET', key, 'mc', fmt(offset))
  out[#out + 1] = fmt(offset)
end
return out
