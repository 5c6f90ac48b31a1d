-- ARGV: prefix, history, client, rps, burst, ttl_ms. One token of the client's bucket, by
-- Redis's clock: {allowed (1 or 0), tokens left, retry_after_us}. A bucket unused for ttl_ms
-- (enough to refill it) is forgotten: a new one is full too.
local key = k('rl', ARGV[3])
local rps, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_us()
local f = redis.call('HMGET', key, 'tokens', 'last')
local tokens = tonumber(f[1]) or burst
local last = tonumber(f[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) / 1000000 * rps)
local allowed, retry = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = math.ceil((1 - tokens) / rps * 1000000)
end
redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'last', fmt(now))
redis.call('PEXPIRE', key, ARGV[6])
return {fmt(allowed), fmt(math.floor(tokens)), fmt(retry)}
