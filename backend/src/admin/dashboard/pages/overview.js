// Overview: the server now and its last minutes, updated every second from the sampler's
// samples (GET /api/overview and /api/overview/series): connections, messages/s, send-to-ack
// p99, CPU per core and per thread group, memory, store, uptime and version.
import { api, el } from '../ui.js';
import { chart, format } from '../chart.js';

export const title = 'Overview';

// Seconds shown on the charts.
const WINDOW_S = 120;

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function bytes(n) { return format(n, 'B').replace(/([kMG]) B$/, ' $1B'); }

export async function render(main) {
  const stats = el('div', { class: 'stats' });
  const about = el('p', { class: 'muted', id: 'about' });
  const threads = el('tbody');
  const charts = {
    connections: chart('chart-connections', 'Connections'),
    messages: chart('chart-messages', 'Messages and deliveries per second'),
    latency: chart('chart-latency', 'Send-to-ack latency (ms)'),
    cpu: chart('chart-cpu', 'CPU per core (%)'),
  };
  main.append(el('div', { id: 'overview' },
    el('div', { class: 'card' }, el('h2', {}, 'Overview'), about, stats),
    el('div', { class: 'charts' }, Object.values(charts).map(c => c.node)),
    el('div', { class: 'card' }, el('h3', {}, 'CPU per thread group (% of one core)'),
      el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Group'), el('th', {}, 'Threads'), el('th', {}, 'CPU %'))), threads))));

  let samples = (await api('GET', `/api/overview/series?seconds=${WINDOW_S}`)).samples;
  let stopped = false;

  function stat(key, label, value) {
    return el('div', { class: 'stat' }, el('span', { class: 'muted' }, label), el('strong', { 'data-stat': key }, value));
  }

  function show(o) {
    const s = o.now || {};
    const lat = s.latency || {};
    const t = s.transports || {};
    about.textContent = `ringchat ${o.version} (${o.commit}) · up ${duration(o.uptime_s)} · ${o.shards} shards · ${o.online_users} users online`;
    stats.textContent = '';
    stats.append(
      stat('connections', 'Connections', format(s.connections || 0)),
      stat('transports', 'tcp / ws / tls / wss', `${t.tcp || 0} / ${t.ws || 0} / ${t.tls || 0} / ${t.wss || 0}`),
      stat('messages_per_s', 'Messages/s', format(s.messages_per_s || 0)),
      stat('deliveries_per_s', 'Deliveries/s', format(s.deliveries_per_s || 0)),
      stat('logins_per_s', 'Logins/s', format(s.logins_per_s || 0)),
      stat('logins_waiting', 'Logins waiting / refused', `${format(s.logins_in_flight || 0)} / ${format(s.logins_refused_total || 0)}`),
      stat('latency', 'Send→ack p50 / p99 / p99.9', `${format(lat.p50_ms || 0)} / ${format(lat.p99_ms || 0)} / ${format(lat.p999_ms || 0)} ms`),
      stat('cpu', 'Process CPU', `${format(s.process_cpu_percent || 0)} %`),
      stat('rss', 'Memory (RSS)', bytes(s.rss_bytes || 0)),
      stat('store', 'Store on disk', bytes(o.store.size_bytes)),
      stat('files', 'Files on disk', bytes(o.store.files_bytes)),
      stat('disk_free', 'Disk free', bytes(o.store.disk_free_bytes)),
      stat('messages_total', 'Messages since start', format(o.totals.messages_stored)),
    );
    threads.textContent = '';
    for (const g of s.cpu_threads || []) {
      threads.append(el('tr', {}, el('td', {}, g.group), el('td', {}, String(g.threads)), el('td', {}, format(g.percent))));
    }
    const col = (f) => samples.map(f);
    const labels = samples.length ? [new Date(samples[0].at_ms).toLocaleTimeString(), new Date(samples[samples.length - 1].at_ms).toLocaleTimeString()] : [];
    charts.connections.draw([
      { label: 'all', values: col(x => x.connections) },
      { label: 'logged in', values: col(x => x.authenticated) },
    ], { labels });
    charts.messages.draw([
      { label: 'messages/s', values: col(x => x.messages_per_s) },
      { label: 'deliveries/s', values: col(x => x.deliveries_per_s) },
    ], { labels });
    charts.latency.draw([
      { label: 'p99', values: col(x => x.latency.p99_ms) },
      { label: 'p50', values: col(x => x.latency.p50_ms) },
    ], { unit: 'ms', labels });
    const cores = samples.length ? samples[samples.length - 1].cpu_cores_percent.length : 0;
    charts.cpu.draw(Array.from({ length: cores }, (_, i) => ({ label: `core ${i}`, values: col(x => x.cpu_cores_percent[i] || 0) })),
      { unit: '%', max: 100, labels });
  }

  async function tick() {
    if (stopped) return;
    try {
      const o = await api('GET', '/api/overview');
      if (o.now && (!samples.length || o.now.at_ms > samples[samples.length - 1].at_ms)) {
        samples.push(o.now);
        if (samples.length > WINDOW_S) samples = samples.slice(-WINDOW_S);
      }
      if (!stopped) show(o);
    } catch (e) {
      about.textContent = `Not updated: ${e.message}`;
    }
  }

  await tick();
  const timer = setInterval(tick, 1000);
  return () => { stopped = true; clearInterval(timer); };
}
