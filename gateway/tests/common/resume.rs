//! A device that reconnects with `Login.resume` (tests of resume, single node and cluster).

use ringchat_bench::client::{Client, Resumed};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, login};

use super::TestServer;

/// A device that keeps the newest server time it processed (what it resumes from).
pub struct Device {
    /// `None` once [`Device::disconnect`] dropped it.
    pub client: Option<Client>,
    pub user_id: u64,
    pub token: String,
    pub device_id: String,
    pub since: u64,
}

impl Device {
    pub async fn new(server: &TestServer, name: &str) -> Self {
        let device_id = format!("{name}-dev1");
        let (client, ok) = server.device(name, &device_id).await;
        Self {
            client: Some(client),
            user_id: ok.user_id,
            token: ok.token,
            device_id,
            since: ok.server_time_ms,
        }
    }

    /// Takes the next push, and its time as the newest processed.
    pub async fn push(&mut self) -> v1::Message {
        let c = self.client.as_mut().expect("connected");
        let m = c.next_push().await.expect("a push");
        self.since = self.since.max(m.server_time_ms);
        m
    }

    /// The blip: the connection is dropped (the server finds it closed).
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// A token login on a fresh connection (the old one is gone), carrying `known` and `since`.
    pub async fn reconnect(
        &self,
        server: &TestServer,
        since: u64,
        known: &[(u64, u64)],
    ) -> (Client, Result<Resumed, ErrorCode>) {
        let mut c = server.client().await;
        c.hello().await.expect("hello");
        let got = self.resume_on(&mut c, since, known).await;
        (c, got)
    }

    pub async fn resume_on(
        &self,
        c: &mut Client,
        since: u64,
        known: &[(u64, u64)],
    ) -> Result<Resumed, ErrorCode> {
        let known = known
            .iter()
            .map(|&(conversation_id, seq)| v1::ConversationSeq {
                conversation_id,
                seq,
            })
            .collect();
        let login = v1::Login {
            account: Some(login::Account::UserId(self.user_id)),
            credential: Some(login::Credential::Token(self.token.clone())),
            device_id: self.device_id.clone(),
            platform: v1::Platform::Desktop as i32,
            resume: Some(v1::Resume {
                since_server_time_ms: since,
                known,
            }),
            ..Default::default()
        };
        c.login_resume(login)
            .await
            .expect("a reply")
            .map_err(|e| e.code())
    }
}

/// (conversation, seq) of every message the resume carried, in the order received.
pub fn seqs(resumed: &Resumed) -> Vec<(u64, u64)> {
    resumed
        .batches
        .iter()
        .flat_map(|b| {
            assert!(
                b.messages
                    .iter()
                    .all(|m| m.conversation_id == b.conversation_id),
                "a batch holds its own conversation's messages"
            );
            b.messages.iter().map(|m| (m.conversation_id, m.seq))
        })
        .collect()
}

pub fn listed(resumed: &Resumed) -> Vec<u64> {
    let mut ids: Vec<u64> = resumed
        .done
        .conversations
        .iter()
        .map(|c| c.conversation_id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Nothing else arrives for the client: a ping's answer comes after anything queued before it,
/// and no push or sync batch was parked on the way.
pub async fn nothing_more(c: &mut Client) {
    c.ping().await.expect("ping");
    while c.pending_events() > 0 {
        let frame = c.next_event().await.expect("a parked frame").expect("open");
        assert!(
            !matches!(frame.body, Some(Body::Push(_) | Body::SyncBatch(_))),
            "unexpected frame after the resume: {frame:?}"
        );
    }
}
