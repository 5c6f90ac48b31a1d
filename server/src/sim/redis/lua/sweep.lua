-- ARGV: prefix, history, batch, history_age_us, watch_ttl_us, idempotency_ttl_us. Forgets what
-- is due by Redis's clock (at most batch of each): jobs past their TTL (their end logged first
-- if it was not), watch sets unused for their TTL, Idempotency-Keys past theirs; trims the log to
-- its age. {jobs forgotten, sets forgotten, last offset or ''}.
local batch, age = tonumber(ARGV[3]), tonumber(ARGV[4])
local watch_ttl, idem_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_us()
local last = ''
local due = redis.call('ZRANGEBYSCORE', k('expiries'), '-inf', fmt(now), 'LIMIT', 0, batch)
for _, id in ipairs(due) do
  redis.call('ZREM', k('expiries'), id)
  local key = k('job', id)
  local f = redis.call('HMGET', key, 't', 'd', 'h', 'e', 'me', 'c')
  if f[1] then
    if not f[5] and (f[4] or f[3] ~= '1') then
      -- Ended (canceled, or past its natural end) and not logged yet: log it first.
      local word = f[4] or 'n'
      last = fmt(append({'k', 'e', 'j', id, 'a', fmt(now), 'e', word, 'x', ''}))
    end
    last = fmt(append({'k', 'g', 'j', id, 'a', fmt(now)}))
    redis.call('DEL', key)
    redis.call('ZREM', k('finishes'), id)
    if f[6] ~= '' then
      redis.call('ZREM', k('client', f[6]), id)
      redis.call('ZREM', k('heygen', f[6]), id)
    end
  end
end
local sets = redis.call('ZRANGEBYSCORE', k('watches'), '-inf', fmt(now - watch_ttl), 'LIMIT', 0, batch)
for _, id in ipairs(sets) do
  local client = redis.call('HGET', k('watch', id), 'client') or ''
  redis.call('DEL', k('watch', id), k('watchm', id))
  redis.call('ZREM', k('watches'), id)
  redis.call('SREM', k('wc', client), id)
  last = fmt(append({'k', 'w', 'w', id, 'c', client, 'a', fmt(now), 'op', 'd', 'add', '[]', 'rm', '[]'}))
end
redis.call('ZREMRANGEBYSCORE', k('idem'), '-inf', fmt(now - idem_ttl))
-- The log's age bound: drop the entries appended more than `age` ago.
local oldest = redis.call('XRANGE', k('log'), '-', '+', 'COUNT', batch)
local keep_from, seen = nil, nil
for _, entry in ipairs(oldest) do
  local fields, at = entry[2], nil
  for i = 1, #fields, 2 do
    if fields[i] == 'a' then
      at = tonumber(fields[i + 1])
      break
    end
  end
  if at and at > now - age then
    keep_from = entry[1]
    break
  end
  seen = entry[1]
end
if keep_from then
  redis.call('XTRIM', k('log'), 'MINID', keep_from)
elseif seen then
  local offset = tonumber(string.match(seen, '^(%d+)'))
  redis.call('XTRIM', k('log'), 'MINID', fmt(offset + 1) .. '-0')
end
return {fmt(#due), fmt(#sets), last}
