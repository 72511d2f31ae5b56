// ringchat browser client, files and media: sending a file (hashed, sent in chunks over HTTP,
// resumable after a reload), and the IMAGE / FILE / AUDIO messages' inline display (thumbnails,
// the full image, downloads). The HTTP paths are docs/PROTOCOL.md "Files"; every request
// carries the login token as `Authorization: Bearer`. chat.js sends the message once the file
// is complete (the outbox, as for text); app.js draws the bubbles with fileBody().
'use strict';

const uploadsKey = (userId) => `ringchat.uploads.${userId}`;
const CHUNKS_IN_FLIGHT = 3; // chunk PUTs of one upload at once
const CHUNK_TRIES_MAX = 5; // sends of one chunk (network failure, 5xx, checksum refused), then it fails
const CHUNK_RETRY_BASE_MS = 500; // the first retry's wait, doubled on each further one
const HASH_READ_BYTES = 4 * 1024 * 1024; // the whole-file hash reads the file this much at a time
const UPLOADS_KEPT_MAX = 16; // resumable uploads remembered in localStorage, the newest kept
const UPLOADS_AT_ONCE_MAX = 20; // uploads in the tray (queued, running, waiting): more are refused
const PROGRESS_KEPT_MAX = 64; // names in files.stats.progress, the newest kept
const MEDIA_NODES_MAX = 500; // drawn media (thumbnail, audio) kept for the open conversation
const THUMB_BOX_PX = 240;
const DOWNLOAD_URL_KEEP_MS = 30000; // a saved file's blob URL is revoked this long after the click // an inline thumbnail's largest side, in CSS pixels
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

// ---- hashing: SHA-256 over the whole file, a piece at a time ----

// WebCrypto digests one buffer whole, so the file's hash is computed here incrementally: the
// file is never held in memory whole, whatever its size. Each chunk's own hash is WebCrypto's.
const SHA256_K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

class Sha256 {
  constructor() {
    this.h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    this.w = new Uint32Array(64);
    this.buf = new Uint8Array(64);
    this.bufLen = 0;
    this.total = 0;
  }

  update(data) {
    this.total += data.length;
    let i = 0;
    if (this.bufLen) {
      i = Math.min(64 - this.bufLen, data.length);
      this.buf.set(data.subarray(0, i), this.bufLen);
      this.bufLen += i;
      if (this.bufLen < 64) return this;
      this.block(this.buf, 0);
      this.bufLen = 0;
    }
    for (; i + 64 <= data.length; i += 64) this.block(data, i);
    this.buf.set(data.subarray(i), 0);
    this.bufLen = data.length - i;
    return this;
  }

  block(d, o) {
    const w = this.w;
    for (let t = 0; t < 16; t++) w[t] = (d[o + 4 * t] << 24) | (d[o + 4 * t + 1] << 16) | (d[o + 4 * t + 2] << 8) | d[o + 4 * t + 3];
    for (let t = 16; t < 64; t++) {
      const x = w[t - 15];
      const y = w[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    const h = this.h;
    let a = h[0], b = h[1], c = h[2], e4 = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (k + S1 + ch + SHA256_K[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      k = g; g = f; f = e; e = (e4 + t1) | 0; e4 = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += e4; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
  }

  hex() {
    const bits = this.total * 8;
    const pad = new Uint8Array((this.bufLen < 56 ? 64 : 128) - this.bufLen);
    pad[0] = 0x80;
    const view = new DataView(pad.buffer);
    view.setUint32(pad.length - 8, Math.floor(bits / 2 ** 32));
    view.setUint32(pad.length - 4, bits % 2 ** 32);
    this.update(pad);
    return [...this.h].map((x) => x.toString(16).padStart(8, '0')).join('');
  }
}

const hexOf = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');

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
  if (!conv || conv.system) return;
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
    const done = await postJSON(`/files/${u.uploadId}/complete`, null, signal);
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
  for (let tries = 1; ; tries++) {
    if (signal.aborted) throw abortError();
    files.stats.chunkPuts++;
    try {
      await filesFetch(`/files/${u.uploadId}/chunks/${i}`, {
        method: 'PUT', signal, headers: { 'X-Chunk-Sha256': sha, 'Content-Type': 'application/octet-stream' }, body: bytes,
      });
      files.stats.chunksAcked++;
      u.sent += bytes.byteLength;
      renderUploads();
      return;
    } catch (e) {
      if (!retryable(e) || tries >= CHUNK_TRIES_MAX) throw e;
      await wait(Math.max(e.retryAfterMs, CHUNK_RETRY_BASE_MS * 2 ** (tries - 1)), signal);
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
      onMessages(stored, false);
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

// ---- messages: the file in a bubble ----

// Blob URLs and reused nodes belong to the open conversation: switching revokes them all.
function mediaFor(convId) {
  if (files.mediaConv !== convId) {
    for (const key of [...files.media.keys()]) dropMedia(key);
    files.mediaConv = convId;
  }
}

function dropMedia(key) {
  const entry = files.media.get(key);
  if (!entry) return;
  entry.dropped = true;
  for (const url of entry.urls) URL.revokeObjectURL(url);
  files.media.delete(key);
}

// A recalled message shows nothing of its file: its blob URLs go too.
function onRecalled(conv, seq) {
  if (conv.id === files.mediaConv) dropMedia(`${conv.id}:${seq}`);
}

// The file's URL for this user: the uploader's own file by id, anyone else's through the
// message that carries it.
function fileUrl(m, f, path = '') {
  const mine = m.fromUserId === state.session?.userId;
  const via = mine || !m.seq ? '' : `?c=${encodeURIComponent(m.conversationId)}&s=${encodeURIComponent(m.seq)}`;
  return `/files/${encodeURIComponent(f.fileId)}${path}${via}`;
}

async function fetchBlob(url) {
  const r = await filesFetch(url);
  return r.blob();
}

// The bubble's body for a media message: `seq` 0 for one not yet acked.
function fileBody(m, conv, seq) {
  const f = fileOf(m);
  if (!f || !f.fileId) return el('span', { class: 'text' }, 'A file this page cannot show.');
  if (!seq) return fileCard(m, f, null);
  mediaFor(conv.id);
  const key = `${conv.id}:${seq}`;
  let entry = files.media.get(key);
  if (!entry) {
    const withThumb = m.contentType === 'CONTENT_TYPE_IMAGE' && f.thumbWidth > 0 && f.thumbHeight > 0;
    entry = { urls: [], node: null, dropped: false };
    entry.node = withThumb ? thumbView(m, f, entry) : fileCard(m, f, entry);
    files.media.set(key, entry);
    // Bounded: the oldest drawn go (drawn again, and fetched again, if they show again).
    for (const old of files.media.keys()) {
      if (files.media.size <= MEDIA_NODES_MAX) break;
      dropMedia(old);
    }
  }
  return entry.node;
}

// An image's thumbnail, in a box of the thumbnail's own size (the list does not jump when it
// loads); a click opens the full image.
function thumbView(m, f, entry) {
  const scale = Math.min(1, THUMB_BOX_PX / Math.max(f.thumbWidth, f.thumbHeight));
  const img = el('img', {
    class: 'thumb', alt: f.name, width: Math.round(f.thumbWidth * scale), height: Math.round(f.thumbHeight * scale),
  });
  const status = el('span', { class: 'thumb-status' }, 'Loading…');
  const button = el('button', {
    type: 'button', class: 'thumb-button', title: `${f.name} (${formatSize(f.size)})`,
    'aria-label': `Open the image ${f.name}`, onclick: () => openImage(m, f),
  }, img, status);
  fetchBlob(fileUrl(m, f, '/thumbnail')).then((blob) => {
    const url = URL.createObjectURL(blob);
    if (entry.dropped) { URL.revokeObjectURL(url); return; }
    entry.urls.push(url);
    img.onload = () => status.remove();
    img.src = url;
  }, (e) => {
    status.textContent = e.code === 'network' ? 'Could not load the image.' : 'The image is not available.';
    status.classList.add('error');
  });
  return el('div', { class: 'file-media' }, button, f.caption ? el('span', { class: 'text caption' }, f.caption) : null);
}

// A file's name, size and type with a download button (audio also gets a player).
function fileCard(m, f, entry) {
  const error = el('span', { class: 'error file-error', role: 'alert', hidden: true });
  const download = el('button', {
    type: 'button', class: 'small file-download', disabled: !entry,
    'aria-label': `Download ${f.name}`,
  }, 'Download');
  download.onclick = () => downloadFile(m, f, download, error);
  const card = el('div', { class: 'file-card', dataset: { fileId: f.fileId } },
    icon('clip'),
    el('span', { class: 'file-info' },
      el('span', { class: 'file-name' }, f.name || 'File'),
      el('span', { class: 'file-meta' }, [formatSize(f.size), f.mime].filter(Boolean).join(' · '))),
    download);
  const out = el('div', { class: 'file-media' }, card);
  if (entry && m.contentType === 'CONTENT_TYPE_AUDIO') {
    const play = el('button', { type: 'button', class: 'small ghost file-play' }, 'Play');
    play.onclick = async () => {
      play.disabled = true;
      try {
        const url = URL.createObjectURL(await fetchBlob(fileUrl(m, f)));
        if (entry.dropped) { URL.revokeObjectURL(url); return; }
        entry.urls.push(url);
        const audio = el('audio', { controls: true, src: url, preload: 'auto' });
        play.replaceWith(audio);
        audio.play().catch(() => { /* autoplay refused: the controls are there */ });
      } catch (e) {
        play.disabled = false;
        showFileError(error, e, f);
      }
    };
    out.append(play);
  }
  if (f.caption) out.append(el('span', { class: 'text caption' }, f.caption));
  out.append(error);
  return out;
}

function showFileError(node, e, f) {
  node.hidden = false;
  node.textContent = e.code === 'network' ? `Could not download ${f.name}: the server could not be reached.`
    : e.code === 'not_found' ? `${f.name} is no longer available.`
      : `Could not download ${f.name}: ${e.message}.`;
}

// Fetched with the token (a plain link cannot carry it), then saved from a blob URL.
async function downloadFile(m, f, button, error) {
  button.disabled = true;
  button.textContent = 'Downloading…';
  error.hidden = true;
  try {
    const url = URL.createObjectURL(await fetchBlob(fileUrl(m, f)));
    const a = el('a', { href: url, download: f.name || 'file', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    // Chrome resolves the URL when the click is handled; others may read it a little later.
    setTimeout(() => URL.revokeObjectURL(url), DOWNLOAD_URL_KEEP_MS);
  } catch (e) {
    showFileError(error, e, f);
  } finally {
    button.disabled = false;
    button.textContent = 'Download';
  }
}

// The full image, in a dialog over the page; its blob URL goes when the dialog closes.
async function openImage(m, f) {
  let dialog = $('image-viewer');
  if (!dialog) {
    const close = el('button', {
      id: 'viewer-close', type: 'button', class: 'icon-button close', 'aria-label': 'Close', onclick: () => dialog.close(),
    });
    close.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round"/></svg>';
    dialog = el('dialog', { id: 'image-viewer', class: 'dialog image-viewer', 'aria-labelledby': 'viewer-name' },
      el('div', { class: 'dialog-body' },
        el('header', { class: 'dialog-head' }, el('h2', { id: 'viewer-name', class: 'viewer-name' }), close),
        el('p', { id: 'viewer-status', class: 'viewer-status', role: 'status' }),
        el('img', { id: 'viewer-img', alt: '' })));
    dialog.onclose = () => {
      $('viewer-img').removeAttribute('src');
      if (files.viewerUrl) URL.revokeObjectURL(files.viewerUrl);
      files.viewerUrl = null;
    };
    document.body.append(dialog);
  }
  $('viewer-name').textContent = f.name;
  $('viewer-img').alt = f.name;
  $('viewer-img').removeAttribute('src');
  $('viewer-status').textContent = 'Loading…';
  if (!dialog.open) dialog.showModal();
  try {
    const url = URL.createObjectURL(await fetchBlob(fileUrl(m, f)));
    if (!dialog.open) { URL.revokeObjectURL(url); return; }
    if (files.viewerUrl) URL.revokeObjectURL(files.viewerUrl);
    files.viewerUrl = url;
    $('viewer-img').src = url;
    $('viewer-status').textContent = '';
  } catch (e) {
    $('viewer-status').textContent = e.code === 'network' ? 'Could not load the image: the server could not be reached.'
      : `Could not load the image: ${e.message}.`;
  }
}

// ---- wiring: the attach button, drag and drop ----

$('attach').onclick = () => $('attach-input').click();
$('attach-input').onchange = () => {
  attachFiles([...$('attach-input').files]);
  $('attach-input').value = '';
};
$('conversation').addEventListener('dragover', (ev) => {
  if (!state.current || isSystemId(state.current) || !ev.dataTransfer?.types.includes('Files')) return;
  ev.preventDefault();
  $('conversation').classList.add('dropping');
});
$('conversation').addEventListener('dragleave', (ev) => {
  if (ev.target === $('conversation')) $('conversation').classList.remove('dropping');
});
$('conversation').addEventListener('drop', (ev) => {
  $('conversation').classList.remove('dropping');
  if (!ev.dataTransfer?.files.length) return;
  ev.preventDefault();
  attachFiles([...ev.dataTransfer.files]);
});
