-- ARGV: prefix, history, batch. Logs the natural end of every job due by Redis's clock (at most
-- batch), each once whichever replica gets there first: {due, next_due_us or '', last offset
-- or '', id...} with the ids of the jobs this call ended.
local batch = tonumber(ARGV[3])
local now = now_us()
local due = redis.call('ZRANGEBYSCORE', k('finishes'), '-inf', fmt(now), 'LIMIT', 0, batch)
local ended, last = {}, ''
for _, id in ipairs(due) do
  redis.call('ZREM', k('finishes'), id)
  local key = k('job', id)
  if redis.call('EXISTS', key) == 1 then
    local f = redis.call('HMGET', key, 'e', 'me')
    if not f[1] then
      redis.call('HSET', key, 'e', 'n')
    end
    if not f[2] then
      last = fmt(append({'k', 'e', 'j', id, 'a', fmt(now), 'e', f[1] or 'n', 'x', ''}))
      redis.call('HSET', key, 'me', last)
      if not f[1] then
        ended[#ended + 1] = id
      end
    end
  end
end
local next_due = redis.call('ZRANGE', k('finishes'), 0, 0, 'WITHSCORES')
local out = {fmt(#due), next_due[2] or '', last}
for _, id in ipairs(ended) do
  out[#out + 1] = id
end
return out
