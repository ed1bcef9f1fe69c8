-- AuthorizeCard, after Rust has checked the account and the amount: one atomic
-- step that replays a stored outcome, refuses after a void (tombstone), returns
-- the authorization already in force for the order, or creates one; the outcome
-- is stored under the message id in the same step.
--
-- KEYS[1]  {prefix}processed:{message_id}
-- KEYS[2]  {prefix}tombstone:{order_id}
-- KEYS[3]  {prefix}order:{order_id}:authorizations   (set of authorization ids)
-- KEYS[4]  {prefix}authorization:{ARGV[2]}            (the hash of a new authorization)
-- ARGV[1]  outcome TTL in seconds
-- ARGV[2]  id for a new authorization (a UUID v7 made by the caller)
-- ARGV[3]  order id
-- ARGV[4]  consumer id
-- ARGV[5]  amount in minor units
-- ARGV[6]  currency code
-- ARGV[7]  {prefix}authorization:  (prefix of authorization hashes, to read existing ones)
-- Returns  {outcome JSON, 1 if decided now / 0 if replayed}
local stored = redis.call('GET', KEYS[1])
if stored then
  return { stored, 0 }
end

local outcome
if redis.call('EXISTS', KEYS[2]) == 1 then
  outcome = cjson.encode({
    result = 'failed',
    code = 'AUTHORIZATION_VOIDED',
    message = 'order ' .. ARGV[3] .. ' was voided before its authorization arrived',
  })
else
  local existing = nil
  local ids = redis.call('SMEMBERS', KEYS[3])
  table.sort(ids)
  for _, id in ipairs(ids) do
    if redis.call('HGET', ARGV[7] .. id, 'state') == 'AUTHORIZED' then
      existing = id
      break
    end
  end
  if existing then
    outcome = cjson.encode({ result = 'authorized', authorization_id = existing })
  else
    redis.call('HSET', KEYS[4],
      'authorization_id', ARGV[2],
      'order_id', ARGV[3],
      'consumer_id', ARGV[4],
      'amount_minor', ARGV[5],
      'currency_code', ARGV[6],
      'state', 'AUTHORIZED')
    redis.call('SADD', KEYS[3], ARGV[2])
    outcome = cjson.encode({ result = 'authorized', authorization_id = ARGV[2] })
  end
end
redis.call('SET', KEYS[1], outcome, 'EX', ARGV[1])
return { outcome, 1 }
