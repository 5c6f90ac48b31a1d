-- ARGV: prefix, history, op, value. 'faults': the faults in force (JSON) for every replica;
-- 'outage': an outage of value microseconds from now. {offset}.
local now = now_us()
if ARGV[3] == 'faults' then
  redis.call('SET', k('faults'), ARGV[4])
  return {fmt(append({'k', 'f', 'a', fmt(now), 'f', ARGV[4]}))}
end
local until_us = fmt(now + tonumber(ARGV[4]))
redis.call('SET', k('outage'), until_us, 'PXAT', fmt(math.floor((now + tonumber(ARGV[4])) / 1000) + GRACE_MS))
return {fmt(append({'k', 'o', 'a', fmt(now), 'u', until_us}))}
