//! The server on PostgreSQL (`[storage] engine = "postgres"`): messages between two users,
//! pipelined; a kill -9 with sends in flight; after the restart every acked message is there,
//! once, with its seq and content, and resends are recognised. Needs the server that
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL); fails without it. The harness
//! (`common/store.rs`) gives the server a fresh database of its own.

mod common;

#[tokio::test]
async fn acked_messages_survive_a_kill_9_with_postgresql_as_the_store() {
    let env = [("STORAGE__ENGINE", "postgres")];
    common::kill9::acked_messages_survive_kill_9(&env, 300, 150).await;
}
