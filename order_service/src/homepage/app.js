// The scenario homepage: starts scenarios (POST /api/scenarios/{name}), follows one
// saga through server-sent events (GET /api/orders/{id}/events) and keeps the
// recent-orders table fresh (GET /api/orders). Plain DOM, no framework; every
// value from the server is written with textContent, never as HTML.
'use strict';

const ORDERS_REFRESH_MS = 3000;

/** What each event type does to its step's badge: [css class, label]. */
const STEP_EFFECT = {
  COMMAND_SENT: ['running', 'sent'],
  STEP_SUCCEEDED: ['done', 'succeeded'],
  STEP_FAILED: ['failed', 'failed'],
  STEP_TIMED_OUT: ['retrying', 'timed out'],
  RETRY_SCHEDULED: ['retrying', 'retry scheduled'],
  COMPENSATION_SENT: ['compensating', 'compensating'],
  COMPENSATION_SUCCEEDED: ['compensated', 'compensated'],
  COMPENSATION_FAILED: ['failed', 'compensation failed'],
};

const $ = (selector) => document.querySelector(selector);

/** The saga on screen: its EventSource, the ids already shown, its first event's time. */
let watched = null;

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function money(order) {
  if (order.total_minor == null) return '';
  return `${(order.total_minor / 100).toFixed(2)} ${order.currency || ''}`.trim();
}

function stateClass(state) {
  return `state ${String(state || 'none').toLowerCase()}`;
}

function showError(message) {
  const p = $('#start-error');
  p.textContent = message;
  p.hidden = !message;
}

async function json(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // Not JSON: fall through to the status line.
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// ---- starting a scenario ----

async function startScenario(button) {
  const name = button.dataset.scenario;
  showError('');
  button.setAttribute('aria-busy', 'true');
  button.disabled = true;
  try {
    const started = await json(await fetch(`/api/scenarios/${encodeURIComponent(name)}`, {
      method: 'POST',
      headers: { Accept: 'application/json' },
    }));
    watch(started.order_id, `${started.title} → expect ${started.expected_state}`);
    refreshOrders();
  } catch (error) {
    showError(`Could not start "${name}": ${error.message}`);
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

// ---- one saga, live ----

function resetSaga(orderId, label) {
  $('#saga-order-id').textContent = orderId;
  $('#saga-scenario').textContent = label || '';
  const state = $('#saga-state');
  state.textContent = '…';
  state.className = stateClass('none');
  $('#saga-outcome').hidden = true;
  for (const li of document.querySelectorAll('#steps li')) {
    li.classList.remove('running', 'done', 'failed', 'retrying', 'compensating', 'compensated');
    li.querySelector('.status').textContent = '';
  }
  const body = $('#events');
  body.replaceChildren();
  const row = document.createElement('tr');
  row.className = 'empty';
  cell(row, 'Waiting for events…').colSpan = 6;
  body.appendChild(row);
  highlightOrder(orderId);
}

function setLive(text) {
  const live = $('#saga-live');
  live.textContent = text || '';
  live.hidden = !text;
  live.classList.toggle('reconnecting', text !== 'live');
}

function watch(orderId, label) {
  if (watched) watched.source.close();
  resetSaga(orderId, label);
  if (location.hash !== `#${orderId}`) history.replaceState(null, '', `#${orderId}`);
  const source = new EventSource(`/api/orders/${encodeURIComponent(orderId)}/events`);
  const current = { orderId, source, seen: new Set(), firstAt: null };
  watched = current;
  setLive('live');
  source.addEventListener('open', () => { if (watched === current) setLive('live'); });
  source.addEventListener('saga', (message) => {
    if (watched === current) onSagaEvent(current, JSON.parse(message.data));
  });
  source.addEventListener('end', () => {
    source.close();
    if (watched !== current) return;
    setLive('');
    showOutcome(orderId);
    refreshOrders();
  });
  source.addEventListener('problem', (message) => {
    // The server ended the stream; EventSource reconnects with Last-Event-ID.
    if (watched === current) setLive(`reconnecting: ${JSON.parse(message.data).error}`);
  });
  source.addEventListener('error', () => {
    if (watched !== current) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused (bad or unknown id): the order lookup says why.
      setLive('');
      showOutcome(orderId);
    } else {
      setLive('reconnecting…');
    }
  });
}

function onSagaEvent(current, event) {
  if (current.seen.has(event.event_id)) return;
  current.seen.add(event.event_id);
  if (current.firstAt == null) current.firstAt = event.at_ms;

  const body = $('#events');
  const placeholder = body.querySelector('tr.empty');
  if (placeholder) placeholder.remove();
  const row = document.createElement('tr');
  row.className = `event ${event.type.toLowerCase()}`;
  row.dataset.type = event.type;
  cell(row, event.at_ms != null && current.firstAt != null ? `+${event.at_ms - current.firstAt}` : '', 'num');
  cell(row, event.type, 'type');
  cell(row, event.step === 'UNSPECIFIED' ? '' : event.step);
  cell(row, event.attempt ? String(event.attempt) : '', 'num');
  cell(row, event.code);
  cell(row, event.message);
  body.appendChild(row);
  row.scrollIntoView({ block: 'nearest' });

  const effect = STEP_EFFECT[event.type];
  const li = document.querySelector(`#steps li[data-step="${event.step}"]`);
  if (effect && li) {
    li.classList.remove('running', 'done', 'failed', 'retrying', 'compensating', 'compensated');
    li.classList.add(effect[0]);
    const attempt = event.attempt > 1 ? ` (attempt ${event.attempt})` : '';
    li.querySelector('.status').textContent = `${effect[1]}${attempt}${event.code ? ` · ${event.code}` : ''}`;
  }

  const state = $('#saga-state');
  const shown = event.saga_status === 'COMPENSATION_FAILED' ? 'PARKED' : event.order_state;
  state.textContent = shown;
  state.className = stateClass(shown);
  state.dataset.terminal = String(event.terminal);
}

async function showOutcome(orderId) {
  const p = $('#saga-outcome');
  try {
    const order = await json(await fetch(`/api/orders/${encodeURIComponent(orderId)}`));
    if (!watched || watched.orderId !== orderId) return;
    const parts = [`${order.state}`];
    if (order.total_minor != null) parts.push(`total ${money(order)}`);
    if (order.ticket_id != null) parts.push(`ticket #${order.ticket_id}`);
    if (order.authorization_id) parts.push(`authorization ${order.authorization_id}`);
    if (order.failed_step) {
      parts.push(`failed at ${order.failed_step}: ${order.failure_code} (${order.failure_reason})`);
    }
    p.textContent = parts.join(' · ');
    p.className = `outcome ${order.state.toLowerCase()}`;
  } catch (error) {
    p.textContent = error.message;
    p.className = 'outcome error';
  }
  p.hidden = false;
}

// ---- recent orders ----

function highlightOrder(orderId) {
  for (const row of document.querySelectorAll('#order-rows tr')) {
    row.classList.toggle('selected', row.dataset.orderId === orderId);
  }
}

async function refreshOrders() {
  const body = $('#order-rows');
  try {
    const { orders } = await json(await fetch('/api/orders?limit=20'));
    const rows = orders.map((order) => {
      const row = document.createElement('tr');
      row.dataset.orderId = order.order_id;
      row.tabIndex = 0;
      row.title = 'Replay this saga';
      cell(row, order.created_at_ms ? new Date(order.created_at_ms).toLocaleTimeString() : '', 'num');
      cell(row, order.order_id, 'id');
      const state = cell(row, '');
      const badge = document.createElement('span');
      badge.className = stateClass(order.state);
      badge.textContent = order.state;
      state.appendChild(badge);
      cell(row, String(order.consumer_id), 'num');
      cell(row, String(order.restaurant_id), 'num');
      cell(row, money(order), 'num');
      cell(row, order.failed_step ? `${order.failed_step}: ${order.failure_code}` : '');
      const open = () => watch(order.order_id, '');
      row.addEventListener('click', open);
      row.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
      return row;
    });
    if (rows.length === 0) {
      const row = document.createElement('tr');
      row.className = 'empty';
      cell(row, 'No orders yet: run a scenario.').colSpan = 7;
      rows.push(row);
    }
    body.replaceChildren(...rows);
    if (watched) highlightOrder(watched.orderId);
  } catch (error) {
    const row = document.createElement('tr');
    row.className = 'empty error';
    cell(row, `Cannot list orders: ${error.message}`).colSpan = 7;
    body.replaceChildren(row);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  for (const button of document.querySelectorAll('button.scenario')) {
    button.addEventListener('click', () => startScenario(button));
  }
  refreshOrders();
  setInterval(refreshOrders, ORDERS_REFRESH_MS);
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (/^[0-9a-fA-F-]{36}$/.test(fromHash)) watch(fromHash, '');
});
