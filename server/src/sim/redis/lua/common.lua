-- Shared by every script (prepended to each). ARGV[1] is the key prefix, ARGV[2] the log's
-- length bound (changes.history). Keys are built here from the prefix: the simulator's Redis
-- is one server, not a cluster.
local P = ARGV[1]
local HISTORY = ARGV[2]
-- A key's TTL runs this long past the moment the simulator forgets it, so that the sweeper,
-- which logs the forgetting, gets there first; the TTL bounds what no replica is left to sweep.
local GRACE_MS = 60000

local function k(...)
  return P .. ':' .. table.concat({...}, ':')
end

-- Redis's clock, in microseconds: every decision in these scripts is taken by this one clock.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Integers are written as decimal digits, never in a float's exponent form.
local function fmt(n)
  return string.format('%d', n)
end

-- Appends an entry to the change log: its offset is the next of the counter, its entry id
-- `<offset>-0`, and the log keeps the last HISTORY entries. Returns the offset.
local function append(fields)
  local offset = redis.call('INCR', k('offset'))
  redis.call('XADD', k('log'), 'MAXLEN', HISTORY, fmt(offset) .. '-0', unpack(fields))
  return offset
end

-- Makes `key` live at least until `until_us` (plus the grace).
local function keep_until(key, until_us, now)
  local want = math.floor((until_us - now) / 1000) + GRACE_MS
  if redis.call('PTTL', key) < want then
    redis.call('PEXPIRE', key, want)
  end
end

local function json_array(t)
  if #t == 0 then
    return '[]'
  end
  return cjson.encode(t)
end
