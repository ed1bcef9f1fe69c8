-- VoidAuthorization (the compensation of AuthorizeCard): one atomic step that
-- replays a stored outcome, or voids every authorization of the order still in
-- force (none is fine: an empty rollback) and writes the order's tombstone, so a
-- late AuthorizeCard is refused; the outcome is stored under the message id in
-- the same step.
--
-- KEYS[1]  {prefix}processed:{message_id}
-- KEYS[2]  {prefix}tombstone:{order_id}
-- KEYS[3]  {prefix}order:{order_id}:authorizations   (set of authorization ids)
-- ARGV[1]  outcome TTL in seconds
-- ARGV[2]  {prefix}authorization:  (prefix of authorization hashes)
-- ARGV[3]  the message id, kept as the tombstone's value (the first void wrote it)
-- Returns  {outcome JSON, 1 if done now / 0 if replayed}
local stored = redis.call('GET', KEYS[1])
if stored then
  return { stored, 0 }
end

local ids = redis.call('SMEMBERS', KEYS[3])
table.sort(ids)
local voided = {}
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'state') == 'AUTHORIZED' then
    redis.call('HSET', key, 'state', 'VOIDED')
    table.insert(voided, id)
  end
end
-- No TTL: the tombstone is part of the order's accounting state, shown by
-- ListAuthorizations, and must outlive any late command.
redis.call('SET', KEYS[2], ARGV[3], 'NX')
local outcome = cjson.encode({ result = 'voided', authorization_id = voided[1] or '' })
redis.call('SET', KEYS[1], outcome, 'EX', ARGV[1])
return { outcome, 1 }
