-- RejectTicket (the compensation of CreateTicket), atomically and idempotently.
-- KEYS[1] processed:{message_id}   KEYS[2] tombstone:{order_id}
-- KEYS[3] order_ticket:{order_id}  KEYS[4] ticket_states (hash id -> state)
-- ARGV[1] outcome TTL (s)
-- Returns the outcome JSON, the same for every delivery of one message id.
local stored = redis.call('GET', KEYS[1])
if stored then
  return stored
end

-- Always: a CreateTicket for this order that arrives later is refused.
redis.call('SET', KEYS[2], '1')

local outcome
local id = redis.call('GET', KEYS[3])
if not id then
  -- Empty rollback: the action never ran; the tombstone is all there is to do.
  outcome = cjson.encode({ outcome = 'success', ticket_id = 0 })
else
  local state = redis.call('HGET', KEYS[4], id)
  if state == 'AWAITING_ACCEPTANCE' then
    outcome = cjson.encode({
      outcome = 'failure',
      code = 'TICKET_ALREADY_ACCEPTED',
      message = 'ticket ' .. id .. ' is already approved; it can no longer be rejected',
    })
  else
    if state == 'CREATE_PENDING' then
      redis.call('HSET', KEYS[4], id, 'REJECTED')
    end
    outcome = cjson.encode({ outcome = 'success', ticket_id = tonumber(id) })
  end
end
redis.call('SET', KEYS[1], outcome, 'EX', ARGV[1])
return outcome
