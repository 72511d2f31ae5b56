// ringchat browser client, files in messages: the bubble of an IMAGE / FILE / AUDIO message
// (an inline thumbnail, the full image in a dialog, a download, a player), the blob URLs they
// use (kept per open conversation, revoked when it changes or the message is recalled), and
// the attach button's wiring. The uploads and the HTTP client are files.js.
'use strict';

const MEDIA_NODES_MAX = 500; // drawn media (thumbnail, audio) kept for the open conversation
const THUMB_BOX_PX = 240; // an inline thumbnail's largest side, in CSS pixels
const DOWNLOAD_URL_KEEP_MS = 30000; // a saved file's blob URL is revoked this long after the click

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
    const withThumb = net.filesHere && m.contentType === 'CONTENT_TYPE_IMAGE' && f.thumbWidth > 0 && f.thumbHeight > 0;
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

// A file's name, size and type with a download button (audio also gets a player). A page opened
// on the status service (no `/files` there) says so instead of offering what would fail.
function fileCard(m, f, entry) {
  const error = el('span', { class: 'error file-error', role: 'alert', hidden: true });
  const download = net.filesHere ? el('button', {
    type: 'button', class: 'small file-download', disabled: !entry,
    'aria-label': `Download ${f.name}`,
  }, 'Download') : el('span', {
    class: 'file-elsewhere',
    title: 'This page was opened on the status service, which serves no files: open ringchat at a chat server’s address to download it.',
  }, 'Not downloadable here');
  if (net.filesHere) download.onclick = () => downloadFile(m, f, download, error);
  const card = el('div', { class: 'file-card', dataset: { fileId: f.fileId } },
    icon('clip'),
    el('span', { class: 'file-info' },
      el('span', { class: 'file-name' }, f.name || 'File'),
      el('span', { class: 'file-meta' }, [formatSize(f.size), f.mime].filter(Boolean).join(' · '))),
    download);
  const out = el('div', { class: 'file-media' }, card);
  if (entry && net.filesHere && m.contentType === 'CONTENT_TYPE_AUDIO') {
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
  if (!state.current || isSystemId(state.current) || !net.filesHere || !ev.dataTransfer?.types.includes('Files')) return;
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
