use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::service::Backend;

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn the_store_is_measured_without_the_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("a"), [0u8; 1000]).unwrap();
    std::fs::write(dir.path().join("sub/b"), [0u8; 24]).unwrap();
    std::fs::write(dir.path().join("files/c"), [0u8; 5000]).unwrap();
    let usage = measure_store(dir.path(), Some(&dir.path().join("files")));
    assert_eq!(usage.size_bytes, 1024);
    assert!(usage.disk_total_bytes >= usage.disk_free_bytes && usage.disk_total_bytes > 0);
    assert_eq!(dir_bytes(&dir.path().join("files")), 5000);
    assert_eq!(measure_store(dir.path(), None).size_bytes, 6024);
    // The files' directory named another way (through a symlink to the data dir) is still
    // the one left out.
    let other = tempfile::tempdir().unwrap();
    let link = other.path().join("data");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    assert_eq!(
        measure_store(dir.path(), Some(&link.join("files"))).size_bytes,
        1024
    );
}

/// A walk of the local file storage that takes long (millions of files) does not hold up the
/// one-second samples: with the walk started and held until the test lets it go, the sampler
/// keeps adding samples; let go, the files' size is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_keep_coming_while_the_files_are_walked() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    assert_eq!(settings.problems(), Vec::<String>::new());
    let files_dir = local_files_dir(&settings).expect("local files by default");
    let backend = Backend::open(settings, Vec::new()).expect("backend opens");
    std::fs::create_dir_all(&files_dir).unwrap();
    std::fs::write(files_dir.join("blob"), [0u8; 4096]).unwrap();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let admin = Arc::new(Admin::new(prometheus, backend, Box::new(|| {})));

    // The real walk, held once it has started until the test lets it go.
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let walk: Walk = Arc::new(move |d: &Path| {
        let _ = lock(&started_tx).send(());
        let _ = lock(&release_rx).recv();
        dir_bytes(d)
    });
    let sampler = tokio::spawn(super::super::sampler::run_with(Arc::clone(&admin), walk));
    tokio::task::spawn_blocking(move || started.recv_timeout(DEADLINE))
        .await
        .unwrap()
        .expect("the files' walk starts");

    // Three samples taken after the walk started, while it is still held.
    let first = admin.overview.latest().map_or(0, |s| s.at_ms);
    let end = Instant::now() + DEADLINE;
    loop {
        let newer = admin
            .overview
            .series(usize::MAX)
            .iter()
            .filter(|s| s.at_ms > first)
            .count();
        if newer >= 3 {
            break;
        }
        assert!(
            Instant::now() < end,
            "no samples while the files were walked ({newer})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = admin.overview.store();
    assert_eq!(store.files_measured_at_ms, 0, "the walk is still held");
    assert!(store.measured_at_ms > 0, "the store's own walk is not held");

    release.send(()).unwrap();
    let end = Instant::now() + DEADLINE;
    while admin.overview.store().files_measured_at_ms == 0 {
        assert!(Instant::now() < end, "the files' size was not published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admin.overview.store().files_bytes >= 4096);
    sampler.abort();
}
