//! The ScyllaDB conformance suite (`store/scylla/`) needs a cluster, which cannot run on the
//! machines CI uses. It is compiled in only when `RINGCHAT_TEST_SCYLLA` (host:port) is set at
//! build time, so that a test run without a cluster reports no ScyllaDB test as passed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ringchat_test_scylla)");
    println!("cargo::rerun-if-env-changed=RINGCHAT_TEST_SCYLLA");
    if std::env::var("RINGCHAT_TEST_SCYLLA").is_ok_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=ringchat_test_scylla");
    } else if std::env::var("PROFILE").is_ok_and(|p| p == "debug") {
        println!(
            "cargo::warning=skipped: RINGCHAT_TEST_SCYLLA not set: the ScyllaDB conformance suite \
             and dump round trip (store/scylla/dump/tests.rs) are not compiled \
             (ScyllaDB cannot run on this machine; README: ScyllaDB as the store)"
        );
    }
}
