/* synod viz: the browser page of `synod viz`.
 *
 * It asks the server for one simulated run (GET /api/run, a `synod-trace` document: see
 * docs/trace-format.md) and replays it: the cluster as an SVG ring of nodes with messages
 * moving along the links, each node's log, the clients' history and the checker's verdict.
 * Clicking a node or a link forks the run (an intervention: `do=crash:1@t,...`); the server
 * replays the same seed with it, identical up to t.
 *
 * Layout of this file:
 *   1. constants and small helpers
 *   2. parameters: the replay-command parser and the query string (pure)
 *   3. the trace model: per-node state folded from events, checkpoints every
 *      CHECK_EVERY events, messages indexed by send time (pure)
 *   4. the page: controls, rendering, playback, interventions, window.viz
 *
 * Parts 2 and 3 touch no DOM, so node can load this file and test them (module.exports).
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------------------------------
  // 1. Constants and small helpers
  // ---------------------------------------------------------------------------------------

  /** A snapshot of every node's state is kept before each this many events. */
  const CHECK_EVERY = 2000;
  /** Sends are grouped in chunks that remember their latest end, to skip finished ones. */
  const CHUNK = 256;
  /** The most message dots drawn at once, and the most that get a text label. */
  const MAX_DOTS = 300;
  const MAX_LABELS = 80;
  /** Fates of a message. */
  const FATE_OPEN = 0; // sent, arrives at `arrive`, nothing more in the trace
  const FATE_RECV = 1;
  const FATE_LOST = 2;
  const FATE_DROPPED = 3; // arrive: null, dropped at once

  /** The parameters of a run, in the order the query string lists them. */
  const PARAM_NAMES = ['protocol', 'nodes', 'seed', 'faults', 'clients', 'keys',
    'safety-ticks', 'liveness-ticks', 'snapshot-every', 'level', 'backoff', 'spread-clients'];
  /** The server's defaults (replaced by /api/options when it answers). */
  const PAGE_DEFAULTS = { protocol: 'raft', nodes: '3', seed: '1', faults: 'none', clients: '3',
    keys: '3', 'safety-ticks': '1000', 'liveness-ticks': '500', 'snapshot-every': '200', level: 'one', backoff: 'on', 'spread-clients': 'off' };
  /** `synod sim`'s own defaults: what a pasted command means for a flag it leaves out. */
  const SIM_DEFAULTS = { protocol: 'raft', nodes: '5', seed: '1', faults: 'all', clients: '5',
    keys: '5', 'safety-ticks': '3000', 'liveness-ticks': '1000', 'snapshot-every': '200', level: 'one', backoff: 'on', 'spread-clients': 'off' };
  const FALLBACK_OPTIONS = {
    protocols: ['raft', 'multi-paxos', 'basic-paxos', 'zab', 'sync', 'dns', 'gossip'],
    faults: ['delay', 'drop', 'duplicate', 'partition', 'crash', 'skew', 'disk', 'leader-race',
      'pause', 'membership'],
    defaults: PAGE_DEFAULTS,
  };
  /** Event kinds that count as faults (timeline markers, "next fault", the notes log). */
  const FAULT_KINDS = new Set(['crash', 'restart', 'pause', 'resume', 'net', 'fault']);
  const KNOWN_ROLES = new Set(['leader', 'follower', 'candidate', 'pre-candidate', 'peer',
    'learner', 'secondary']);
  /** Eras are coloured from this palette (integers by value, so consecutive terms differ). */
  const ERA_PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948',
    '#b07aa1', '#ff9da7', '#9c755f', '#8cd17d', '#499894', '#d37295'];

  function hashString(s) {
    let h = 2166136261;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
    // Mix the bits so that similar names (AppendEntries, AppendReply) land far apart.
    h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
    return h >>> 0;
  }
  /** An era's colour: integers by value, unless they have a label of their own (a Paxos ballot). */
  function eraColour(era, label) {
    if (label !== undefined && label !== String(era)) return ERA_PALETTE[hashString(label) % ERA_PALETTE.length];
    if (Number.isInteger(era)) return ERA_PALETTE[((era % ERA_PALETTE.length) + ERA_PALETTE.length) % ERA_PALETTE.length];
    return ERA_PALETTE[hashString(fmtEra(era)) % ERA_PALETTE.length];
  }
  const typeColours = new Map();
  function typeColour(type) {
    let c = typeColours.get(type);
    if (c === undefined) typeColours.set(type, (c = `hsl(${hashString(String(type)) % 360}, 62%, 40%)`));
    return c;
  }
  function fmtEra(era) {
    if (era === null || era === undefined) return '–';
    if (Array.isArray(era)) return era.join('.');
    if (typeof era === 'object') return JSON.stringify(era);
    return String(era);
  }
  /** The word for a protocol's era. */
  function eraWord(protocol) {
    switch (protocol) {
      case 'raft': return 'term';
      case 'multi-paxos': case 'basic-paxos': return 'ballot';
      case 'zab': return 'epoch';
      case 'sync': return 'view';
      case 'dns': return 'serial';
      default: return 'era';
    }
  }
  /** The number of values in the sorted array-like `a` that are <= t. */
  function upperBound(a, t) {
    let lo = 0, hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] <= t) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  function clamp(x, lo, hi) { return x < lo ? lo : x > hi ? hi : x; }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }
  function fmtTick(t, tickUs) { return (t / tickUs).toFixed(2); }

  // ---------------------------------------------------------------------------------------
  // 2. Parameters: replay commands and query strings
  // ---------------------------------------------------------------------------------------

  /** Flags of `synod sim` that stand alone and set a parameter to `on`. */
  const SWITCH_FLAGS = new Set(['spread-clients']);
  const VALUE_FLAGS = new Set([...PARAM_NAMES.filter((n) => !SWITCH_FLAGS.has(n)), 'seeds']);
  const BOOL_FLAGS = new Set(['trace', 'help', 'h', 'version']);

  /** The first seed of a `--seeds` value: `7`, `7..9`, `5..=6` or `4,2`. */
  function firstSeed(value) {
    const first = String(value).split(/\.\.|,/)[0].trim();
    if (!/^\d+$/.test(first)) throw new Error(`'${value}' is not a seed or a range of seeds`);
    return first;
  }

  /**
   * Parses a replay command a sweep prints (`synod sim --protocol raft --seed 812 ...`) into
   * run parameters. Flags may come in any order and as `--flag=value`; unknown flags are
   * skipped (with their value, if the next word is not a flag). A flag left out means what
   * `synod sim` means by it (its defaults). A URL or query string of this page works too.
   * Returns {params, doList, t}; throws an Error with a readable message.
   */
  function parseCommand(text) {
    const src = String(text || '').trim();
    if (!src) throw new Error('paste a replay command first');
    if (!/(^|\s)--/.test(src) && /(^|[?&])(protocol|seed|nodes)=/.test(src)) {
      const query = queryToParams(src.slice(src.indexOf('?') + 1));
      return { params: Object.assign({}, PAGE_DEFAULTS, query.params), doList: query.doList, t: query.t };
    }
    const tokens = src.replace(/\\\r?\n/g, ' ').split(/\s+/)
      .map((s) => s.replace(/^['"]+|['"]+$/g, ''))
      .filter((s) => s && s !== '\\');
    const params = {};
    let seeds = null, found = false;
    for (let i = 0; i < tokens.length; i++) {
      const tok = tokens[i];
      if (!tok.startsWith('--')) continue;
      let name = tok.slice(2), value = null;
      const eq = name.indexOf('=');
      if (eq >= 0) { value = name.slice(eq + 1); name = name.slice(0, eq); }
      name = name.toLowerCase().replace(/_/g, '-');
      if (SWITCH_FLAGS.has(name)) {
        params[name] = value === null ? 'on' : value;
        found = true;
      } else if (VALUE_FLAGS.has(name)) {
        if (value === null) {
          const next = tokens[i + 1];
          if (next === undefined || next.startsWith('--')) throw new Error(`--${name} needs a value`);
          value = next;
          i++;
        }
        if (name === 'seeds') seeds = value; else params[name] = value;
        found = true;
      } else if (value === null && !BOOL_FLAGS.has(name)) {
        const next = tokens[i + 1];
        if (next !== undefined && !next.startsWith('-')) i++; // e.g. `--jobs 2`
      }
    }
    if (!found) throw new Error('that is not a synod sim command: it has none of --protocol, --seed, --nodes…');
    if (params.seed === undefined) params.seed = seeds !== null ? firstSeed(seeds) : SIM_DEFAULTS.seed;
    else if (!/^\d+$/.test(params.seed)) throw new Error(`'${params.seed}' is not a seed`);
    return { params: Object.assign({}, SIM_DEFAULTS, params), doList: [], t: null };
  }

  /** Encodes a query value, keeping `,`, `:` and `@` readable (they are legal in a query). */
  function encodeValue(v) {
    return encodeURIComponent(String(v)).replace(/%2C/gi, ',').replace(/%3A/gi, ':').replace(/%40/g, '@');
  }

  /** The query string of a run: its parameters, then `do` and `t` when given. */
  function paramsToQuery(params, doList, t) {
    const parts = [];
    for (const name of PARAM_NAMES) {
      const v = params[name];
      if (v !== undefined && v !== null && String(v) !== '') parts.push(`${name}=${encodeValue(v)}`);
    }
    if (doList && doList.length) parts.push(`do=${encodeValue(doList.join(','))}`);
    if (t !== null && t !== undefined && Number.isFinite(Number(t))) parts.push(`t=${Math.floor(Number(t))}`);
    return parts.join('&');
  }

  /** The inverse of paramsToQuery: {params (only those given), doList, t or null}. */
  function queryToParams(search) {
    const q = new URLSearchParams(search);
    const params = {};
    for (const name of PARAM_NAMES) if (q.has(name)) params[name] = q.get(name);
    const doList = (q.get('do') || '').split(',').map((s) => s.trim()).filter(Boolean);
    const tText = q.get('t');
    const t = tText !== null && tText !== '' && Number.isFinite(Number(tText)) ? Math.max(0, Math.floor(Number(tText))) : null;
    return { params, doList, t };
  }

  // ---------------------------------------------------------------------------------------
  // 3. The trace model
  // ---------------------------------------------------------------------------------------

  function newNodeState() {
    return { role: null, era: null, eraLabel: null, leader: null, commit: 0, applied: 0, last: 0, up: true,
      paused: false, timerStart: null, timerDeadline: null, logFrom: 1, logEras: [],
      syncAt: -Infinity, why: null };
  }
  function initialState(ids) {
    const nodes = {};
    for (const id of ids) nodes[id] = newNodeState();
    return { nodes, cut: [], violation: null };
  }
  /** A copy that folding into leaves the original alone (arrays from events are shared, never mutated). */
  function cloneState(st) {
    const nodes = {};
    for (const id in st.nodes) nodes[id] = Object.assign({}, st.nodes[id]);
    return { nodes, cut: st.cut, violation: st.violation };
  }

  /** Folds one event into the state. */
  function applyEvent(st, ev) {
    switch (ev.k) {
      case 'net': st.cut = ev.cut || []; return;
      case 'violation': st.violation = ev; return;
      default: break;
    }
    if (ev.n === undefined || ev.n === null) return;
    let node = st.nodes[ev.n];
    if (!node) node = st.nodes[ev.n] = newNodeState();
    switch (ev.k) {
      case 'state':
        node.role = ev.role; node.era = ev.era; node.leader = ev.leader;
        // How the protocol writes its era (a Paxos ballot is round.node); the era otherwise.
        node.eraLabel = typeof ev.era_label === 'string' ? ev.era_label : fmtEra(ev.era);
        node.commit = ev.commit; node.applied = ev.applied; node.last = ev.last;
        break;
      case 'log': node.logFrom = ev.from; node.logEras = ev.eras || []; break;
      case 'timer': node.timerStart = ev.start; node.timerDeadline = ev.deadline; break;
      case 'sync': node.syncAt = ev.t; break;
      case 'crash':
        node.up = false; node.paused = false; node.why = ev.why || null;
        node.timerStart = null; node.timerDeadline = null;
        break;
      case 'restart':
        node.up = true; node.paused = false; node.why = null;
        // A restarted node has lost its volatile role until it says otherwise.
        if (node.role === 'leader' || node.role === 'candidate' || node.role === 'pre-candidate') node.role = 'follower';
        break;
      case 'pause': node.paused = true; break;
      case 'resume': node.paused = false; break;
      default: break;
    }
  }

  /** Readable text for a `net` event. */
  function describeNet(cut) {
    if (!cut || cut.length === 0) return 'network healed: no link cut';
    const set = new Set(cut.map(([a, b]) => `${a}>${b}`));
    const parts = [];
    for (const [a, b] of cut) {
      if (set.has(`${b}>${a}`)) { if (a < b) parts.push(`${a}–${b}`); } else parts.push(`${a}→${b}`);
    }
    return `cut: ${parts.join(', ')}`;
  }

  /**
   * Indexes a trace for replay: node ids, event times, checkpoints, sends with their end
   * times, leader changes, faults, notes and the history ordered by call.
   */
  function buildModel(trace) {
    const run = trace.run || {};
    const events = Array.isArray(trace.events) ? trace.events : [];
    const history = Array.isArray(trace.history) ? trace.history : [];
    const tickUs = run.tick_us || 10000;
    const protocol = run.protocol || 'raft';

    // Node ids: members in their order, then any other id the events mention.
    const ids = [], seen = new Set(), extra = new Set();
    for (const id of trace.members || []) if (!seen.has(id)) { seen.add(id); ids.push(id); }
    const note = (id) => { if (typeof id === 'number' && !seen.has(id)) extra.add(id); };
    for (const ev of events) {
      note(ev.n);
      if (ev.k === 'send') { note(ev.from); note(ev.to); } // a log event's `from` is an index
    }
    for (const id of [...extra].sort((a, b) => a - b)) { seen.add(id); ids.push(id); }

    const n = events.length;
    const times = new Float64Array(n);
    const sT = [], sEnd = [], sArrive = [], sFrom = [], sTo = [], sType = [], sFate = [];
    const open = new Map(); // message id -> indices of its sends not yet ended
    const checkpoints = [];
    const leaderTimes = [], faultTimes = [], notes = [];
    const eraLabels = new Map(); // era -> its label, from state events (log events carry bare eras)
    const opInvokes = new Map(); // op -> [[t, node], ...]
    const st = initialState(ids);

    for (let i = 0; i < n; i++) {
      if (i % CHECK_EVERY === 0) checkpoints.push(cloneState(st));
      const ev = events[i];
      times[i] = ev.t;
      switch (ev.k) {
        case 'send': {
          const j = sT.length;
          sT.push(ev.t); sFrom.push(ev.from); sTo.push(ev.to); sType.push(ev.type || '?');
          if (ev.arrive === null || ev.arrive === undefined) {
            sArrive.push(NaN); sEnd.push(ev.t); sFate.push(FATE_DROPPED);
          } else {
            sArrive.push(ev.arrive); sEnd.push(ev.arrive); sFate.push(FATE_OPEN);
            const q = open.get(ev.id);
            if (q) q.push(j); else open.set(ev.id, [j]);
          }
          break;
        }
        case 'recv': case 'lost': {
          const q = open.get(ev.id);
          if (q && q.length) {
            const j = q.shift();
            if (!q.length) open.delete(ev.id);
            sEnd[j] = ev.t; sFate[j] = ev.k === 'recv' ? FATE_RECV : FATE_LOST;
          }
          break;
        }
        case 'state': {
          const prev = st.nodes[ev.n];
          if (typeof ev.era_label === 'string') eraLabels.set(ev.era, ev.era_label);
          if (ev.role === 'leader' && (!prev || !prev.up || prev.role !== 'leader' || fmtEra(prev.era) !== fmtEra(ev.era))) {
            leaderTimes.push(ev.t);
            const label = typeof ev.era_label === 'string' ? ev.era_label : fmtEra(ev.era);
            notes.push({ t: ev.t, kind: 'leader', text: `n${ev.n} leads, ${eraWord(protocol)} ${label}` });
          }
          break;
        }
        case 'invoke': {
          const list = opInvokes.get(ev.op);
          if (list) list.push([ev.t, ev.n]); else opInvokes.set(ev.op, [[ev.t, ev.n]]);
          break;
        }
        case 'note': notes.push({ t: ev.t, kind: 'note', text: ev.text || '' }); break;
        case 'violation': notes.push({ t: ev.t, kind: 'violation', text: `${ev.kind}: ${ev.detail}` }); break;
        default: break;
      }
      if (FAULT_KINDS.has(ev.k)) {
        faultTimes.push(ev.t);
        let text;
        switch (ev.k) {
          case 'crash': text = `n${ev.n} crashed${ev.why ? ` (${ev.why})` : ''}`; break;
          case 'restart': text = `n${ev.n} restarted from its disk`; break;
          case 'pause': text = `n${ev.n} paused`; break;
          case 'resume': text = `n${ev.n} resumed`; break;
          case 'net': text = describeNet(ev.cut); break;
          default: text = ev.text || '';
        }
        notes.push({ t: ev.t, kind: ev.k, text });
      }
      applyEvent(st, ev);
    }
    if (checkpoints.length === 0) checkpoints.push(cloneState(st));

    // Chunks of sends: the latest end in each, so a frame skips chunks long finished.
    const chunkMaxEnd = [];
    for (let c = 0; c * CHUNK < sT.length; c++) {
      let m = -Infinity;
      for (let j = c * CHUNK; j < Math.min(sT.length, (c + 1) * CHUNK); j++) if (sEnd[j] > m) m = sEnd[j];
      chunkMaxEnd.push(m);
    }

    // The history ordered by call time (stable).
    const hOrder = history.map((_, i) => i).filter((i) => typeof history[i].call === 'number');
    hOrder.sort((a, b) => history[a].call - history[b].call || a - b);
    const hCall = Float64Array.from(hOrder, (i) => history[i].call);

    const lastT = n ? times[n - 1] : 0;
    const endedAt = typeof run.ended_at === 'number' ? run.ended_at : lastT;
    return {
      run, protocol, tickUs, endedAt, ids, events, times, checkpoints, history, hOrder, hCall,
      opInvokes, eraLabels, verdict: trace.verdict || null, truncated: !!trace.truncated,
      sT: Float64Array.from(sT), sEnd: Float64Array.from(sEnd), sArrive: Float64Array.from(sArrive),
      sFrom, sTo, sType, sFate: Uint8Array.from(sFate), chunkMaxEnd: Float64Array.from(chunkMaxEnd),
      leaderTimes: Float64Array.from(leaderTimes), faultTimes: Float64Array.from(faultTimes),
      notes, notesT: Float64Array.from(notes, (x) => x.t),
    };
  }

  /** A cursor into a model's events: the state after the first `i` events. */
  function newCursor(model) { return { i: 0, st: cloneState(model.checkpoints[0]) }; }

  /**
   * The state after the first `i` events. Folds forward from the cursor when that is near,
   * otherwise from the checkpoint at or before `i`; at most CHECK_EVERY events either way.
   */
  function stateAtIndex(model, cur, i) {
    const c = Math.min(Math.floor(i / CHECK_EVERY), model.checkpoints.length - 1);
    if (i < cur.i || c * CHECK_EVERY > cur.i) {
      cur.st = cloneState(model.checkpoints[c]);
      cur.i = c * CHECK_EVERY;
    }
    const ev = model.events;
    while (cur.i < i) applyEvent(cur.st, ev[cur.i++]);
    return cur.st;
  }
  /** The state at time t: every event with `t <= t` folded. */
  function stateAt(model, cur, t) { return stateAtIndex(model, cur, upperBound(model.times, t)); }

  /**
   * The sends to draw at `now` into `out` (indices): in flight (sent, not yet received or
   * lost), or dropped/lost within the last `linger` µs (drawn as an x).
   */
  function visibleMessages(model, now, linger, out) {
    out.length = 0;
    const hi = upperBound(model.sT, now);
    const { sEnd, sFate, chunkMaxEnd } = model;
    for (let c = 0; c * CHUNK < hi; c++) {
      if (chunkMaxEnd[c] + linger <= now) continue;
      const stop = Math.min(hi, (c + 1) * CHUNK);
      for (let j = c * CHUNK; j < stop; j++) {
        const end = sEnd[j];
        if (now < end) out.push(j);
        else if ((sFate[j] === FATE_LOST || sFate[j] === FATE_DROPPED) && now < end + linger) out.push(j);
      }
    }
    return out;
  }

  /** The leader at a state: an up node whose role is leader (the highest era if several). */
  function leaderOf(model, st) {
    let best = null;
    for (const id of model.ids) {
      const ns = st.nodes[id];
      if (!ns || !ns.up || ns.role !== 'leader') continue;
      if (best === null || compareEras(ns.era, st.nodes[best].era) > 0) best = id;
    }
    return best;
  }
  function compareEras(a, b) {
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return fmtEra(a).localeCompare(fmtEra(b), undefined, { numeric: true });
  }

  const core = { CHECK_EVERY, parseCommand, paramsToQuery, queryToParams, buildModel, newCursor,
    stateAtIndex, stateAt, applyEvent, initialState, cloneState, visibleMessages, upperBound,
    leaderOf, describeNet, eraWord, FATE_OPEN, FATE_RECV, FATE_LOST, FATE_DROPPED };

  // ---------------------------------------------------------------------------------------
  // 4. The page
  // ---------------------------------------------------------------------------------------

  function boot() {
    const SVGNS = 'http://www.w3.org/2000/svg';
    const CX = 320, CY = 220; // the ring's centre; the viewBox is fitted around it per run
    const R = 38; // node radius before scaling
    const $ = (id) => document.getElementById(id);
    const ui = {};
    for (const id of [...PARAM_NAMES, 'controls', 'run', 'command', 'load-command', 'play', 'step',
      'next-leader', 'next-fault', 'timeline', 'speed', 'cluster', 'verdict', 'history', 'error',
      'loading', 'interventions', 'clear-interventions', 'markers', 'clock', 'jump-violation',
      'logs', 'logs-title', 'notes', 'legend', 'fault-boxes', 'history-count', 'run-info']) ui[id] = $(id);

    /** Everything the page knows; `model` is the loaded run. */
    const S = {
      defaults: Object.assign({}, PAGE_DEFAULTS),
      model: null,
      params: null, // the parameters of the loaded run
      interventions: [], // `action:args@t` strings of the loaded run
      cursor: null,
      now: 0,
      playing: false,
      speed: Number(ui.speed.value) || 0.05,
      raf: 0, lastTs: 0, lastUrlWrite: 0, urlTimer: 0,
      dragging: false,
      fetchGen: 0,
      inflight: null,
      vis: [],
      // rendering caches
      nodeEls: new Map(), linkEls: [], linkByKey: new Map(), pos: new Map(), scale: 1, ends: new Map(),
      dotPool: [], markPool: [], logRows: new Map(), historySig: '', notesSig: '', cutRef: null,
    };

    const viz = window.viz = {
      ready: false,
      state: publicState,
      seek: (t) => { seek(t); return Math.floor(S.now); },
      step: () => step(),
      play: () => play(),
      pause: () => pause(),
      nextLeaderChange: () => jumpTo(S.model && S.model.leaderTimes),
      nextFault: () => jumpTo(S.model && S.model.faultTimes),
      clickNode: (id) => clickNode(Number(id)),
      clickLink: (a, b) => clickLink(Number(a), Number(b)),
      parseCommand,
    };

    // --- small DOM helpers ---------------------------------------------------------------
    function svg(tag, attrs, parent) {
      const el = document.createElementNS(SVGNS, tag);
      for (const k in attrs) el.setAttribute(k, attrs[k]);
      if (parent) parent.appendChild(el);
      return el;
    }
    function setAttr(el, k, v) { if (el.getAttribute(k) !== v) el.setAttribute(k, v); }
    function setText(el, v) { if (el.textContent !== v) el.textContent = v; }
    function showError(msg) { ui.error.textContent = msg; ui.error.hidden = false; }
    function clearError() { ui.error.hidden = true; ui.error.textContent = ''; }
    function tickText(t) { return S.model ? fmtTick(t, S.model.tickUs) : String(t); }

    // --- controls ------------------------------------------------------------------------
    function readControls() {
      const p = {};
      for (const name of PARAM_NAMES) p[name] = ui[name].value.trim();
      return p;
    }
    function writeControls(p) {
      for (const name of PARAM_NAMES) {
        if (p[name] === undefined || p[name] === null) continue;
        const el = ui[name], v = String(p[name]);
        if (el.tagName === 'SELECT' && ![...el.options].some((o) => o.value === v)) {
          el.appendChild(new Option(v, v)); // let the server judge an unknown value
        }
        el.value = v;
      }
      syncFaultBoxes();
    }
    function fillOptions(options) {
      ui.protocol.textContent = '';
      for (const p of options.protocols) ui.protocol.appendChild(new Option(p, p));
      ui['fault-boxes'].innerHTML = options.faults.map((f) =>
        `<label><input type="checkbox" value="${esc(f)}"> ${esc(f)}</label>`).join('');
      Object.assign(S.defaults, stringify(options.defaults || {}));
      writeControls(S.defaults);
    }
    function stringify(o) { const r = {}; for (const k in o) r[k] = String(o[k]); return r; }
    /** The checkboxes follow the faults text: `all`, `none` or a comma list. */
    function syncFaultBoxes() {
      const text = ui.faults.value.trim().toLowerCase();
      const list = new Set(text.split(',').map((s) => s.trim()));
      for (const box of ui['fault-boxes'].querySelectorAll('input')) box.checked = text === 'all' || list.has(box.value);
    }
    /** The faults text follows the checkboxes. */
    function faultBoxesChanged() {
      const boxes = [...ui['fault-boxes'].querySelectorAll('input')];
      const on = boxes.filter((b) => b.checked).map((b) => b.value);
      ui.faults.value = on.length === 0 ? 'none' : on.length === boxes.length ? 'all' : on.join(',');
    }

    // --- URL -----------------------------------------------------------------------------
    function writeUrl(push) {
      if (S.urlTimer) { clearTimeout(S.urlTimer); S.urlTimer = 0; }
      if (!S.params) return;
      const url = `${location.pathname}?${paramsToQuery(S.params, S.interventions, S.model ? S.now : null)}`;
      if (push) history.pushState(null, '', url); else history.replaceState(null, '', url);
      S.lastUrlWrite = performance.now();
    }
    /** Writes the URL soon: at most ~4 times a second (browsers throttle replaceState). */
    function writeUrlSoon() {
      const wait = 250 - (performance.now() - S.lastUrlWrite);
      if (wait <= 0) writeUrl(false);
      else if (!S.urlTimer) S.urlTimer = setTimeout(() => { S.urlTimer = 0; writeUrl(false); }, wait);
    }
    function loadFromUrl() {
      const q = queryToParams(location.search);
      const params = Object.assign({}, S.defaults, q.params);
      writeControls(params);
      return runSim(params, { doList: q.doList, t: q.t, push: false });
    }

    // --- fetching a run ------------------------------------------------------------------
    /**
     * Runs the simulation on the server and loads it. `t`: the playback time to show (null:
     * 0, or just before the violation); `resume`: play on afterwards.
     */
    async function runSim(params, { doList = [], t = null, push = true, resume = false } = {}) {
      const gen = ++S.fetchGen;
      // A newer request supersedes an older one: the older fetch is dropped.
      if (S.inflight) S.inflight.abort();
      const inflight = S.inflight = new AbortController();
      pause(false);
      viz.ready = false;
      clearError();
      ui.loading.hidden = false;
      document.body.classList.add('busy');
      const done = () => {
        ui.loading.hidden = true;
        document.body.classList.remove('busy');
        viz.ready = S.model !== null;
      };
      let trace;
      try {
        const res = await fetch(`/api/run?${paramsToQuery(params, doList, null)}`, { signal: inflight.signal });
        const text = await res.text();
        if (gen !== S.fetchGen) return;
        if (!res.ok) { showError(text.trim() || `the server answered ${res.status} ${res.statusText}`); done(); return; }
        trace = JSON.parse(text);
        if (!trace || trace.format !== 'synod-trace') throw new Error('the server did not send a synod-trace document');
      } catch (e) {
        if (gen !== S.fetchGen) return;
        showError(e instanceof SyntaxError ? `the server sent something that is not JSON: ${e.message}` : String(e.message || e));
        done();
        return;
      }
      try {
        load(trace, params, doList, t, push);
      } catch (e) {
        showError(`could not show this trace: ${e.message || e}`);
      }
      done();
      if (resume) play();
    }

    /** Shows a fetched trace. */
    function load(trace, params, doList, t, push) {
      const m = buildModel(trace);
      S.model = m;
      S.cursor = newCursor(m);
      // The run's own account of its parameters and interventions is the truth.
      const run = m.run;
      S.params = Object.assign({}, params);
      for (const name of PARAM_NAMES) {
        const v = run[name.replace(/-/g, '_')];
        if (v !== undefined && v !== null) S.params[name] = String(v);
      }
      writeControls(S.params);
      S.interventions = typeof run.interventions === 'string'
        ? run.interventions.split(',').map((s) => s.trim()).filter(Boolean) : doList.slice();

      ui.timeline.max = String(m.endedAt);
      buildCluster();
      buildLogs();
      buildMarkers();
      renderVerdict();
      renderInterventions();
      ui['run-info'].textContent = `${run.replay || ''}${S.interventions.length ? `  (+ do=${S.interventions.join(',')})` : ''}` +
        ` · ${m.events.length.toLocaleString()} events, ${m.sT.length.toLocaleString()} messages` +
        (m.truncated ? ' · trace truncated' : '');
      S.historySig = S.notesSig = '';
      const v = m.verdict;
      if (t === null && v && !v.clean && typeof v.at === 'number') t = Math.max(0, v.at - m.tickUs);
      S.now = clamp(t === null ? 0 : t, 0, m.endedAt);
      render();
      writeUrl(push);
    }

    // --- the cluster SVG -----------------------------------------------------------------
    function buildCluster() {
      const m = S.model, el = ui.cluster;
      el.textContent = '';
      S.nodeEls.clear(); S.linkEls = []; S.linkByKey.clear(); S.pos.clear(); S.ends.clear();
      S.dotPool = []; S.markPool = []; S.cutRef = null;
      const count = m.ids.length;
      S.scale = count > 7 ? 0.78 : count > 5 ? 0.9 : 1;
      const ring = count <= 1 ? 0 : Math.min(165, 100 + count * 15);
      // Fit the view to the ring, with room at the sides for message labels.
      const ext = Math.max(170, ring + (R + 14) * S.scale), padX = 50;
      el.setAttribute('viewBox', `${Math.round(CX - ext - padX)} ${Math.round(CY - ext)} ${Math.round(2 * (ext + padX))} ${Math.round(2 * ext)}`);
      const start = count === 2 ? Math.PI : -Math.PI / 2;
      m.ids.forEach((id, i) => {
        const a = start + (2 * Math.PI * i) / count;
        S.pos.set(id, { x: CX + ring * Math.cos(a), y: CY + ring * Math.sin(a) });
      });

      // Links. The visible wire and a wide transparent line along all of it (`data-wire`)
      // sit at the bottom; above them each link's `g.link` holds a small round handle, placed
      // where no other handle or node covers it: a browser test clicking `g.link` clicks its
      // centre, which on a bare line could be another link's crossing, or a line of zero height.
      const wires = svg('g', { class: 'wires' }, el);
      const links = svg('g', { class: 'links' }, el);
      const handles = [];
      const clearance = (R + 12) * S.scale + 9;
      for (let i = 0; i < count; i++) {
        for (let j = i + 1; j < count; j++) {
          const [a, b] = [m.ids[i], m.ids[j]].sort((x, y) => x - y);
          const p = S.pos.get(a), q = S.pos.get(b), key = `${a}-${b}`;
          const coords = { x1: p.x.toFixed(1), y1: p.y.toFixed(1), x2: q.x.toFixed(1), y2: q.y.toFixed(1) };
          const wire = svg('line', Object.assign({ class: 'wire', 'data-wire': key }, coords), wires);
          svg('line', Object.assign({ class: 'wire-hit', 'data-wire': key }, coords), wires);
          let h = null;
          for (const f of [0.5, 0.42, 0.58, 0.35, 0.65, 0.3, 0.7, 0.25, 0.75]) {
            const c = { x: p.x + (q.x - p.x) * f, y: p.y + (q.y - p.y) * f };
            const free = handles.every((o) => Math.hypot(o.x - c.x, o.y - c.y) >= 18) &&
              m.ids.every((id) => { const o = S.pos.get(id); return Math.hypot(o.x - c.x, o.y - c.y) >= clearance; });
            if (free) { h = c; break; }
          }
          if (!h) h = { x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 };
          handles.push(h);
          const g = svg('g', { class: 'link', 'data-link': key, 'data-cut': 'none' }, links);
          const title = svg('title', {}, g);
          svg('circle', { class: 'handle', cx: h.x.toFixed(1), cy: h.y.toFixed(1), r: 8 }, g);
          S.linkEls.push({ a, b, g, wire, title });
          S.linkByKey.set(key, S.linkEls[S.linkEls.length - 1]);
        }
      }
      const nodes = svg('g', { class: 'nodes' }, el);
      const C = 2 * Math.PI * (R + 5);
      for (const id of m.ids) {
        const p = S.pos.get(id);
        const g = svg('g', { class: 'node', 'data-node': String(id), 'data-role': 'unknown', 'data-up': 'true',
          transform: `translate(${p.x.toFixed(1)} ${p.y.toFixed(1)}) scale(${S.scale})` }, nodes);
        const e = {
          g,
          title: svg('title', {}, g),
          flash: svg('circle', { class: 'flash', r: R + 10, opacity: 0 }, g),
          track: svg('circle', { class: 'timer-track', r: R + 5, display: 'none' }, g),
          timer: svg('circle', { class: 'timer', r: R + 5, transform: 'rotate(-90)', 'stroke-dasharray': `0 ${C}`, display: 'none' }, g),
          body: svg('circle', { class: 'body role-unknown', r: R }, g),
          id: svg('text', { class: 'nid', y: -13 }, g),
          role: svg('text', { class: 'nrole', y: 1 }, g),
          era: svg('text', { class: 'nera', y: 13 }, g),
          idx: svg('text', { class: 'nidx', y: 24 }, g),
          status: svg('text', { class: 'nstatus', y: R + 19 }, g),
          disk: svg('path', { class: 'disk', d: 'M22,-40 h11 l3,3 v10 h-14 z', opacity: 0 }, g),
          circumference: C,
        };
        e.id.textContent = `n${id}`;
        S.nodeEls.set(id, e);
      }
      S.msgLayer = svg('g', { class: 'msgs' }, el);
      S.markLayer = svg('g', { class: 'marks' }, el);
      S.overflow = svg('text', { class: 'overflow', x: Math.round(CX - ext - padX + 8), y: Math.round(CY + ext - 8) }, el);
    }

    /** Where a message from `from` to `to` starts and ends (circle edge to circle edge, offset by direction). */
    function endpoints(from, to) {
      const key = `${from}>${to}`;
      let e = S.ends.get(key);
      if (e !== undefined) return e;
      const a = S.pos.get(from), b = S.pos.get(to);
      if (!a || !b || from === to) { S.ends.set(key, null); return null; }
      const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
      const ux = dx / len, uy = dy / len, px = -uy * 4, py = ux * 4, rr = R * S.scale + 2;
      e = { x0: a.x + ux * rr + px, y0: a.y + uy * rr + py, x1: b.x - ux * rr + px, y1: b.y - uy * rr + py };
      S.ends.set(key, e);
      return e;
    }

    /** How long (virtual µs) a drop mark stays: ~0.3 s of real time, at least 2 ticks. */
    function lingerUs() { return Math.max(2 * S.model.tickUs, 300000 * S.speed); }
    /** How long a disk sync flashes: a tick, or ~0.15 s of real time when that is longer. */
    function flashUs() { return Math.max(S.model.tickUs, 150000 * S.speed); }

    function renderNodes(st) {
      const m = S.model, now = S.now, word = eraWord(m.protocol), flash = flashUs();
      for (const id of m.ids) {
        const ns = st.nodes[id], e = S.nodeEls.get(id);
        const role = ns.role || 'unknown';
        setAttr(e.g, 'data-role', role);
        setAttr(e.g, 'data-up', String(ns.up));
        setAttr(e.g, 'data-paused', String(ns.paused));
        setAttr(e.g, 'class', `node${ns.up ? '' : ' down'}${ns.paused ? ' paused' : ''}`);
        setAttr(e.body, 'class', `body role-${KNOWN_ROLES.has(role) ? role : 'unknown'}`);
        setText(e.role, ns.up ? role : 'crashed');
        setText(e.status, ns.up && ns.paused ? 'paused' : '');
        const era = ns.eraLabel === null ? fmtEra(ns.era) : ns.eraLabel;
        setText(e.era, ns.era === null || ns.era === undefined ? '' : `${word} ${era.length > 9 ? `${era.slice(0, 8)}…` : era}`);
        setText(e.idx, `c${ns.commit} a${ns.applied}`);
        setText(e.title, `n${id}: ${ns.up ? role : `crashed${ns.why ? ` (${ns.why})` : ''}`}${ns.paused ? ', paused' : ''}` +
          `\n${word} ${era}${ns.leader !== null && ns.leader !== undefined ? `, follows n${ns.leader}` : ''}` +
          `\ncommit ${ns.commit}, applied ${ns.applied}, last ${ns.last}\nclick to ${ns.up ? 'crash' : 'restart'} it`);
        // The election (or suspicion) timeout: how much of it has run.
        const timing = ns.up && ns.timerDeadline !== null && ns.timerStart !== null && ns.timerDeadline > ns.timerStart;
        setAttr(e.track, 'display', timing ? 'inline' : 'none');
        setAttr(e.timer, 'display', timing ? 'inline' : 'none');
        if (timing) {
          const f = clamp((now - ns.timerStart) / (ns.timerDeadline - ns.timerStart), 0, 1);
          setAttr(e.timer, 'stroke-dasharray', `${(f * e.circumference).toFixed(1)} ${e.circumference.toFixed(1)}`);
          setAttr(e.timer, 'stroke', f >= 1 ? '#c62828' : '#5f6b7d');
        }
        // A disk sync flashes for a moment.
        const age = now - ns.syncAt;
        const glow = age >= 0 && age < flash ? (1 - age / flash).toFixed(2) : '0';
        setAttr(e.flash, 'opacity', glow);
        setAttr(e.disk, 'opacity', glow);
      }
    }

    function renderLinks(st) {
      if (st.cut === S.cutRef) return;
      S.cutRef = st.cut;
      const blocked = new Set((st.cut || []).map(([a, b]) => `${a}>${b}`));
      for (const l of S.linkEls) {
        const ab = blocked.has(`${l.a}>${l.b}`), ba = blocked.has(`${l.b}>${l.a}`);
        const state = ab && ba ? 'both' : ab ? `${l.a}>${l.b}` : ba ? `${l.b}>${l.a}` : 'none';
        setAttr(l.g, 'data-cut', state);
        const cls = `${ab || ba ? ' cut' : ''}${ab !== ba ? ' oneway' : ''}`;
        setAttr(l.g, 'class', `link${cls}`);
        l.wire.setAttribute('class', `wire${cls}${l.wire.classList.contains('hover') ? ' hover' : ''}`);
        setText(l.title, state === 'none' ? `link n${l.a}–n${l.b}: click to cut`
          : state === 'both' ? `link n${l.a}–n${l.b} is cut: click to mend`
            : `n${state.replace('>', ' → n')} is blocked (one way): click to mend`);
      }
    }

    function renderMessages() {
      const m = S.model, now = S.now, linger = lingerUs();
      const vis = visibleMessages(m, now, linger, S.vis);
      const labels = vis.length <= MAX_LABELS;
      let dots = 0, marks = 0, over = 0;
      for (const j of vis) {
        const e = endpoints(m.sFrom[j], m.sTo[j]);
        if (!e) continue;
        const t0 = m.sT[j], end = m.sEnd[j];
        if (now < end) {
          if (dots >= MAX_DOTS) { over++; continue; }
          const arrive = m.sArrive[j];
          const f = arrive > t0 ? clamp((now - t0) / (arrive - t0), 0, 1) : 1;
          const x = e.x0 + (e.x1 - e.x0) * f, y = e.y0 + (e.y1 - e.y0) * f;
          const d = dotAt(dots++), colour = typeColour(m.sType[j]);
          setAttr(d.g, 'transform', `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
          setAttr(d.c, 'fill', colour);
          setAttr(d.text, 'fill', colour);
          setText(d.text, labels ? m.sType[j] : '');
          setAttr(d.g, 'display', 'inline');
        } else {
          // Dropped at once (at the sender) or lost (at the receiver): a fading x.
          const atSender = m.sFate[j] === FATE_DROPPED;
          const x = atSender ? e.x0 : e.x1, y = atSender ? e.y0 : e.y1;
          const mk = markAt(marks++);
          setAttr(mk, 'transform', `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
          setAttr(mk, 'opacity', (1 - (now - end) / linger).toFixed(2));
          setAttr(mk, 'display', 'inline');
        }
      }
      for (let i = dots; i < S.dotPool.length; i++) setAttr(S.dotPool[i].g, 'display', 'none');
      for (let i = marks; i < S.markPool.length; i++) setAttr(S.markPool[i], 'display', 'none');
      setText(S.overflow, over ? `+${over} more messages in flight` : '');
    }
    function dotAt(i) {
      while (S.dotPool.length <= i) {
        const g = svg('g', { class: 'msg' }, S.msgLayer);
        S.dotPool.push({ g, c: svg('circle', { r: 4 }, g), text: svg('text', { x: 6, y: -4 }, g) });
      }
      return S.dotPool[i];
    }
    function markAt(i) {
      while (S.markPool.length <= i) S.markPool.push(svg('path', { class: 'mark', d: 'M-5,-5L5,5M-5,5L5,-5' }, S.markLayer));
      return S.markPool[i];
    }

    // --- logs ----------------------------------------------------------------------------
    function buildLogs() {
      const m = S.model;
      const paxos = m.protocol === 'multi-paxos' || m.protocol === 'basic-paxos';
      ui['logs-title'].textContent = paxos ? 'slots (per node, latest 48)' : 'logs (per node, latest 48)';
      ui.logs.textContent = '';
      S.logRows.clear();
      for (const id of m.ids) {
        const row = document.createElement('div');
        row.className = 'logrow';
        row.dataset.node = String(id);
        row.innerHTML = `<span class="who">n${id}</span><span class="ix first"></span><span class="boxes"></span><span class="ix last"></span>`;
        ui.logs.appendChild(row);
        S.logRows.set(id, { row, first: row.children[1], boxes: row.children[2], last: row.children[3], eras: null, sig: '' });
      }
    }
    function renderLogs(st) {
      const word = eraWord(S.model.protocol);
      for (const [id, r] of S.logRows) {
        const ns = st.nodes[id];
        const sig = `${ns.logFrom}|${ns.commit}|${ns.applied}|${ns.up}`;
        if (r.eras === ns.logEras && r.sig === sig) continue;
        r.eras = ns.logEras; r.sig = sig;
        r.row.classList.toggle('down', !ns.up);
        const eras = ns.logEras || [];
        if (!eras.length) {
          r.first.textContent = ''; r.last.textContent = '';
          r.boxes.innerHTML = '<span class="none">empty</span>';
          continue;
        }
        r.first.textContent = String(ns.logFrom);
        r.last.textContent = String(ns.logFrom + eras.length - 1);
        let html = '';
        for (let i = 0; i < eras.length; i++) {
          const index = ns.logFrom + i, era = eras[i];
          if (era === null || era === undefined) {
            html += `<span class="box empty" title="${index}: nothing accepted"></span>`;
            continue;
          }
          // A Paxos slot's era is the ballot that wrote it: round << 16 | node.
          const label = S.model.eraLabels.get(era) ??
            (word === 'ballot' ? `${Math.floor(era / 65536)}.${era % 65536}` : undefined);
          const c = eraColour(era, label);
          const committed = index <= ns.commit, applied = index <= ns.applied;
          const style = committed ? `background:${c};border-color:${c}`
            : `border-color:${c};background:repeating-linear-gradient(135deg,${c}55 0 2px,transparent 2px 5px)`;
          const status = applied ? 'applied' : committed ? 'committed' : 'not committed';
          html += `<span class="box ${committed ? 'committed' : 'open'}${applied ? ' applied' : ''}" style="${style}"` +
            ` title="${index}: ${word} ${esc(label === undefined ? fmtEra(era) : label)}, ${status}"></span>`;
        }
        r.boxes.innerHTML = html;
      }
    }

    // --- side panels ---------------------------------------------------------------------
    function renderVerdict() {
      const m = S.model, v = m.verdict;
      let html;
      if (!v) html = '<div class="sub">no verdict in the trace</div>';
      else if (v.clean) html = '<div class="clean">clean: no property broken</div>';
      else {
        html = `<div class="bad">${esc(v.kind || 'violation')} violation</div>` +
          `<div class="detail">${esc(v.detail || '')}</div>` +
          (typeof v.at === 'number' ? `<div class="sub">found at tick ${tickText(v.at)}</div>` : '');
      }
      if (v) html += `<div class="sub">linearizable: <b>${esc(v.linearizable || '?')}</b></div>`;
      if (m.truncated) html += '<div class="sub">the trace stops early (too many events); the history and verdict cover the whole run</div>';
      ui.verdict.innerHTML = html;
      ui.verdict.dataset.clean = String(!!(v && v.clean));
      ui['jump-violation'].hidden = !(v && !v.clean && typeof v.at === 'number');
    }

    function renderInterventions() {
      ui.interventions.innerHTML = S.interventions.length
        ? S.interventions.map((d) => {
          const [what, at] = d.split('@');
          return `<li><code>${esc(d)}</code> — ${esc(what.replace(':', ' ').replace(/(\d+)/g, 'n$1'))} at tick ${esc(tickText(Number(at)))}</li>`;
        }).join('')
        : '<li class="none">none: this is the seed\'s own run</li>';
      ui['clear-interventions'].disabled = S.interventions.length === 0;
    }

    function renderHistory() {
      const m = S.model, now = S.now;
      const hi = upperBound(m.hCall, now), lo = Math.max(0, hi - 200);
      let ended = 0;
      for (let k = lo; k < hi; k++) {
        const op = m.history[m.hOrder[k]];
        if (typeof op.end === 'number' && op.end <= now) ended++;
      }
      const sig = `${lo}:${hi}:${ended}`;
      if (sig === S.historySig) return;
      S.historySig = sig;
      let html = '';
      for (let k = hi - 1; k >= lo; k--) {
        const i = m.hOrder[k], op = m.history[i];
        const done = typeof op.end === 'number' && op.end <= now;
        const outcome = done ? (op.outcome || 'ok') : 'pending';
        let res = 'pending…';
        if (done) {
          res = op.outcome === 'ok' || !op.outcome ? (op.result || 'ok') : op.outcome;
          if (op.outcome && op.outcome !== 'ok' && op.result && op.result !== op.outcome) res += `: ${op.result}`;
        }
        let node = '?';
        for (const [t, n] of m.opInvokes.get(i) || []) if (t <= now) node = n;
        html += `<li class="${esc(outcome)}" data-op="${i}"><span class="when">${tickText(op.call)}</span>` +
          `<span class="who">c${esc(op.c)}→n${esc(node)}</span><span class="what">${esc(op.text || '')}</span>` +
          `<span class="res" title="${esc(res)}">${esc(res)}</span></li>`;
      }
      ui.history.innerHTML = html || '<li class="none">no operation yet</li>';
      ui['history-count'].textContent = `(${hi} of ${m.history.length} called)`;
    }

    function renderNotes() {
      const m = S.model;
      const hi = upperBound(m.notesT, S.now), lo = Math.max(0, hi - 100);
      const sig = `${hi}`;
      if (sig === S.notesSig) return;
      S.notesSig = sig;
      let html = '';
      for (let k = hi - 1; k >= lo; k--) {
        const x = m.notes[k];
        html += `<li class="k-${esc(x.kind)}"><span class="when">${tickText(x.t)}</span>` +
          `<span class="kind">${esc(x.kind)}</span><span class="text">${esc(x.text)}</span></li>`;
      }
      ui.notes.innerHTML = html || '<li class="none">nothing yet</li>';
    }

    function buildMarkers() {
      const m = S.model, end = m.endedAt || 1;
      const seen = new Set();
      let html = '';
      const add = (t, cls, title) => {
        const key = `${cls}${Math.round((t / end) * 600)}`;
        if (seen.has(key)) return;
        seen.add(key);
        html += `<span class="${cls}" style="left:${((t / end) * 100).toFixed(3)}%" title="${esc(title)}"></span>`;
      };
      for (const t of m.faultTimes) add(t, 'm-fault', 'fault');
      for (const t of m.leaderTimes) add(t, 'm-leader', 'leader change');
      if (typeof m.run.healed_at === 'number' && m.run.healed_at <= end) add(m.run.healed_at, 'm-heal', 'faults healed');
      const v = m.verdict;
      if (v && !v.clean && typeof v.at === 'number') add(Math.min(v.at, end), 'm-violation', `${v.kind} violation`);
      ui.markers.innerHTML = html;
    }

    function buildLegend() {
      const roles = ['leader', 'follower', 'candidate', 'pre-candidate', 'peer', 'learner', 'secondary'];
      const line = (style) => `<svg width="26" height="10"><line x1="1" y1="5" x2="25" y2="5" style="${style}"/></svg>`;
      ui.legend.innerHTML = roles.map((r) => `<span><i class="sw role-${r}"></i>${r}</span>`).join('') +
        '<span><i class="sw" style="background:var(--down);border-color:#9aa0a8"></i>crashed</span>' +
        '<span><i class="sw" style="border-style:dashed;border-width:2px"></i>paused</span>' +
        `<span>${line('stroke:#c3c8d0;stroke-width:1.5')}link</span>` +
        `<span>${line('stroke:#c62828;stroke-width:2;stroke-dasharray:6 4')}cut</span>` +
        `<span>${line('stroke:#e57373;stroke-width:2;stroke-dasharray:2 4')}cut one way</span>` +
        '<span><svg width="26" height="10"><circle cx="8" cy="5" r="4" fill="#5b8def"/></svg>message (type)</span>' +
        '<span><svg width="26" height="12"><path d="M4,2L12,10M4,10L12,2" stroke="#c62828" stroke-width="2.5"/></svg>dropped / lost</span>' +
        '<span><svg width="26" height="16"><circle cx="9" cy="8" r="6" fill="none" stroke="#e6e8ec" stroke-width="2.5"/>' +
        '<path d="M9,2 A6,6 0 0 1 15,8" fill="none" stroke="#5f6b7d" stroke-width="2.5"/></svg>timeout elapsed</span>' +
        '<span><svg width="26" height="16"><circle cx="9" cy="8" r="6" fill="none" stroke="#2563eb" stroke-width="2.5"/></svg>disk sync</span>' +
        '<span><i class="box committed" style="display:inline-block;background:#4e79a7;border-color:#4e79a7;vertical-align:-4px;margin-right:5px"></i>committed</span>' +
        '<span><i class="box committed applied" style="display:inline-block;background:#4e79a7;border-color:#4e79a7;vertical-align:-4px;margin-right:5px"></i>applied</span>' +
        '<span><i class="box" style="display:inline-block;border-color:#4e79a7;background:repeating-linear-gradient(135deg,#4e79a755 0 2px,transparent 2px 5px);vertical-align:-4px;margin-right:5px"></i>not committed</span>' +
        '<span><i class="box empty" style="display:inline-block;vertical-align:-4px;margin-right:5px"></i>empty slot</span>';
    }

    // --- rendering a frame ---------------------------------------------------------------
    function render() {
      const m = S.model;
      if (!m) return;
      const st = stateAt(m, S.cursor, S.now);
      renderLinks(st);
      renderNodes(st);
      renderMessages();
      renderLogs(st);
      renderHistory();
      renderNotes();
      if (!S.dragging) ui.timeline.value = String(Math.floor(S.now));
      ui.clock.textContent = `tick ${fmtTick(S.now, m.tickUs)} / ${fmtTick(m.endedAt, m.tickUs)} · ${(S.now / 1000).toFixed(1)} ms`;
    }

    // --- playback ------------------------------------------------------------------------
    function frame(ts) {
      S.raf = 0;
      if (!S.playing || !S.model) return;
      const dt = Math.min(100, Math.max(0, ts - S.lastTs)); // a hidden tab does not jump ahead
      S.lastTs = ts;
      S.now = Math.min(S.model.endedAt, S.now + dt * 1000 * S.speed);
      render();
      if (S.now >= S.model.endedAt) { pause(); return; }
      writeUrlSoon();
      S.raf = requestAnimationFrame(frame);
    }
    function play() {
      if (!S.model || S.playing) return;
      if (S.now >= S.model.endedAt) S.now = 0;
      S.playing = true;
      S.lastTs = performance.now();
      ui.play.textContent = '❚❚ pause';
      S.raf = requestAnimationFrame(frame);
    }
    function pause(updateUrl = true) {
      if (S.raf) cancelAnimationFrame(S.raf);
      S.raf = 0;
      const was = S.playing;
      S.playing = false;
      ui.play.textContent = '▶ play';
      if (was && updateUrl) writeUrl(false);
    }
    /** Shows time t (µs). `soon`: the URL may follow a moment later (while scrubbing). */
    function seek(t, soon = false) {
      if (!S.model) return;
      const x = Number(t);
      S.now = clamp(Number.isFinite(x) ? x : 0, 0, S.model.endedAt);
      S.lastTs = performance.now();
      render();
      if (soon) writeUrlSoon(); else writeUrl(false);
    }
    /** Pauses and moves to the next time in `times` after now; returns it, or null. */
    function jumpTo(times) {
      if (!S.model || !times) return null;
      const i = upperBound(times, S.now);
      if (i >= times.length) return null;
      pause();
      seek(times[i]);
      return times[i];
    }
    function step() {
      if (!S.model) return null;
      const t = jumpTo(S.model.times);
      if (t === null) { pause(); seek(S.model.endedAt); return null; }
      return t;
    }

    // --- interventions -------------------------------------------------------------------
    function intervene(action) {
      if (!S.model || !viz.ready) return null;
      const t = Math.floor(S.now), entry = `${action}@${t}`;
      runSim(S.params, { doList: S.interventions.concat(entry), t, push: true, resume: S.playing });
      return entry;
    }
    function clickNode(id) {
      if (!S.model) return null;
      const ns = stateAt(S.model, S.cursor, S.now).nodes[id];
      if (!ns) return null;
      return intervene(`${ns.up ? 'crash' : 'restart'}:${id}`);
    }
    function clickLink(a, b) {
      if (!S.model) return null;
      [a, b] = a < b ? [a, b] : [b, a];
      const cut = (stateAt(S.model, S.cursor, S.now).cut || []).some(([x, y]) => (x === a && y === b) || (x === b && y === a));
      return intervene(`${cut ? 'mend' : 'cut'}:${a}-${b}`);
    }

    /** The page's state for tests and the console. */
    function publicState() {
      const m = S.model;
      if (!m) return { t: 0, endedAt: 0, protocol: null, nodes: [], leader: null, interventions: '', verdict: null };
      const st = stateAt(m, S.cursor, S.now);
      return {
        t: Math.floor(S.now),
        endedAt: m.endedAt,
        protocol: m.protocol,
        nodes: m.ids.map((id) => {
          const ns = st.nodes[id];
          return { id, role: ns.role, era: ns.era, eraLabel: ns.eraLabel, up: ns.up, paused: ns.paused, commit: ns.commit, applied: ns.applied };
        }),
        leader: leaderOf(m, st),
        interventions: S.interventions.join(','),
        verdict: m.verdict,
      };
    }

    // --- wiring --------------------------------------------------------------------------
    ui.controls.addEventListener('submit', (e) => {
      e.preventDefault();
      runSim(readControls(), { doList: [], t: null, push: true });
    });
    ui.faults.addEventListener('input', syncFaultBoxes);
    ui['fault-boxes'].addEventListener('change', faultBoxesChanged);
    document.addEventListener('click', (e) => {
      const picker = $('fault-picker');
      if (picker.open && !picker.contains(e.target)) picker.open = false;
    });
    const loadCommand = () => {
      let parsed;
      try { parsed = parseCommand(ui.command.value); } catch (e) { showError(e.message); return; }
      writeControls(parsed.params);
      runSim(parsed.params, { doList: parsed.doList, t: parsed.t, push: true });
    };
    ui['load-command'].addEventListener('click', loadCommand);
    ui.command.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); loadCommand(); } });
    ui.play.addEventListener('click', () => (S.playing ? pause() : play()));
    ui.step.addEventListener('click', step);
    ui['next-leader'].addEventListener('click', () => jumpTo(S.model && S.model.leaderTimes));
    ui['next-fault'].addEventListener('click', () => jumpTo(S.model && S.model.faultTimes));
    ui['jump-violation'].addEventListener('click', () => {
      const v = S.model && S.model.verdict;
      if (v && typeof v.at === 'number') { pause(); seek(Math.max(0, v.at - S.model.tickUs)); }
    });
    ui.speed.addEventListener('change', () => { S.speed = Number(ui.speed.value) || 0.05; ui.speed.blur(); });
    ui.timeline.addEventListener('pointerdown', () => { S.dragging = true; });
    const endDrag = () => { if (S.dragging) { S.dragging = false; writeUrl(false); } };
    ui.timeline.addEventListener('pointerup', endDrag);
    ui.timeline.addEventListener('change', endDrag);
    ui.timeline.addEventListener('input', () => seek(Number(ui.timeline.value), true));
    ui['clear-interventions'].addEventListener('click', () => {
      if (!S.model || !S.interventions.length) return;
      runSim(S.params, { doList: [], t: Math.floor(S.now), push: true, resume: S.playing });
    });
    /** The link a pointer event is on (its handle or anywhere along its wire), or null. */
    const linkOf = (e) => {
      const el = e.target.closest && e.target.closest('[data-link], [data-wire]');
      return el ? S.linkByKey.get(el.getAttribute('data-link') || el.getAttribute('data-wire')) || null : null;
    };
    ui.cluster.addEventListener('click', (e) => {
      const node = e.target.closest('.node');
      if (node) { clickNode(Number(node.dataset.node)); return; }
      const link = linkOf(e);
      if (link) clickLink(link.a, link.b);
    });
    // Hovering a link's handle or wire highlights the wire.
    ui.cluster.addEventListener('pointerover', (e) => { const l = linkOf(e); if (l) l.wire.classList.add('hover'); });
    ui.cluster.addEventListener('pointerout', (e) => { const l = linkOf(e); if (l) l.wire.classList.remove('hover'); });
    // Playback buttons keep the focus where it was, so that space goes on toggling play.
    document.getElementById('playback').addEventListener('mousedown', (e) => {
      if (e.target.closest('button')) e.preventDefault();
    });
    document.addEventListener('keydown', (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const el = e.target, tag = el && el.tagName;
      const typing = (tag === 'INPUT' && el.type !== 'range' && el.type !== 'checkbox') || tag === 'SELECT' || tag === 'TEXTAREA';
      if (typing || tag === 'BUTTON' || tag === 'SUMMARY') return;
      if (e.key === ' ' || e.code === 'Space') { e.preventDefault(); if (S.playing) pause(); else play(); }
      else if (e.key === 'ArrowRight') { e.preventDefault(); step(); }
    });
    window.addEventListener('popstate', () => { loadFromUrl(); });

    buildLegend();
    fillOptions(FALLBACK_OPTIONS);
    fetch('/api/options')
      .then((res) => (res.ok ? res.json() : null))
      .catch(() => null)
      .then((options) => {
        if (options && Array.isArray(options.protocols)) {
          fillOptions({ protocols: options.protocols, faults: options.faults || FALLBACK_OPTIONS.faults, defaults: options.defaults || {} });
        }
        loadFromUrl();
      });
  }

  if (typeof module === 'object' && module.exports) module.exports = core;
  else if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
