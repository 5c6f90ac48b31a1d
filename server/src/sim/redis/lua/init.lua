-- ARGV: prefix, history, a fresh epoch. The log's epoch (kept if there is one) and head.
redis.call('SET', k('epoch'), ARGV[3], 'NX')
return {redis.call('GET', k('epoch')), redis.call('GET', k('offset')) or '0'}
