// The portal's only script (ADR 007): a fleet's operations live (and below, the ledger's
// blocks and an instance's logs), from the server-sent events
// of /portal/fleets/{fleet}/events (the fleet's audit chain, tailed). Vendored here and
// embedded in the binary with include_str!, so nothing is built; served as
// /portal/static/live.js under `script-src 'self'`. Text only goes in through textContent.
(function () {
  'use strict';
  const live = document.getElementById('live');
  if (!live || !window.EventSource) return;
  const list = live.querySelector('ol');
  const status = live.querySelector('.status');
  const waves = live.querySelector('.waves');
  const MAX_ITEMS = 500;

  function setStatus(state, text) {
    live.dataset.state = state;
    status.textContent = text;
    status.className = 'status ' + (state === 'finished-ok' ? 'ok' : state === 'running' ? '' : 'bad');
  }

  function reason(e) {
    return (e.outcome && e.outcome.reason) || '';
  }

  // One line per event, for people.
  function line(kind, e) {
    const target = e.step.split(' ').slice(1).join(' ');
    switch (kind) {
      case 'operation-started': {
        const d = e.detail || {};
        return `r${e.revision} ${e.step.split('.')[0]} started by ${e.actor}: ` +
          `${d.creates || 0} to create, ${d.replaces || 0} to replace, ${d.removes || 0} to remove`;
      }
      case 'unit-started': return `${target} started`;
      case 'unit-failed': return `${target} could not start: ${reason(e)}`;
      case 'unit-stopped': return `${target} stopped${e.detail && e.detail.reason ? ' (' + e.detail.reason + ')' : ''}`;
      case 'gate-passed': return `${target} passed its health gate` + (e.detail && e.detail.ms !== undefined ? ` in ${e.detail.ms} ms` : '');
      case 'gate-failed': return `${target} FAILED its health gate: ${reason(e)}`;
      case 'wave-finished': return `wave ${target} finished, every instance healthy`;
      case 'canary': return `canary analysis of ${target}: ${e.outcome.status}`;
      case 'rollback-started': return `ROLLING BACK: ${(e.detail && e.detail.reason) || ''}`;
      case 'instance-restored': return `${target} rolled back: ${((e.detail && e.detail.detail) || []).join(', ')}`;
      case 'operation-finished': return `r${e.revision} finished: ${e.outcome.status === 'ok' ? 'ok' : reason(e) || e.outcome.status}`;
      default: return `${e.step}: ${e.outcome ? e.outcome.status : ''}`;
    }
  }

  function onEvent(kind, message) {
    let e;
    try {
      e = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    const li = document.createElement('li');
    li.className = 'ev-' + kind + (kind.endsWith('failed') ? ' bad' : '');
    li.dataset.seq = e.seq;
    const at = (e.at || '').replace(/^.*T/, '').replace(/\..*$/, '');
    li.textContent = `${at} ${line(kind, e)}`;
    list.appendChild(li);
    while (list.children.length > MAX_ITEMS) list.removeChild(list.firstChild);
    switch (kind) {
      case 'operation-started':
        waves.textContent = '';
        setStatus('running', `r${e.revision}: in progress`);
        break;
      case 'wave-finished': {
        const w = document.createElement('span');
        w.className = 'wave ok';
        w.textContent = `wave ${e.step.split(' ')[1]} done`;
        waves.appendChild(w);
        break;
      }
      case 'gate-failed':
      case 'unit-failed':
        setStatus('failing', `r${e.revision}: ${line(kind, e)}`);
        break;
      case 'rollback-started':
        setStatus('rolling-back', `r${e.revision}: rolling back`);
        break;
      case 'operation-finished':
        setStatus(e.outcome.status === 'ok' ? 'finished-ok' : 'finished-failed', line(kind, e) +
          ' (reload the page for the instances and revisions as they are now)');
        break;
    }
  }

  const source = new EventSource(live.dataset.events);
  source.onopen = () => { live.dataset.connected = 'true'; };
  source.onerror = () => { live.dataset.connected = 'false'; };
  for (const kind of ['operation-started', 'operation-finished', 'unit-started', 'unit-failed',
    'unit-stopped', 'gate-passed', 'gate-failed', 'wave-finished', 'canary', 'rollback-started',
    'instance-restored', 'job', 'step']) {
    source.addEventListener(kind, (m) => onEvent(kind, m));
  }
})();

// The ledger explorer: each finalized block as it comes, newest on top.
(function () {
  'use strict';
  const live = document.getElementById('ledger-live');
  if (!live || !window.EventSource) return;
  const body = live.querySelector('#blocks tbody');
  const height = document.getElementById('finalized-height');
  const MAX_ROWS = 20;
  const short = (s) => String(s == null ? '-' : s).slice(0, 16);
  const source = new EventSource(live.dataset.events);
  source.onopen = () => { live.dataset.connected = 'true'; };
  source.onerror = () => { live.dataset.connected = 'false'; };
  source.addEventListener('block', (m) => {
    let b;
    try {
      b = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    if (body.querySelector(`tr[data-height="${Number(b.height)}"]`)) return;
    const tr = document.createElement('tr');
    tr.dataset.height = String(Number(b.height));
    tr.className = 'arrived';
    const cells = [[b.height], [short(b.hash), true], [short(b.proposer), true], [b.view],
      [b.tx_count], [b.finalized_by]];
    for (const [v, code] of cells) {
      const td = document.createElement('td');
      const text = v == null ? '-' : String(v);
      if (code) {
        const c = document.createElement('code');
        c.textContent = text;
        td.appendChild(c);
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
    }
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > MAX_ROWS) body.removeChild(body.lastChild);
    if (height) height.textContent = String(b.height);
    live.dataset.latest = String(b.height);
  });
})();

// An instance's logs: each line the unit writes from where the rendered tail ends (the page's
// stream starts at the tail's cursor; each event's id is the cursor after its line, so a
// reconnect resumes exactly). A line the tail showed unfinished is replaced by the whole one.
(function () {
  'use strict';
  const live = document.getElementById('logs-live');
  if (!live || !window.EventSource) return;
  const list = live.querySelector('ol');
  const status = live.querySelector('.status');
  const MAX_LINES = 5000;
  const source = new EventSource(live.dataset.events);
  source.onopen = () => {
    live.dataset.connected = 'true';
    live.dataset.state = 'following';
    status.textContent = 'following: new lines appear below';
  };
  source.onerror = () => { live.dataset.connected = 'false'; };
  source.addEventListener('line', (m) => {
    let l;
    try {
      l = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    const unit = String(l.unit);
    for (const old of list.querySelectorAll('li.partial')) {
      if (old.dataset.unit === unit) old.remove();
    }
    const li = document.createElement('li');
    li.dataset.unit = unit;
    li.className = 'arrived';
    const u = document.createElement('span');
    u.className = 'unit';
    u.textContent = unit;
    li.appendChild(u);
    li.appendChild(document.createTextNode(' ' + String(l.text)));
    list.appendChild(li);
    while (list.children.length > MAX_LINES) list.removeChild(list.firstChild);
    live.dataset.lines = String(Number(live.dataset.lines || 0) + 1);
    list.scrollTop = list.scrollHeight;
  });
  source.addEventListener('end', (m) => {
    let reason = '';
    try {
      reason = JSON.parse(m.data).reason || '';
    } catch (_) { /* the reason is optional */ }
    source.close();
    live.dataset.connected = 'false';
    live.dataset.state = 'ended';
    status.textContent = 'no longer following: ' + reason;
  });
})();
