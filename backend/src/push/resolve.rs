//! Turns queued records into pushes, on a blocking thread (store reads): a group message's
//! recipients (its mentions; in small groups every member who did not mute it), who of them is
//! offline now (every record's recipient, not only a group's: a record may have waited out an
//! outage), each recipient's devices with a live login and a push token, and a preview.

use prost::Message as _;
use ringchat_proto::v1::{self, ContentType, PushProvider};
use serde::Serialize;

use super::{PushConfig, PushRecord};
use crate::sessions::SharedSessions;
use crate::store::{ConvId, ConvKind, MessageRecord, Ports, StoreError, UserId};

/// One push: a message for one user, to all of the user's devices that have a token.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PushItem {
    pub user_id: UserId,
    pub devices: Vec<DeviceToken>,
    pub conversation_id: u64,
    /// `direct`, `group` or `system`.
    pub kind: &'static str,
    /// 0 for the server (system notifications).
    pub from_user_id: UserId,
    pub seq: u64,
    pub server_time_ms: u64,
    /// The user is mentioned (by name or as everyone) in a group message.
    pub mention: bool,
    /// Present only with `push.preview` on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// A system notification's title, with `push.preview` on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[cfg(test)]
impl PushItem {
    /// A direct message's push to `user_id` with no devices, stamped `server_time_ms`: the
    /// push module's unit tests' one builder.
    pub(super) fn for_test(user_id: UserId, server_time_ms: u64) -> Self {
        Self {
            user_id,
            devices: Vec::new(),
            conversation_id: 1,
            kind: "direct",
            from_user_id: 100_000_009,
            seq: 1,
            server_time_ms,
            mention: false,
            preview: None,
            title: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeviceToken {
    pub device_id: String,
    /// `apns`, `fcm`, `web_push` or `other`.
    pub provider: &'static str,
    pub token: String,
}

fn provider_name(p: i32) -> &'static str {
    match PushProvider::try_from(p) {
        Ok(PushProvider::Apns) => "apns",
        Ok(PushProvider::Fcm) => "fcm",
        Ok(PushProvider::WebPush) => "web_push",
        _ => "other",
    }
}

/// What resolving needs.
pub(crate) struct Resolver {
    pub ports: Ports,
    pub sessions: SharedSessions,
    pub config: PushConfig,
    /// Login tokens read per user, at most (`login.device_tokens_max`).
    pub devices_max: usize,
}

impl Resolver {
    /// The pushes of some records, in their order. A record whose message or recipients are
    /// gone yields none.
    pub(crate) fn pushes(&self, records: &[PushRecord]) -> Result<Vec<PushItem>, StoreError> {
        let mut out = Vec::new();
        for r in records {
            let mut message = None;
            let recipients: Vec<(UserId, bool)> = if r.user != 0 {
                // Delivery found the user offline, but the record may have waited (a push
                // gateway's outage): a user online now has the message already.
                if !self.sessions.read().of_user(r.user).is_empty() {
                    continue;
                }
                vec![(r.user, false)]
            } else {
                let Some(m) = self.ports.log.message(r.conv, r.seq)? else {
                    continue;
                };
                let list = self.group_recipients(r, &m)?;
                message = Some(m);
                list
            };
            for (user, mention) in recipients {
                let devices = self.devices(user)?;
                if devices.is_empty() {
                    continue;
                }
                let mut item = PushItem {
                    user_id: user,
                    devices,
                    conversation_id: r.conv.to_wire(),
                    kind: kind_name(r.conv),
                    from_user_id: r.from,
                    seq: r.seq,
                    server_time_ms: r.server_time_ms,
                    mention,
                    preview: None,
                    title: None,
                };
                if self.config.preview {
                    if message.is_none() {
                        message = self.ports.log.message(r.conv, r.seq)?;
                    }
                    if let Some(m) = &message {
                        (item.title, item.preview) = self.preview(m);
                    }
                }
                out.push(item);
            }
        }
        Ok(out)
    }

    /// A group message's offline recipients, and whether each is mentioned. Mentioned members
    /// always (mentions pierce a muted group); in groups of at most `push.group_members_max`
    /// members, every member who did not mute it; "everyone" only in those small groups; never
    /// a member who blocks the sender.
    fn group_recipients(
        &self,
        r: &PushRecord,
        m: &MessageRecord,
    ) -> Result<Vec<(UserId, bool)>, StoreError> {
        let (named, all): (&[UserId], bool) = m
            .mentions
            .as_deref()
            .map_or((&[], false), |x| (&x.user_ids, x.all));
        let small = self
            .ports
            .groups
            .group(r.conv)?
            .is_some_and(|g| g.member_count <= self.config.group_members_max);
        let mut out: Vec<(UserId, bool)> = Vec::new();
        if small {
            let limit = self.config.group_members_max as usize;
            for (user, member) in self.ports.groups.group_members(r.conv, 0, limit)? {
                let mentioned = all || named.contains(&user);
                // Resolved late (a push waits out a webhook's outage): a member who joined
                // after the message, with the history hidden, may not read it.
                if user == r.from || !crate::messaging::reads::within(member.visible_seqs(), m.seq)
                {
                    continue;
                }
                let muted = !mentioned
                    && self
                        .ports
                        .groups
                        .user_group(user, r.conv)?
                        .is_some_and(|ug| ug.notify_muted);
                if !muted {
                    out.push((user, mentioned));
                }
            }
        } else {
            // Mentions are members when sent (the sequencer keeps only those).
            out.extend(named.iter().filter(|u| **u != r.from).map(|u| (*u, true)));
        }
        {
            let sessions = self.sessions.read();
            out.retain(|(u, _)| sessions.of_user(*u).is_empty());
        }
        // A member who blocks the sender is not told of the sender's messages (a group lets
        // them share a conversation, not a notification).
        let mut kept = Vec::with_capacity(out.len());
        for (user, mentioned) in out {
            if !crate::contacts::query::is_blocked_by(&*self.ports.contacts, r.from, user)? {
                kept.push((user, mentioned));
            }
        }
        Ok(kept)
    }

    /// The user's devices that have a push token and a login that has not ended (a device
    /// logged out, revoked or expired gets no push).
    fn devices(&self, user: UserId) -> Result<Vec<DeviceToken>, StoreError> {
        let tokens = self.ports.push_tokens.push_tokens(user, self.devices_max)?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        // A disabled account's logins live on (its tokens are refused at login), and a
        // registration racing the disable may have put a token back after it was forgotten.
        if self.ports.account_admin.user_flags(user)?.is_some() {
            return Ok(Vec::new());
        }
        let now = crate::time::now_ms();
        // Every login row (a refresh keeps its old token: one more than devices_max).
        let logins = self
            .ports
            .accounts
            .tokens_of_user(user, crate::accounts::TOKENS_SCAN_MAX)?;
        Ok(tokens
            .into_iter()
            .filter(|(device, _)| {
                logins
                    .iter()
                    .any(|(_, t)| &t.device_id == device && t.expires_at_ms > now)
            })
            .map(|(device_id, t)| DeviceToken {
                device_id,
                provider: provider_name(t.provider),
                token: t.token,
            })
            .collect())
    }

    /// `(title, preview)` of a message: text cut to `push.preview_bytes_max`; a system
    /// notification's title and text; nothing for other content.
    fn preview(&self, m: &MessageRecord) -> (Option<String>, Option<String>) {
        let max = self.config.preview_bytes_max;
        if m.recalled {
            return (None, None);
        }
        match ContentType::try_from(m.content_type) {
            Ok(ContentType::Text) => (
                None,
                std::str::from_utf8(&m.content).ok().map(|t| cut(t, max)),
            ),
            Ok(ContentType::SystemNotice) => match v1::SystemNotice::decode(m.content.as_ref()) {
                Ok(n) => (
                    (!n.title.is_empty()).then(|| cut(&n.title, max)),
                    Some(cut(&n.text, max)),
                ),
                Err(_) => (None, None),
            },
            _ => (None, None),
        }
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A conversation's kind name, as the webhook says it.
fn kind_name(conv: ConvId) -> &'static str {
    match conv.kind() {
        ConvKind::Direct => "direct",
        ConvKind::Group => "group",
        ConvKind::System => "system",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_cut_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("hi", 10), "hi");
    }
}
