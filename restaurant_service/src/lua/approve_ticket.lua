-- ApproveTicket, atomically and idempotently, with the demo's fault injection.
-- KEYS[1] processed:{message_id}  KEYS[2] tickets (hash id -> record JSON)
-- KEYS[3] ticket_states (hash id -> state)  KEYS[4] approve_attempts:{ticket_id}
-- ARGV[1] outcome TTL (s)  ARGV[2] ticket id  ARGV[3] order id
-- ARGV[4] fault budgets JSON: {"<restaurant id>": N} ({} when fault injection is off)
-- Returns the outcome JSON. A transient failure is returned but NOT stored, so the
-- orchestrator's retry (same message id) is handled afresh and can succeed.
local stored = redis.call('GET', KEYS[1])
if stored then
  return stored
end

local raw = redis.call('HGET', KEYS[2], ARGV[2])
local record = nil
if raw then
  record = cjson.decode(raw)
  if record.order_id ~= ARGV[3] then
    record = nil
  end
end

if record then
  -- Fault injection first: the first N deliveries for this ticket fail transiently.
  local budget = tonumber(cjson.decode(ARGV[4])[tostring(record.restaurant_id)] or 0)
  if budget > 0 then
    local attempt = redis.call('INCR', KEYS[4])
    if attempt == 1 then
      redis.call('EXPIRE', KEYS[4], ARGV[1])
    end
    if attempt <= budget then
      return cjson.encode({
        outcome = 'failure',
        code = 'KITCHEN_UNAVAILABLE',
        message = 'the kitchen is unavailable (fault injection: attempt ' .. attempt .. ' of ' .. budget .. ' fails)',
        transient = true,
      })
    end
  end
end

local outcome
if not record then
  outcome = cjson.encode({
    outcome = 'failure',
    code = 'TICKET_NOT_FOUND',
    message = 'no ticket ' .. ARGV[2] .. ' for order ' .. ARGV[3],
  })
else
  local state = redis.call('HGET', KEYS[3], ARGV[2])
  if state == 'REJECTED' then
    outcome = cjson.encode({
      outcome = 'failure',
      code = 'TICKET_REJECTED',
      message = 'ticket ' .. ARGV[2] .. ' was rejected',
    })
  else
    if state == 'CREATE_PENDING' then
      redis.call('HSET', KEYS[3], ARGV[2], 'AWAITING_ACCEPTANCE')
    end
    outcome = cjson.encode({ outcome = 'success', ticket_id = tonumber(ARGV[2]) })
  end
end
redis.call('SET', KEYS[1], outcome, 'EX', ARGV[1])
return outcome
