// End-to-end test of files in the chat page in headless Chromium, against a server whose
// chunks are 64 KiB, whose largest file is 1 MiB and which takes one unfinished upload per user
// (set by gateway/tests/browser_files.rs). Alice (desktop) attaches a PNG made here and a text
// file: progress reaches 100 %, each goes out as a message. Bob (phone) sees the image inline
// (its thumbnail loaded from a blob URL, in a box of the thumbnail's size), opens the full
// image, and downloads the text file: the saved bytes hash to the original's SHA-256. A voice
// note plays from a blob URL. Refusals and failures are said in words: a file over the limit
// (413), other bytes than described (409), one unfinished upload too many (429), no network
// (after its bounded retries; Retry finishes it); a chunk lost twice is sent again by itself.
// Resume: Alice's upload of a 4-chunk file is held after its first chunk (the other chunk
// requests never leave the browser), the page is reloaded, "Resume upload of big.bin" shows; a
// wrong file is refused; the right one sends only the 3 missing chunks, completes, and Bob's
// download of it has the right hash.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser_files.rs:  node web-tests/files.e2e.mjs URL ARTIFACT_DIR
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { DESKTOP, PHONE, check, expectNoLayoutProblems, launch, newPage, register } from './harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node files.e2e.mjs URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const CHUNK = 64 * 1024; // the server's files.chunk_bytes in this test
const FILE_MAX = 1024 * 1024; // its files.file_bytes_max

const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const pages = [];
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

// A real PNG (RGB, a gradient): signature, IHDR, IDAT (zlib), IEND, each chunk CRC-checked.
function png(width, height) {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = table[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, 'ascii');
    const tail = Buffer.alloc(4);
    tail.writeUInt32BE(crc(Buffer.concat([head.subarray(4), data])), 0);
    return Buffer.concat([head, data, tail]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const at = y * (width * 3 + 1);
    for (let x = 0; x < width; x++) {
      rows[at + 1 + x * 3] = (x * 255) / width;
      rows[at + 2 + x * 3] = (y * 255) / height;
      rows[at + 3 + x * 3] = 160;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

// A WAV file (PCM, mono, 16 bit): a tone of `seconds` at `rate` samples a second.
function wav(rate, seconds) {
  const samples = Math.round(rate * seconds);
  const out = Buffer.alloc(44 + samples * 2);
  out.write('RIFF', 0, 'ascii');
  out.writeUInt32LE(36 + samples * 2, 4);
  out.write('WAVEfmt ', 8, 'ascii');
  out.writeUInt32LE(16, 16);
  out.writeUInt16LE(1, 20); // PCM
  out.writeUInt16LE(1, 22); // mono
  out.writeUInt32LE(rate, 24);
  out.writeUInt32LE(rate * 2, 28);
  out.writeUInt16LE(2, 32);
  out.writeUInt16LE(16, 34);
  out.write('data', 36, 'ascii');
  out.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) out.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  return out;
}

// Chunk PUTs a page sends (Playwright's request events: what left the page).
function countPuts(page) {
  const seen = [];
  page.on('request', (r) => {
    const m = /\/files\/[0-9a-f]+\/chunks\/(\d+)$/.exec(new URL(r.url()).pathname);
    if (m && r.method() === 'PUT') seen.push(Number(m[1]));
  });
  return seen;
}

// Clicks a file's Download button on `page` and returns the saved bytes and file name.
async function download(page, name) {
  const card = page.locator('#messages li.msg .file-card', { hasText: name }).last();
  const [dl] = await Promise.all([page.waitForEvent('download'), card.locator('.file-download').click()]);
  const path = await dl.path();
  check(!!path, `the download of ${name} failed: ${await dl.failure()}`);
  return { bytes: readFileSync(path), filename: dl.suggestedFilename() };
}

// Chunk PUTs, for page.route (a GET of .../chunks is not one).
const CHUNK_PUT = (u) => /\/files\/[0-9a-f]+\/chunks\/\d+$/.test(u.pathname);

// A sent message of Alice's that carries `name` (acked: it has a seq).
const sentFile = (page, name) => page.locator('#messages li.msg.mine:not([data-seq=""])', { hasText: name });

try {
  const alice = await newPage(browser, 'alice', DESKTOP, fail);
  const bob = await newPage(browser, 'bob', PHONE, fail);
  pages.push(alice, bob);
  for (const p of [alice, bob]) await p.page.goto(url);
  alice.id = await register(alice.page, 'alice');
  bob.id = await register(bob.page, 'bob');
  const a = alice.page;
  const b = bob.page;
  const puts = countPuts(a);
  const attach = (name, mimeType, buffer) => a.setInputFiles('#attach-input', { name, mimeType, buffer });
  const upload = (name) => a.locator('#uploads li.upload', { hasText: name });

  await a.fill('#peer-id', bob.id);
  await a.press('#peer-id', 'Enter');
  await a.waitForSelector('#composer:not([hidden]) #attach');

  // An image and a text file, through the attach button's file input.
  const image = png(320, 200);
  const text = Buffer.from('Minutes of the meeting\n\n1. Files are sent in chunks.\n2. Ünïcödé survives.\n'.repeat(40));
  await a.setInputFiles('#attach-input', [
    { name: 'gradient.png', mimeType: 'image/png', buffer: image },
    { name: 'notes.txt', mimeType: 'text/plain', buffer: text },
  ]);
  await sentFile(a, 'notes.txt').waitFor();
  // Alice's own image shows inline too, once the stored message (with the thumbnail's size) is in.
  await a.waitForFunction(() => [...document.querySelectorAll('#messages li.mine img.thumb')]
    .some((i) => i.complete && i.naturalWidth > 0));
  const stats = await a.evaluate(() => files.stats);
  check(stats.progress['gradient.png'] === 100, `gradient.png's progress ended at ${stats.progress['gradient.png']} %`);
  check(stats.progress['notes.txt'] === 100, `notes.txt's progress ended at ${stats.progress['notes.txt']} %`);
  check(stats.completed === 2, `${stats.completed} uploads completed, expected 2`);
  check(await a.isHidden('#uploads'), 'the upload tray still shows after both files were sent');

  // Bob, on a phone: the image inline from a blob URL, in the thumbnail's own box.
  const bobsRow = b.locator(`#conversations li[data-peer="${alice.id}"]`);
  await bobsRow.locator('.preview', { hasText: 'File: notes.txt' }).waitFor();
  await bobsRow.click();
  await b.waitForFunction(() => [...document.querySelectorAll('#messages li.theirs img.thumb')]
    .some((i) => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')));
  const thumb = await b.evaluate(() => {
    const i = document.querySelector('#messages li.theirs img.thumb');
    return { w: i.naturalWidth, h: i.naturalHeight, attrW: i.width, attrH: i.height };
  });
  check(Math.abs(thumb.w / thumb.h - 1.6) < 0.05, `the thumbnail is ${thumb.w}x${thumb.h}, not 16:10`);
  check(thumb.attrW > 0 && Math.abs(thumb.attrW / thumb.attrH - 1.6) < 0.05, `the thumbnail's box is ${thumb.attrW}x${thumb.attrH}`);
  const card = b.locator('#messages li.theirs .file-card', { hasText: 'notes.txt' });
  check((await card.locator('.file-meta').textContent()).includes('text/plain'), 'the file card does not say its type');
  await expectNoLayoutProblems(b, 'phone chat with files', 40);
  await shot(b, 'phone-files');

  // The text file downloads with its name and exact bytes.
  const got = await download(b, 'notes.txt');
  check(got.filename === 'notes.txt', `the download is named ${got.filename}`);
  check(sha256(got.bytes) === sha256(text), 'the downloaded notes.txt differs from the original');

  // The full image opens over the page, at its own size.
  await b.locator('#messages li.theirs .thumb-button').first().click();
  await b.waitForFunction(() => {
    const i = document.getElementById('viewer-img');
    return i && i.complete && i.naturalWidth === 320 && i.src.startsWith('blob:');
  });
  await shot(b, 'phone-image-viewer');
  await b.click('#viewer-close');
  await b.waitForFunction(() => !document.getElementById('image-viewer').open);

  // A voice note: an AUDIO message; Bob's Play fetches it into a blob URL the player loads.
  await attach('voice.wav', 'audio/wav', wav(8000, 0.5));
  await sentFile(a, 'voice.wav').waitFor();
  const voice = b.locator('#messages li.theirs .file-media', { hasText: 'voice.wav' });
  await voice.locator('.file-play').click();
  await b.waitForFunction(() => {
    const au = document.querySelector('#messages li.theirs audio');
    return au && au.src.startsWith('blob:') && au.readyState >= 1 && Math.abs(au.duration - 0.5) < 0.05;
  });

  // Too large for the server: said in plain words, then cancelled.
  await attach('huge.bin', 'application/octet-stream', Buffer.alloc(FILE_MAX + 1));
  const huge = upload('huge.bin');
  await huge.locator('.upload-error', { hasText: 'huge.bin is too large: this server takes files of at most 1.0 MB.' }).waitFor();
  await huge.locator('.upload-cancel').click();
  await huge.waitFor({ state: 'detached' });

  // Other bytes than the file described (a chunk rewritten on the way, its checksum with it):
  // the server refuses the whole (409), said in words.
  const changed = Buffer.from('the original text\n'.repeat(10));
  const forged = Buffer.from('A FORGED TEXT!!!!\n'.repeat(10));
  await a.route(CHUNK_PUT, (route) => route.continue({
    postData: forged, headers: { ...route.request().headers(), 'x-chunk-sha256': sha256(forged) },
  }));
  await attach('changed.txt', 'text/plain', changed);
  const changedRow = upload('changed.txt');
  await changedRow.locator('.upload-error', { hasText: 'changed.txt changed while it was being sent' }).waitFor();
  await a.unrouteAll({ behavior: 'ignoreErrors' });
  await changedRow.locator('.upload-cancel').click();
  await changedRow.waitFor({ state: 'detached' });

  // A chunk lost twice on the way is sent again (with a wait between), and the file completes.
  let lost = 0;
  await a.route(CHUNK_PUT, (route) => {
    if (route.request().url().endsWith('/chunks/1') && lost < 2) {
      lost++;
      return route.abort('connectionreset');
    }
    return route.continue();
  });
  puts.length = 0;
  const flaky = randomBytes(CHUNK + 10);
  await attach('flaky.bin', 'application/octet-stream', flaky);
  await sentFile(a, 'flaky.bin').waitFor();
  await a.unrouteAll({ behavior: 'ignoreErrors' });
  check(puts.filter((i) => i === 1).length === 3, `chunk 1 of flaky.bin was sent ${puts.filter((i) => i === 1).length} times, expected 3`);

  // No network at all: after its bounded retries the upload says so, and Retry finishes it.
  await a.route(CHUNK_PUT, (route) => route.abort('internetdisconnected'));
  const offline = randomBytes(CHUNK + 20);
  await attach('offline.bin', 'application/octet-stream', offline);
  const offlineRow = upload('offline.bin');
  await offlineRow.locator('.upload-error', { hasText: 'The server could not be reached' }).waitFor({ timeout: 30000 });
  await a.unrouteAll({ behavior: 'ignoreErrors' });
  await offlineRow.locator('.upload-retry').click();
  await sentFile(a, 'offline.bin').waitFor();

  // Resume: the chunk requests after the first are held in the browser (never sent), and the
  // page reloads once the first is acknowledged.
  const big = randomBytes(3 * CHUNK + 1000);
  await a.route(CHUNK_PUT, (route) => {
    if (!route.request().url().endsWith('/chunks/0')) return; // held
    route.continue();
  });
  await attach('big.bin', 'application/octet-stream', big);
  await a.waitForFunction(() => [...files.uploads.values()].some((u) => u.name === 'big.bin' && u.sent > 0));
  const saved = await a.evaluate((id) => JSON.parse(localStorage.getItem(`ringchat.uploads.${id}`)), alice.id);
  check(saved?.length === 1 && saved[0].name === 'big.bin' && saved[0].size === big.length,
    `the upload is not kept for a reload: ${JSON.stringify(saved)}`);
  await a.reload();
  await a.unrouteAll({ behavior: 'ignoreErrors' });
  const resume = a.locator('#uploads li.upload[data-phase="paused"]', { hasText: 'Resume upload of big.bin' });
  await resume.waitFor();
  await a.locator('#conversations li .preview', { hasText: 'Upload paused: big.bin' }).waitFor();
  await shot(a, 'desktop-upload-resume');
  // The server takes one unfinished upload per user here: another one now is refused (429).
  await attach('second.txt', 'text/plain', Buffer.from('second'));
  const second = upload('second.txt');
  await second.locator('.upload-error', { hasText: 'Too many of your uploads are unfinished' }).waitFor();
  await second.locator('.upload-cancel').click();
  await second.waitFor({ state: 'detached' });
  // Another file is refused before anything is sent.
  puts.length = 0;
  await resume.locator('input[type="file"]').setInputFiles({ name: 'other.bin', mimeType: 'application/octet-stream', buffer: big });
  await resume.locator('.upload-error', { hasText: 'That is not big.bin' }).waitFor();
  // The same file: only the missing chunks go.
  await resume.locator('input[type="file"]').setInputFiles({ name: 'big.bin', mimeType: 'application/octet-stream', buffer: big });
  await sentFile(a, 'big.bin').waitFor();
  const resent = [...puts].sort();
  check(JSON.stringify(resent) === '[1,2,3]', `after the resume the page sent chunks ${JSON.stringify(resent)}, expected [1,2,3]`);
  check(await a.evaluate(() => files.stats.progress['big.bin']) === 100, 'big.bin\'s progress did not reach 100 %');
  check(await a.evaluate((id) => localStorage.getItem(`ringchat.uploads.${id}`), alice.id) === null,
    'the finished upload is still kept in localStorage');

  // Bob downloads it whole and intact.
  await b.locator('#messages li.theirs .file-card', { hasText: 'big.bin' }).waitFor();
  const gotBig = await download(b, 'big.bin');
  check(sha256(gotBig.bytes) === sha256(big), 'the downloaded big.bin differs from the original');
  await shot(a, 'desktop-files');
  console.log(`screenshots in ${artifacts}`);
} catch (e) {
  fail(`e2e failed: ${e.stack || e}`);
  for (const { name, page } of pages) await shot(page, `failure-files-${name}`).catch(() => {});
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`files e2e: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log('files e2e: 1 passed, 0 failed');
process.exit(0);
