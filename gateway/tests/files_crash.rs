//! Files (issue 15) and kill -9: uploads running when the real `ringchat` binary is killed.
//! Every file acknowledged complete survives byte for byte; an upload the kill cut, finished
//! (or started over) after the restart, gives the whole file, never a part of it.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::TestServer;
use common::http1::{Http1, Response, sha256_hex};
use common::uploads::{
    Upload, complete, content, create_body, download, expect_status, present, put_chunk, upload,
};

/// What one upload of the kill -9 test got to.
#[derive(Default)]
struct Progress {
    upload: Option<Upload>,
    file_id: Option<String>,
}

/// How one upload of the kill -9 test ended: acknowledged complete, or cut by the kill (a
/// transport error, the step it stopped). Anything else fails the test, in the upload's task.
enum Ended {
    Completed,
    Cut(String),
}

/// Creates, sends every chunk and completes the `i`th upload of the kill -9 test, recording
/// its progress. Until the kill (`killed`, set before the signal) every step must succeed; a
/// transport error is allowed only once the kill is on its way, and an answer other than
/// success never (a killed server sends none).
async fn upload_until_killed(
    addr: SocketAddr,
    token: &str,
    i: usize,
    data: &[u8],
    progress: &Mutex<Vec<Progress>>,
    killed: &AtomicBool,
) -> Ended {
    let cut = |step: &str, e: std::io::Error| {
        assert!(
            killed.load(Ordering::SeqCst),
            "upload {i}: {step} failed before the kill: {e}"
        );
        Ended::Cut(format!("{step}: {e}"))
    };
    let succeeded = |step: &str, r: &Response, want: &[u16]| {
        assert!(
            want.contains(&r.status),
            "upload {i}: {step} answered {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    };
    let mut c = match Http1::try_connect(addr).await {
        Ok(c) => c,
        Err(e) => return cut("connect", e),
    };
    let body = create_body(&format!("k{i}.bin"), data);
    let headers = [("Content-Type", "application/json")];
    let up = match c
        .request("POST", "/files", Some(token), &headers, body.as_bytes())
        .await
    {
        Ok(r) => {
            succeeded("create", &r, &[201]);
            Upload::created(&r)
        }
        Err(e) => return cut("create", e),
    };
    progress.lock().unwrap()[i].upload = Some(up.clone());
    // Uploads run at different paces: the kill finds them at different steps.
    for _ in 0..i {
        tokio::task::yield_now().await;
    }
    for index in 0..up.chunks(data) {
        let chunk = up.chunk(data, index);
        let sha = sha256_hex(chunk);
        let path = format!("/files/{}/chunks/{index}", up.id);
        let headers = [("X-Chunk-Sha256", sha.as_str())];
        let step = format!("chunk {index}");
        match c.request("PUT", &path, Some(token), &headers, chunk).await {
            Ok(r) => succeeded(&step, &r, &[200, 201, 204]),
            Err(e) => return cut(&step, e),
        }
    }
    let path = format!("/files/{}/complete", up.id);
    match c.request("POST", &path, Some(token), &[], b"").await {
        Ok(r) => {
            succeeded("complete", &r, &[200]);
            let id = r.json()["file_id"].as_str().unwrap().to_owned();
            progress.lock().unwrap()[i].file_id = Some(id);
            Ended::Completed
        }
        Err(e) => cut("complete", e),
    }
}

/// A finished upload task's outcome; its panic (a failed check) goes on in the test.
async fn ended(task: tokio::task::JoinHandle<Ended>) -> Ended {
    match task.await {
        Ok(ended) => ended,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("an upload task was cancelled: {e}"),
    }
}

#[tokio::test]
async fn after_kill_9_during_uploads_acknowledged_files_survive_and_no_half_file_is_served() {
    const UPLOADS: usize = 6;
    const FILE_BYTES: usize = 4 * 1024 * 1024 + 3;
    const KILL_AFTER_COMPLETES: usize = 2;
    // Room for every upload's chunk at once: a busy refusal (503, tested on its own above)
    // would end an upload before the kill.
    let mut server =
        TestServer::start(&[("FILES__CHUNKS_IN_FLIGHT_PER_USER_MAX", &UPLOADS.to_string())]);
    let (_alice, alice) = server.user("alice").await;
    let files: Vec<Vec<u8>> = (0..UPLOADS)
        .map(|i| content(100 + i as u64, FILE_BYTES))
        .collect();
    let progress: Arc<Mutex<Vec<Progress>>> = Arc::new(Mutex::new(
        (0..UPLOADS).map(|_| Progress::default()).collect(),
    ));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, data) in files.iter().cloned().enumerate() {
        let progress = Arc::clone(&progress);
        let killed = Arc::clone(&killed);
        let token = alice.token.clone();
        let addr = server.ws;
        tasks.push(Some(tokio::spawn(async move {
            upload_until_killed(addr, &token, i, &data, &progress, &killed).await
        })));
    }
    let mut outcomes: Vec<Option<Ended>> = (0..UPLOADS).map(|_| None).collect();
    // The uploads run on this runtime: waited for without blocking it. A task that ends
    // early is looked at at once, so that its failed check is the test's failure.
    let deadline = tokio::time::Instant::now() + common::WAIT_DEADLINE;
    loop {
        for (task, outcome) in tasks.iter_mut().zip(&mut outcomes) {
            if task.as_ref().is_some_and(|t| t.is_finished()) {
                *outcome = Some(ended(task.take().unwrap()).await);
            }
        }
        let acked = progress
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.file_id.is_some())
            .count();
        if acked >= KILL_AFTER_COMPLETES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {KILL_AFTER_COMPLETES} completes ({acked} so far)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Set before the signal: a transport error an upload sees after this may be the kill's.
    killed.store(true, Ordering::SeqCst);
    server.kill9();
    for (task, outcome) in tasks.iter_mut().zip(&mut outcomes) {
        if let Some(task) = task.take() {
            *outcome = Some(ended(task).await);
        }
    }
    let mut completed = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome.as_ref().expect("every upload task ended") {
            Ended::Completed => completed += 1,
            Ended::Cut(step) => eprintln!("upload {i} cut by the kill at {step}"),
        }
    }
    server.restart();

    let progress = std::mem::take(&mut *progress.lock().unwrap());
    let acked = progress.iter().filter(|p| p.file_id.is_some()).count();
    assert!(acked >= KILL_AFTER_COMPLETES);
    assert_eq!(acked, completed, "each acknowledged upload ended complete");
    eprintln!("killed with {acked} of {UPLOADS} uploads acknowledged complete");
    let mut c = Http1::connect(server.ws).await;
    let mut served: HashMap<String, usize> = HashMap::new();
    for (i, p) in progress.iter().enumerate() {
        let data = &files[i];
        if let Some(file_id) = &p.file_id {
            // Acknowledged: there byte for byte.
            let got = download(&mut c, &alice.token, file_id).await;
            expect_status(&got, 200, "an acknowledged file after kill -9");
            assert!(got.body == *data, "file {i} survives byte for byte");
            served.insert(file_id.clone(), i);
            continue;
        }
        // Not acknowledged: whatever the kill left, finishing the upload (or starting it over)
        // gives the whole file, never a part of it.
        let up = match &p.upload {
            Some(up) => {
                let resp = c
                    .request(
                        "GET",
                        &format!("/files/{}/chunks", up.id),
                        Some(&alice.token),
                        &[],
                        b"",
                    )
                    .await
                    .unwrap();
                (resp.status == 200).then(|| up.clone())
            }
            None => None,
        };
        let file_id = match up {
            Some(up) => {
                let have = present(&mut c, &alice.token, &up).await;
                for index in 0..up.chunks(data) {
                    if !have.contains(&index) {
                        put_chunk(&mut c, &alice.token, &up, data, index).await;
                    }
                }
                let resp = complete(&mut c, &alice.token, &up).await;
                if resp.status == 200 {
                    resp.json()["file_id"].as_str().unwrap().to_owned()
                } else {
                    // Completed just before the kill, answer lost: start over.
                    upload(&mut c, &alice.token, &format!("again{i}.bin"), data).await
                }
            }
            None => upload(&mut c, &alice.token, &format!("again{i}.bin"), data).await,
        };
        let got = download(&mut c, &alice.token, &file_id).await;
        expect_status(&got, 200, "a file finished after the restart");
        assert_eq!(got.body.len(), data.len(), "file {i}: whole");
        assert!(got.body == *data, "file {i}: the same bytes");
        served.insert(file_id, i);
    }
    assert!(!served.is_empty());
}
