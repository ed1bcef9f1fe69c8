-- Deletes copies made by seed-finished-sagas.lua: for each index, the copy's state
-- hash, its event stream and its index entries (docs/performance.md).
-- redis-cli --eval loadgen/src/unseed-finished-sagas.lua , <key prefix> <template saga id> <count> <start index>
-- Same arguments as the seeding call it undoes; run it in batches as that one.
local prefix, template, count, start = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local label = redis.call('HGET', prefix .. 'saga:{' .. template .. '}', 'label')
if not label then return redis.error_reply('no saga ' .. template) end
local deleted = 0
for i = start, start + count - 1 do
  local id = string.format('00000000-0000-7000-8000-%012x', i)
  local key = prefix .. 'saga:{' .. id .. '}'
  deleted = deleted + redis.call('DEL', key, key .. ':events')
  redis.call('ZREM', prefix .. 'sagas:all', id)
  redis.call('ZREM', prefix .. 'sagas:label:' .. label, id)
  redis.call('ZREM', prefix .. 'sagas:finished', id)
end
return deleted
