//! The PostgreSQL test server (`scripts/test.sh` starts one): a fresh database per test.

/// A fresh database on the test server, for this test's server alone; returns its URL.
pub async fn fresh_database() -> String {
    let url = std::env::var("RINGCHAT_TEST_POSTGRES_URL").expect(
        "RINGCHAT_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
         (`bash scripts/test.sh` starts one; README \"PostgreSQL as the store\")",
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    let name = format!(
        "ringchat_it_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let (base, _) = url
        .rsplit_once('/')
        .expect("a URL of the form postgres://user@host:port/database");
    format!("{base}/{name}")
}
