-- Copies one finished saga N times under fresh ids, with its state hash, its event
-- stream and its index entries, so throughput can be measured against a Redis that
-- already holds many finished sagas (docs/performance.md).
-- redis-cli --eval loadgen/src/seed-finished-sagas.lua , <key prefix> <template saga id> <count> <start index>
-- The key prefix is order_service's, e.g. `perf-x:order:`. Copies get ids
-- `00000000-0000-7000-8000-<12 hex digits>`: they sort before every real UUIDv7,
-- so listings still page newest first. Run it in batches (memory_targets makes
-- 1000 copies per call) so that Redis is not blocked for long.
local prefix, template, count, start = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local state = prefix .. 'saga:{' .. template .. '}'
local fields = redis.call('HGETALL', state)
if #fields == 0 then return redis.error_reply('no saga ' .. template) end
local label = redis.call('HGET', state, 'label')
local events = redis.call('DUMP', state .. ':events')
local finished_at = redis.call('ZSCORE', prefix .. 'sagas:finished', template) or '0'
for i = start, start + count - 1 do
  local id = string.format('00000000-0000-7000-8000-%012x', i)
  local key = prefix .. 'saga:{' .. id .. '}'
  redis.call('HSET', key, unpack(fields))
  if events then redis.call('RESTORE', key .. ':events', 0, events, 'REPLACE') end
  redis.call('ZADD', prefix .. 'sagas:all', 0, id)
  redis.call('ZADD', prefix .. 'sagas:label:' .. label, 0, id)
  redis.call('ZADD', prefix .. 'sagas:finished', finished_at, id)
end
return count
