// ringchat browser client, sending files: each upload hashed (sha256.js), sent in chunks over
// HTTP with progress, kept in localStorage and resumed after a reload; the upload tray; the
// FileRef codec and the files API client, which files-view.js (the files in messages) uses too.
// The HTTP paths are README "Files"; every request carries the login token as `Authorization:
// Bearer`. chat.js sends the message once the file is complete (the outbox, as for text).
'use strict';

const uploadsKey = (userId) => `ringchat.uploads.${userId}`;
const CHUNKS_IN_FLIGHT = 3; // chunk PUTs of one upload at once
const TRIES_MAX = 5; // sends of one chunk or complete (network failure, 5xx, checksum refused), then it fails
const RETRY_BASE_MS = 500; // the first retry's wait, doubled on each further one
const HASH_READ_BYTES = 4 * 1024 * 1024; // the whole-file hash reads the file this much at a time
const UPLOADS_KEPT_MAX = 16; // resumable uploads remembered in localStorage, the newest kept
const UPLOADS_AT_ONCE_MAX = 20; // uploads in the tray (queued, running, waiting): more are refused
const PROGRESS_KEPT_MAX = 64; // names in files.stats.progress, the newest kept
const MEDIA_TYPES = new Set(['CONTENT_TYPE_IMAGE', 'CONTENT_TYPE_FILE', 'CONTENT_TYPE_AUDIO']);

const files = {
  // key -> upload: {key, uploadId, name, size, mime, lastModified, sha256, chunkSize,
  // conversationId, toUserId, file (null after a reload until re-picked), phase, hashed, sent,
  // error, note, aborter, row}. phase: queued | hashing | uploading | completing | paused | failed.
  uploads: new Map(),
  chain: Promise.resolve(), // uploads run one after another
  // The open conversation's drawn media, reused across renders (the list is redrawn on every
  // change; an <img> or a playing <audio> must survive that): key -> {node, urls: []}.
  media: new Map(),
  mediaConv: null,
  viewerUrl: null,
  // Read by the browser test (gateway/tests/browser_files.rs): chunk PUTs started and answered
  // 204, uploads completed, and the last percentage drawn in each upload's bar, by name.
  stats: { chunkPuts: 0, chunksAcked: 0, completed: 0, progress: {} },
};

const isMedia = (m) => MEDIA_TYPES.has(m.contentType);

// ---- sizes and the FileRef codec ----

function formatSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  do { v /= 1024; u++; } while (v >= 1024 && u < units.length - 1);
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

function bytesToB64(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

// An encoded FileRef (protobuf), base64 as the JSON mapping carries bytes. Only what is given
// is written: a send names the file id alone (the server fills the stored file's facts).
function encodeFileRef(r) {
  const out = [];
  const varint = (n) => {
    for (; n > 127; n = Math.floor(n / 128)) out.push((n % 128) | 128);
    out.push(n);
  };
  const str = (no, s) => {
    if (!s) return;
    const b = enc.encode(s);
    varint((no << 3) | 2);
    varint(b.length);
    for (const x of b) out.push(x);
  };
  const uint = (no, n) => {
    if (!n) return;
    varint(no << 3);
    varint(n);
  };
  str(1, r.fileId);
  str(2, r.name);
  uint(3, r.size);
  str(4, r.mime);
  str(5, r.sha256);
  uint(8, r.durationMs);
  str(9, r.caption);
  return bytesToB64(out);
}

// A media message's FileRef, decoded once per message (protoFields is group-events.js's).
function fileOf(m) {
  if (!('file' in m)) {
    try {
      const f = protoFields(Uint8Array.from(atob(m.content || ''), (c) => c.charCodeAt(0)));
      const s = (no) => (f.get(no) ? dec.decode(f.get(no)[0]) : '');
      const n = (no) => (f.get(no) ? Number(f.get(no)[0]) : 0);
      m.file = {
        fileId: s(1), name: s(2), size: n(3), mime: s(4), sha256: s(5),
        thumbWidth: n(6), thumbHeight: n(7), durationMs: n(8), caption: s(9),
      };
    } catch {
      m.file = null;
    }
  }
  return m.file;
}

// The conversation list's line for a message: its text, or what kind of file it carries.
function messagePreview(m) {
  if (!isMedia(m)) return fromB64(m.content);
  const f = fileOf(m);
  if (m.contentType === 'CONTENT_TYPE_IMAGE') return f?.caption || 'Photo';
  if (m.contentType === 'CONTENT_TYPE_AUDIO') return 'Voice message';
  return f?.name ? `File: ${f.name}` : 'File';
}

// ---- hashing: the whole file with Sha256 (sha256.js), a piece at a time ----

async function hashFile(u) {
  const sha = new Sha256();
  for (let at = 0; at < u.file.size; at += HASH_READ_BYTES) {
    if (u.aborter.signal.aborted) throw abortError();
    sha.update(new Uint8Array(await u.file.slice(at, at + HASH_READ_BYTES).arrayBuffer()));
    u.hashed = Math.min(u.file.size, at + HASH_READ_BYTES);
    renderUploads();
  }
  return sha.hex();
}

// ---- HTTP ----

// A refusal or failure of the files API: `code` is the server's ("over_quota", ...), or
// 'network' when no answer came; `status` the HTTP status (0 without an answer).
class FileApiError extends Error {
  constructor(code, status, message, retryAfterS) {
    super(message || code);
    Object.assign(this, { code, status, retryAfterMs: (Number(retryAfterS) || 0) * 1000 });
  }
}

const abortError = () => new FileApiError('aborted', 0, 'cancelled');

async function filesFetch(path, init = {}) {
  // Not sent where it can only fail (a status node answers 404/405): said in words instead.
  if (!net.filesHere) throw new FileApiError('not_here', 0, 'this page was opened on the status service, which serves no files');
  let r;
  try {
    r = await fetch(path, {
      ...init,
      cache: 'no-store',
      headers: { Authorization: `Bearer ${state.session?.token || ''}`, ...init.headers },
    });
  } catch (e) {
    if (e.name === 'AbortError') throw abortError();
    throw new FileApiError('network', 0, 'no answer from the server');
  }
  if (!r.ok) {
    let body = {};
    try { body = await r.json(); } catch { /* not JSON: the status says enough */ }
    throw new FileApiError(body.code || `http_${r.status}`, r.status, body.error || r.statusText, r.headers.get('Retry-After'));
  }
  return r;
}

const postJSON = (path, body, signal) => filesFetch(path, {
  method: 'POST', signal, headers: { 'Content-Type': 'application/json' }, body: body ? JSON.stringify(body) : undefined,
}).then((r) => r.json());

// A refusal in plain words, for the upload of `name`.
function uploadErrorText(e, name) {
  const max = /(\d+) bytes/.exec(e.message);
  switch (e.code) {
    case 'network': return 'The server could not be reached. Check the connection, then retry.';
    case 'not_here': return 'Files cannot be sent from this page: open ringchat at a chat server’s address to send files.';
    case 'file_too_large': return `${name} is too large: this server takes files of at most ${max ? formatSize(Number(max[1])) : 'a set size'}.`;
    case 'over_quota': return `Not enough room left in your storage on this server for ${name}.`;
    case 'too_many_uploads': return 'Too many of your uploads are unfinished. Finish or cancel one first, or wait until they expire.';
    case 'sha256_mismatch': return `${name} changed while it was being sent. Pick it again to send it as it is now.`;
    case 'storage_full': return 'The server’s file storage is full. Try again later.';
    case 'storage_unavailable': case 'busy': return 'The server cannot store files right now. Try again in a moment.';
    case 'unauthorized': return 'Your session has expired. Log in again, then retry.';
    case 'not_found': return `The upload of ${name} is no longer on the server.`;
    default:
      if (e.status === 429) return 'Too many uploads at once. Wait a moment, then retry.';
      return `The server refused ${name}: ${e.message}.`;
  }
}

// Worth sending again: no answer, the server busy or failing, or the chunk's bytes damaged
// on the way (its checksum refused).
const retryable = (e) => e.code === 'network' || e.code === 'chunk_sha256_mismatch' || e.code === 'busy'
  || (e.status >= 500 && e.status !== 507);

function wait(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); reject(abortError()); }, { once: true });
  });
}

// ---- uploads ----

function saveUploads() {
  if (!state.session) return;
  const list = [...files.uploads.values()].filter((u) => u.uploadId).slice(-UPLOADS_KEPT_MAX)
    .map(({ uploadId, name, size, mime, lastModified, sha256, chunkSize, conversationId, toUserId, contentType }) => (
      { uploadId, name, size, mime, lastModified, sha256, chunkSize, conversationId, toUserId, contentType }));
  if (list.length) localStorage.setItem(uploadsKey(state.session.userId), JSON.stringify(list));
  else localStorage.removeItem(uploadsKey(state.session.userId));
}

// After a login: uploads a reload interrupted wait for their file to be picked again (a page
// cannot reopen a file by itself).
function loadUploads() {
  const saved = loadJSON(uploadsKey(state.session.userId), []);
  for (const s of Array.isArray(saved) ? saved : []) {
    if (!s || !s.uploadId || [...files.uploads.values()].some((u) => u.uploadId === s.uploadId)) continue;
    const u = newUpload({ ...s, phase: 'paused' });
    conv_(u.conversationId, u.toUserId);
  }
  renderUploads();
}

function resetUploads() {
  for (const u of files.uploads.values()) u.aborter.abort();
  files.uploads.clear();
  renderUploads();
}

function newUpload(fields) {
  const u = {
    key: crypto.randomUUID(), uploadId: '', sha256: '', chunkSize: 0, file: null, hashed: 0, sent: 0,
    error: null, note: '', aborter: new AbortController(), row: null, ...fields,
  };
  files.uploads.set(u.key, u);
  return u;
}

const contentTypeFor = (mime) => (mime.startsWith('image/') ? 'CONTENT_TYPE_IMAGE'
  : mime.startsWith('audio/') ? 'CONTENT_TYPE_AUDIO' : 'CONTENT_TYPE_FILE');

// The page's chosen files (the attach button, a drop) for the open conversation.
function attachFiles(list) {
  const conv = state.convs.get(state.current);
  if (!conv || conv.system || !net.filesHere) return;
  const room = UPLOADS_AT_ONCE_MAX - files.uploads.size;
  if (list.length > room) {
    $('composer-error').hidden = false;
    $('composer-error').textContent = `At most ${UPLOADS_AT_ONCE_MAX} files at once: ${room > 0 ? `only the first ${room} are sent` : 'wait until some are sent'}.`;
    list = list.slice(0, Math.max(0, room));
  }
  for (const file of list) {
    // The server takes type/subtype without parameters; an unknown type is plain bytes.
    const mime = (file.type || '').split(';')[0].trim().toLowerCase() || 'application/octet-stream';
    const u = newUpload({
      name: file.name, size: file.size, mime, lastModified: file.lastModified, file,
      conversationId: conv.id, toUserId: conv.peer, contentType: contentTypeFor(mime), phase: 'queued',
    });
    runUpload(u);
  }
  renderUploads();
}

// The same file picked again for an upload a reload interrupted: its name and size must match
// (and its hash, checked before anything is sent).
function resumeWith(u, file) {
  if (!file) return;
  if (file.name !== u.name || file.size !== u.size) {
    u.error = `That is not ${u.name} (${formatSize(u.size)}): pick the same file to resume.`;
    renderUploads();
    return;
  }
  u.file = file;
  u.error = null;
  u.phase = 'queued';
  runUpload(u);
}

function retryUpload(key) {
  const u = files.uploads.get(key);
  if (!u || !u.file) return;
  u.error = null;
  u.phase = 'queued';
  u.aborter = new AbortController();
  runUpload(u);
}

function cancelUpload(key) {
  const u = files.uploads.get(key);
  if (!u) return;
  u.aborter.abort();
  files.uploads.delete(key);
  saveUploads();
  render();
}

function runUpload(u) {
  renderUploads();
  files.chain = files.chain.then(() => upload(u)).catch(() => {});
}

async function upload(u) {
  if (!files.uploads.has(u.key) || u.aborter.signal.aborted) return;
  const signal = u.aborter.signal;
  try {
    // Hashed once per picked file (a retry of the same one does not read it again).
    if (u.hashedFile !== u.file) {
      u.phase = 'hashing';
      u.hashed = 0;
      u.fileSha256 = await hashFile(u);
      u.hashedFile = u.file;
    }
    const sha256 = u.fileSha256;
    if (u.sha256 && sha256 !== u.sha256) {
      // A resumed upload whose file is not the one it started with.
      u.phase = 'paused';
      u.file = null;
      u.error = `This file is not the ${u.name} whose upload was interrupted (its contents differ). Pick that one, or cancel.`;
      render();
      return;
    }
    u.sha256 = sha256;
    let present = [];
    if (u.uploadId) {
      try {
        present = (await filesFetch(`/files/${u.uploadId}/chunks`, { signal }).then((r) => r.json())).present || [];
      } catch (e) {
        if (e.code !== 'not_found') throw e;
        // Expired (or cleaned up) on the server: said, and started over with the file in hand.
        u.note = 'The interrupted upload had expired on the server, so it started over.';
        u.uploadId = '';
        saveUploads();
      }
    }
    if (!u.uploadId) {
      const created = await postJSON('/files', { name: u.name, size: u.size, mime: u.mime, sha256: u.sha256 }, signal);
      u.uploadId = created.upload_id;
      u.chunkSize = created.chunk_size;
      saveUploads();
    }
    const count = Math.ceil(u.size / u.chunkSize);
    const have = new Set(present.map(Number));
    u.sent = [...have].reduce((sum, i) => sum + chunkLen(u, i), 0);
    u.phase = 'uploading';
    renderUploads();
    await sendChunks(u, [...Array(count).keys()].filter((i) => !have.has(i)));
    u.phase = 'completing';
    renderUploads();
    // Retry-safe (the same file id again); a busy node (files.completes_in_flight_max) says when.
    const done = await retrying(() => postJSON(`/files/${u.uploadId}/complete`, null, signal), signal);
    files.stats.completed++;
    sendFileMessage(u, done.file_id);
  } catch (e) {
    if (e.code === 'aborted') return;
    if (e.code === 'sha256_mismatch' || e.code === 'not_found') {
      // The server dropped the upload: a retry starts a new one, of the file as it is then.
      u.uploadId = '';
      u.sha256 = '';
      saveUploads();
    }
    // The file changed on disk, or could not be read: a retry reads and hashes it again.
    if (e.code === 'sha256_mismatch' || !(e instanceof FileApiError)) u.hashedFile = null;
    u.phase = 'failed';
    u.error = e instanceof FileApiError ? uploadErrorText(e, u.name)
      : `${u.name} could not be read (${e.message}). Pick it again, or retry.`;
    render(); // the tray, and the conversation list's line
  }
}

const chunkLen = (u, i) => Math.min(u.chunkSize, u.size - i * u.chunkSize);

// The chunks `indices`, CHUNKS_IN_FLIGHT at a time; the first failure stops the others.
async function sendChunks(u, indices) {
  const queue = [...indices];
  let failed = null;
  const worker = async () => {
    while (queue.length && !failed) {
      const i = queue.shift();
      try {
        await putChunk(u, i);
      } catch (e) {
        failed = failed || e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CHUNKS_IN_FLIGHT, queue.length) }, worker));
  if (failed) throw failed;
}

async function putChunk(u, i) {
  const signal = u.aborter.signal;
  const start = i * u.chunkSize;
  const bytes = await u.file.slice(start, start + chunkLen(u, i)).arrayBuffer();
  const sha = hexOf(await crypto.subtle.digest('SHA-256', bytes));
  await retrying(async () => {
    files.stats.chunkPuts++;
    await filesFetch(`/files/${u.uploadId}/chunks/${i}`, {
      method: 'PUT', signal, headers: { 'X-Chunk-Sha256': sha, 'Content-Type': 'application/octet-stream' }, body: bytes,
    });
  }, signal);
  files.stats.chunksAcked++;
  u.sent += bytes.byteLength;
  renderUploads();
}

// `attempt()` until it succeeds, fails in a way not worth retrying, or TRIES_MAX times; between
// tries the wait the server asked for (Retry-After), or longer each time.
async function retrying(attempt, signal) {
  for (let tries = 1; ; tries++) {
    if (signal.aborted) throw abortError();
    try {
      return await attempt();
    } catch (e) {
      if (!retryable(e) || tries >= TRIES_MAX) throw e;
      await wait(Math.max(e.retryAfterMs, RETRY_BASE_MS * 2 ** (tries - 1)), signal);
    }
  }
}

// The complete file goes out as a message through the outbox (queueSend, chat.js): kept until
// acked, across reloads, like text. The upload's entry is dropped only once the message is in it.
function sendFileMessage(u, fileId) {
  const conv = conv_(u.conversationId, u.toUserId);
  queueSend(conv, {
    text: messagePreview({ contentType: u.contentType, file: { name: u.name } }),
    contentType: u.contentType,
    content: encodeFileRef({ fileId }),
    // Shown until the ack (and in place of the stored copy until it is fetched).
    echo: encodeFileRef({ fileId, name: u.name, size: u.size, mime: u.mime, sha256: u.sha256 }),
  });
  files.uploads.delete(u.key);
  saveUploads();
  renderUploads();
}

// After a media send's ack: the message as stored (the server filled in the file's facts and
// the thumbnail's size), so that the sender's own image shows inline too.
function refreshSent(conversationId, seq) {
  request({ history: { conversationId, beforeSeq: String(num(seq) + 1), limit: 1 } })
    .then((r) => {
      const stored = (r.historyBatch.messages || []).filter((m) => num(m.seq) === num(seq));
      const conv = state.convs.get(conversationId);
      if (conv && conv.id === files.mediaConv) dropMedia(`${conv.id}:${num(seq)}`);
      onMessages(stored, 'history');
    }, () => { /* the echo stays: the file is there, only its thumbnail is not shown inline */ });
}

// ---- the upload tray above the composer ----

// The conversation list's line for a conversation with an upload waiting for the user (its
// file to be picked again after a reload, or a failure to retry), else ''.
function stalledUpload(conv) {
  const u = [...files.uploads.values()].find((x) => x.conversationId === conv.id && (x.phase === 'paused' || x.phase === 'failed'));
  return !u ? '' : u.phase === 'paused' ? `Upload paused: ${u.name}` : `Upload failed: ${u.name}`;
}

function renderUploads() {
  const tray = $('uploads');
  if (!tray) return;
  const shown = [...files.uploads.values()].filter((u) => u.conversationId === state.current);
  tray.hidden = !shown.length;
  tray.replaceChildren(...shown.map(uploadRow));
}

// One upload's row, made once and updated in place (a file chooser opened from it survives).
function uploadRow(u) {
  if (!u.row) {
    const input = el('input', { type: 'file', hidden: true, dataset: { resume: u.uploadId } });
    input.onchange = () => { resumeWith(u, input.files[0]); input.value = ''; };
    u.row = {
      li: el('li', { class: 'upload', dataset: { key: u.key } }),
      name: el('span', { class: 'upload-name' }, u.name),
      status: el('span', { class: 'upload-status' }),
      bar: el('progress', { max: '100', value: '0' }),
      error: el('p', { class: 'error upload-error', role: 'alert' }),
      pick: el('label', { class: 'button small upload-pick' }, 'Choose the file', input),
      retry: el('button', { type: 'button', class: 'small upload-retry', onclick: () => retryUpload(u.key) }, 'Retry'),
      cancel: el('button', { type: 'button', class: 'small ghost upload-cancel', onclick: () => cancelUpload(u.key) }, 'Cancel'),
    };
    const r = u.row;
    r.li.append(el('div', { class: 'upload-top' }, icon('clip'), r.name, r.status), r.bar, r.error,
      el('div', { class: 'upload-actions' }, r.pick, r.retry, r.cancel));
  }
  const r = u.row;
  r.li.dataset.phase = u.phase;
  const pct = u.phase === 'hashing' ? Math.floor((100 * u.hashed) / (u.size || 1))
    : Math.floor((100 * u.sent) / (u.size || 1));
  let status;
  switch (u.phase) {
    case 'queued': status = 'Waiting…'; break;
    case 'hashing': status = `Preparing… ${pct} %`; break;
    case 'uploading': status = `${formatSize(u.sent)} of ${formatSize(u.size)} (${pct} %)`; break;
    case 'completing': status = `${formatSize(u.size)} sent, finishing…`; break;
    case 'paused': status = `Resume upload of ${u.name}: choose the file again`; break;
    default: status = `Not sent (${formatSize(u.sent)} of ${formatSize(u.size)})`;
  }
  r.status.textContent = status;
  const sending = u.phase === 'uploading' || u.phase === 'completing';
  r.bar.value = u.phase === 'hashing' || sending ? pct : Math.floor((100 * u.sent) / (u.size || 1));
  r.bar.hidden = u.phase === 'paused' && !u.sent;
  if (u.phase !== 'hashing') noteProgress(u.name, Math.floor((100 * u.sent) / (u.size || 1)));
  r.error.textContent = u.error || u.note || '';
  r.error.hidden = !u.error && !u.note;
  r.error.classList.toggle('note', !u.error);
  r.pick.hidden = u.phase !== 'paused';
  r.retry.hidden = u.phase !== 'failed' || !u.file;
  return r.li;
}

function noteProgress(name, pct) {
  const progress = files.stats.progress;
  delete progress[name]; // re-inserted last: the oldest names go first
  progress[name] = pct;
  for (const old of Object.keys(progress)) {
    if (Object.keys(progress).length <= PROGRESS_KEPT_MAX) break;
    delete progress[old];
  }
}

