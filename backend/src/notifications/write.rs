//! A notification on the commit thread: one batch of recipients per write, each recipient's
//! message appended to their system conversation with its next seq, like any message. The
//! notification id is the messages' `client_msg_id`, remembered in the recipient's row of that
//! conversation, so a batch submitted again (a retried request, a job resumed) stores nothing
//! twice.

use bytes::Bytes;
use ringchat_proto::v1::ContentType;
use tokio::sync::oneshot;

use crate::accounts::Refusal;
use crate::messaging::writer::{Draft, Outcome, Writer};
use crate::store::{ConvId, UserId};

/// The sender of every system message: the server, never a user.
pub(crate) const SERVER_SENDER: UserId = 0;

/// One write: a notification for up to `notifications.batch_users` users.
#[derive(Debug)]
pub(crate) struct SystemBatch {
    /// Also the messages' `client_msg_id`: what a repeat is recognised by.
    pub notification_id: String,
    /// An encoded `SystemNotice`, shared by every recipient's message.
    pub content: Bytes,
    pub users: Vec<UserId>,
    /// Told once the batch is durable (or refused).
    pub reply: oneshot::Sender<Result<SystemDone, Refusal>>,
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SystemDone {
    /// New messages stored.
    pub stored: u32,
    /// Recipients who had this notification already.
    pub repeats: u32,
}

/// A batch's outcome: the messages to push (indexes in the group's messages) and the answer.
#[derive(Debug)]
pub(crate) struct SystemOutcome {
    pub reply: oneshot::Sender<Result<SystemDone, Refusal>>,
    pub result: Result<SystemDone, Refusal>,
    pub messages: Vec<usize>,
}

impl SystemOutcome {
    /// The group was not committed: nothing of it is stored or pushed.
    pub(crate) fn failed(self) -> Self {
        Self {
            result: Err(Refusal::unavailable("commit failed")),
            messages: Vec::new(),
            reply: self.reply,
        }
    }
}

impl Writer {
    pub(crate) fn system_batch(&mut self, batch: SystemBatch) -> Outcome {
        let SystemBatch {
            notification_id,
            content,
            users,
            reply,
        } = batch;
        let mut messages = Vec::with_capacity(users.len());
        let result = self
            .system_messages(&notification_id, &content, &users, &mut messages)
            .map_err(Refusal::from);
        Outcome::System(SystemOutcome {
            reply,
            result,
            messages,
        })
    }

    fn system_messages(
        &mut self,
        id: &str,
        content: &Bytes,
        users: &[UserId],
        messages: &mut Vec<usize>,
    ) -> Result<SystemDone, crate::store::StoreError> {
        let mut convs: Vec<(ConvId, UserId)> = users
            .iter()
            .filter_map(|u| ConvId::system(*u).map(|c| (c, *u)))
            .collect();
        // A user listed twice gets it once.
        convs.sort_unstable();
        convs.dedup();
        // Every read that can fail comes first: a refusal leaves nothing behind.
        self.load_rows(&convs)?;
        let ids: Vec<ConvId> = convs.iter().map(|(c, _)| *c).collect();
        let heads = self.heads(&ids)?;
        let mut repeats = Vec::with_capacity(convs.len());
        for &(conv, user) in &convs {
            repeats.push(
                self.sent_before_in(conv, user, SERVER_SENDER, id)?
                    .is_some(),
            );
        }
        let mut done = SystemDone::default();
        let window = self.policy.dedup_window;
        for ((&(conv, user), mut head), repeat) in convs.iter().zip(heads).zip(repeats) {
            if repeat {
                done.repeats += 1;
                continue;
            }
            let draft = Draft {
                from: SERVER_SENDER,
                client_msg_id: id.to_owned(),
                content_type: ContentType::SystemNotice as i32,
                content: content.clone(),
                mentions: None,
            };
            let index = self.push_message(conv, &mut head, draft);
            let seq = head.max_seq;
            self.row_mut(conv, user).remember_send(id, seq, window);
            messages.push(index);
            done.stored += 1;
        }
        Ok(done)
    }
}
