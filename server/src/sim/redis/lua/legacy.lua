-- ARGV: prefix, history, replace ('1': always; '0': only if there is none), record,
-- duration_us, first generation. Creates the legacy job again: {'ok', offset} or {'exists'}.
local key = k('job', 'legacy')
if ARGV[3] == '0' and redis.call('EXISTS', key) == 1 then
  return {'exists'}
end
redis.call('SET', k('legacy_gen'), ARGV[6], 'NX')
local g = redis.call('INCR', k('legacy_gen'))
local now = now_us()
local dur = tonumber(ARGV[5])
redis.call('DEL', key)
redis.call('HSET', key, 'r', ARGV[4], 'c', '', 't', fmt(now), 'd', fmt(dur), 'h', '0',
  'g', fmt(g), 'x', '')
redis.call('ZADD', k('finishes'), fmt(now + dur), 'legacy')
local offset = append({'k', 'c', 'j', 'legacy', 'a', fmt(now), 'r', ARGV[4], 'c', '',
  't', fmt(now), 'd', fmt(dur), 'h', '0', 'g', fmt(g), 'x', ''})
redis.call('HSET', key, 'mc', fmt(offset))
return {'ok', fmt(offset)}
