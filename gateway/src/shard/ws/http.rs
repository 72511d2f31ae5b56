//! The HTTP/1.1 request that opens a connection on the WebSocket listener: an upgrade on `/ws`,
//! a `GET` of one of the chat page's files, or (any method) a request under `/files`, which the
//! shard hands to the backend whole (`shard/conn/files.rs`). Pure: request bytes in, a response
//! out.

use base64::Engine;
use sha1::{Digest, Sha1};

/// Largest request head accepted (request line and headers).
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Headers accepted in one request, at most.
const HEADERS_MAX: usize = 32;
/// The path that upgrades to WebSocket.
pub const WS_PATH: &str = "/ws";
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The browser chat page: plain files, no build step, compiled into the binary.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "/util.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/util.js"),
    ),
    (
        "/net.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/net.js"),
    ),
    (
        "/people.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/people.js"),
    ),
    (
        "/chat.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/chat.js"),
    ),
    (
        "/contacts.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/contacts.js"),
    ),
    (
        "/contacts-view.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/contacts-view.js"),
    ),
    (
        "/group-events.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/group-events.js"),
    ),
    (
        "/sha256.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/sha256.js"),
    ),
    (
        "/files.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/files.js"),
    ),
    (
        "/files-view.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/files-view.js"),
    ),
    (
        "/groups.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/groups.js"),
    ),
    (
        "/groups-view.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/groups-view.js"),
    ),
    (
        "/mentions-view.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/mentions-view.js"),
    ),
    (
        "/system-view.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/system-view.js"),
    ),
    (
        "/me.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/me.js"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/app.js"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/app.css"),
    ),
];

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Switch to WebSocket; the response is the 101.
    Upgrade(String),
    /// Answer and close: a page, or an error status.
    Respond(String),
    /// `GET /assign` (cluster mode): the status service's answer, made by the shard.
    Assign,
    /// Under `/files`: the connection goes to the backend's files service, head included.
    Files,
}

/// The status service's path on this listener (cluster mode; 404 otherwise).
pub const ASSIGN_PATH: &str = "/assign";

/// Parses the request head at the front of `buf`. `Ok(None)`: incomplete. On success, also the
/// number of bytes the head took (anything after it is already WebSocket data).
pub fn parse(buf: &[u8]) -> Option<(Route, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let head_bytes = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= REQUEST_HEAD_BYTES_MAX {
                return Some((
                    Route::Respond(error(431, "request head too large")),
                    buf.len(),
                ));
            }
            return None;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Some((Route::Respond(error(431, "too many headers")), buf.len()));
        }
        Err(e) => return Some((Route::Respond(error(400, &e.to_string())), buf.len())),
    };
    if head_bytes > REQUEST_HEAD_BYTES_MAX {
        return Some((
            Route::Respond(error(431, "request head too large")),
            head_bytes,
        ));
    }
    Some((route(&req), head_bytes))
}

/// A request head as its bytes arrive. httparse reads a head line by line, so parsing it
/// again is worth it only once a line has ended among the new bytes (or the head reached its
/// limit): parsed from the start after every read, a head sent one byte per segment would cost
/// ~33 M bytes of parsing. A line's end rather than the head's: a bad request line is still
/// answered 400 at once. A head has at most `HEADERS_MAX` + 2 lines before it completes or is
/// refused, so at most that many parses of at most `REQUEST_HEAD_BYTES_MAX` each. Empty lines
/// before the request line (which httparse skips, any number of them) end no line of the head:
/// they call for no parse, and count toward the head's bytes.
#[derive(Debug, Default)]
pub struct HeadParser {
    /// Bytes at the front of the buffer already looked at.
    scanned: usize,
    /// A byte other than CR or LF has come: the request line has begun.
    started: bool,
    /// Parses made so far (what a test counts).
    #[cfg(test)]
    parses: u32,
}

impl HeadParser {
    /// `parse` of `buf` (the head so far, from its first byte), once new bytes may have
    /// changed the answer; `None` until then.
    pub fn parse(&mut self, buf: &[u8]) -> Option<(Route, usize)> {
        let new = buf.get(self.scanned..).unwrap_or_default();
        self.scanned = buf.len();
        // Where the head's lines start among the new bytes: past any leading empty lines.
        let mut from = 0;
        if !self.started {
            from = new
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(new.len());
            self.started = from < new.len();
        }
        if !new[from..].contains(&b'\n') && buf.len() < REQUEST_HEAD_BYTES_MAX {
            return None;
        }
        #[cfg(test)]
        {
            self.parses += 1;
        }
        parse(buf)
    }
}

/// The files service's paths: `/files` and below (not `/filesx`).
pub const FILES_PATH: &str = "/files";

fn route(req: &httparse::Request<'_, '_>) -> Route {
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path
        .strip_prefix(FILES_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        return Route::Files;
    }
    if req.method != Some("GET") {
        return Route::Respond(error(405, "only GET is served here"));
    }
    if path == WS_PATH {
        return upgrade(req);
    }
    if path == ASSIGN_PATH {
        return Route::Assign;
    }
    match asset(path) {
        Some((content_type, body)) => Route::Respond(response(
            "200 OK",
            content_type,
            &PAGE_HEADERS
                .iter()
                .map(|(name, value)| format!("{name}: {value}\r\n"))
                .collect::<String>(),
            body,
        )),
        None => Route::Respond(error(404, "not found")),
    }
}

/// The chat page's file at `path` (`/index.html` is `/`): its content type and body. Served
/// here and by a status-only node (`crate::cluster`), whose page connects to the node that
/// `/assign` names.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, content_type, body)| (*content_type, *body))
}

/// The chat page's file at `path` as an axum response (with [`PAGE_HEADERS`]), for the
/// listeners served by axum: a status-only node's (`crate::cluster`) and a kept-alive `/files`
/// connection a browser reuses for the page (`crate::files`).
pub fn asset_response(path: &str) -> Option<axum::response::Response> {
    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use axum::response::IntoResponse as _;
    let (content_type, body) = asset(path)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some((StatusCode::OK, headers, body).into_response())
}

/// Headers of every page file. Pictures may come from anywhere: an avatar is a URL its owner
/// chose (the page asks for it without a referrer). Scripts and styles stay on this origin;
/// WebSockets may go to another node of the cluster. Files (`/files`) are fetched from this
/// origin (`connect-src 'self'`, with the login token in a header) and shown from `blob:` URLs
/// (images, audio). No other site may frame the page (clickjacking), and neither a `<base>`
/// nor a form may send anything elsewhere.
pub const PAGE_HEADERS: [(&str, &str); 3] = [
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data: blob: https: http:; media-src 'self' blob:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
];

fn upgrade(req: &httparse::Request<'_, '_>) -> Route {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Route::Respond(error(426, "this path speaks WebSocket only"));
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Route::Respond(response(
            "426 Upgrade Required",
            "text/plain; charset=utf-8",
            "Sec-WebSocket-Version: 13\r\n",
            "WebSocket version 13 required\n",
        ));
    }
    let Some(key) = header("sec-websocket-key").map(str::trim) else {
        return Route::Respond(error(400, "Sec-WebSocket-Key missing"));
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map(|k| k.len()) != Ok(16) {
        return Route::Respond(error(400, "Sec-WebSocket-Key is not 16 bytes of base64"));
    }
    Route::Upgrade(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    ))
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// `GET /assign`'s answer: JSON, readable by a page from any origin (it names only the
/// addresses clients are meant to use), never cached; a 404 on a node not in cluster mode. The
/// one rule for every listener that answers it: the shard's (`assign_response`), a status-only
/// node's and a kept-alive `/files` connection's (`assign_axum_response`).
fn assign_answer(
    answer: Option<(u16, String)>,
) -> (
    u16,
    &'static str,
    &'static [(&'static str, &'static str)],
    String,
) {
    const HEADERS: &[(&str, &str)] = &[
        ("Cache-Control", "no-store"),
        ("Access-Control-Allow-Origin", "*"),
    ];
    match answer {
        None => (
            404,
            "text/plain; charset=utf-8",
            &[],
            "not found (this server is not in cluster mode)\n".to_owned(),
        ),
        Some((200, body)) => (200, "application/json", HEADERS, body),
        Some((_, body)) => (503, "application/json", HEADERS, body),
    }
}

/// [`assign_answer`] as the shard writes it.
pub fn assign_response(answer: Option<(u16, String)>) -> String {
    let (status, content_type, headers, body) = assign_answer(answer);
    let line = match status {
        200 => "200 OK",
        404 => "404 Not Found",
        _ => "503 Service Unavailable",
    };
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    response(line, content_type, &extra, &body)
}

/// [`assign_answer`] as an axum response, for the listeners served by axum.
pub fn assign_axum_response(answer: Option<(u16, String)>) -> axum::response::Response {
    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use axum::response::IntoResponse as _;
    let (status, content_type, headers, body) = assign_answer(answer);
    let mut map = HeaderMap::new();
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_static(value));
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, map, body).into_response()
}

/// The shard's answer to a file request it cannot hand over: no files service (404), or too
/// many file connections open (503, try again shortly). JSON like the files service's errors.
pub fn files_refusal(busy: bool) -> String {
    if busy {
        response(
            "503 Service Unavailable",
            "application/json",
            "Retry-After: 1\r\n",
            r#"{"error":"too many file transfers at once, retry shortly","code":"busy"}"#,
        )
    } else {
        response(
            "404 Not Found",
            "application/json",
            "",
            r#"{"error":"files are not served here","code":"not_found"}"#,
        )
    }
}

fn error(status: u16, message: &str) -> String {
    let line = match status {
        400 => "400 Bad Request",
        404 => "404 Not Found",
        405 => "405 Method Not Allowed",
        426 => "426 Upgrade Required",
        431 => "431 Request Header Fields Too Large",
        _ => "500 Internal Server Error",
    };
    response(
        line,
        "text/plain; charset=utf-8",
        "",
        &format!("{message}\n"),
    )
}

fn response(status: &str, content_type: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head that arrives one byte per read is parsed once per line, not once per byte, and
    /// comes to the same answer as when it arrives whole.
    #[test]
    fn a_head_arriving_byte_by_byte_is_parsed_once_per_line() {
        let head: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let byte_by_byte = |bytes: &[u8]| {
            let mut parser = HeadParser::default();
            let answer =
                (1..=bytes.len()).find_map(|end| parser.parse(&bytes[..end]).map(|a| (end, a)));
            (answer, parser.parses)
        };
        let lines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count() as u32;

        let (answer, parses) = byte_by_byte(head);
        let (end, answer) = answer.expect("the head completes");
        assert_eq!(end, head.len());
        assert_eq!(Some(answer), parse(head));
        assert_eq!(parses, lines(head));

        // A bad request line is refused as soon as it ends.
        let (answer, parses) = byte_by_byte(b"NOT AN HTTP REQUEST\r\nHost: x\r\n");
        let (end, (Route::Respond(response), _)) = answer.expect("refused") else {
            panic!("not refused")
        };
        assert_eq!((end, parses), (21, 1));
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");

        // A head that never ends is refused at its limit: one parse for the request line, one
        // there.
        let mut endless = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        endless.resize(2 * REQUEST_HEAD_BYTES_MAX, b'a');
        let (answer, parses) = byte_by_byte(&endless);
        let (end, (Route::Respond(response), _)) = answer.expect("refused") else {
            panic!("not refused")
        };
        assert_eq!((end, parses), (REQUEST_HEAD_BYTES_MAX, 2));
        assert!(response.starts_with("HTTP/1.1 431"), "{response}");

        // Empty lines before the request line (httparse skips them all) call for no parse.
        let mut blank_first = b"\n".repeat(8000);
        blank_first.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (answer, parses) = byte_by_byte(&blank_first);
        let (end, answer) = answer.expect("the head completes");
        assert_eq!(end, blank_first.len());
        assert_eq!(Some(answer), parse(&blank_first));
        assert!(parses <= HEADERS_MAX as u32 + 2, "{parses} parses");
        assert_eq!(parses, 2);
        // And they count toward the head's limit: refused there, in one parse.
        let (answer, parses) = byte_by_byte(&b"\r\n".repeat(REQUEST_HEAD_BYTES_MAX));
        let (end, (Route::Respond(response), _)) = answer.expect("refused") else {
            panic!("not refused")
        };
        assert_eq!((end, parses), (REQUEST_HEAD_BYTES_MAX, 1));
        assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn routes_upgrade_page_and_errors() {
        let req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nXX";
        let (route, n) = parse(req).unwrap();
        assert_eq!(n, req.len() - 2, "bytes after the head are left");
        assert!(matches!(route, Route::Upgrade(r) if r.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        let (page, _) = parse(b"GET /?x=1 HTTP/1.1\r\n\r\n").unwrap();
        assert!(
            matches!(page, Route::Respond(r) if r.starts_with("HTTP/1.1 200") && r.contains("<html"))
        );
        let (missing, _) = parse(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(missing, Route::Respond(r) if r.starts_with("HTTP/1.1 404")));
        for files in [
            &b"POST /files HTTP/1.1\r\n\r\n"[..],
            b"PUT /files/u1/chunks/0 HTTP/1.1\r\n\r\n",
            b"GET /files/f1?c=2&s=3 HTTP/1.1\r\n\r\n",
            b"GET /files?x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(files).unwrap().0, Route::Files);
        }
        let (not_files, _) = parse(b"POST /filesx HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(not_files, Route::Respond(r) if r.starts_with("HTTP/1.1 405")));
        let (plain, _) = parse(b"GET /ws HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(plain, Route::Respond(r) if r.starts_with("HTTP/1.1 426")));
        let huge = vec![b'a'; REQUEST_HEAD_BYTES_MAX + 1];
        let (big, _) = parse(&huge).unwrap();
        assert!(
            matches!(big, Route::Respond(r) if r.starts_with("HTTP/1.1 400") || r.starts_with("HTTP/1.1 431"))
        );
    }
}
