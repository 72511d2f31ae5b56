//! The group writes, applied by the sequencer to the overlay of the commit group being built.
//! Each change appends its GROUP_EVENT to the group's log in the same commit, so events are
//! ordered with the group's messages and an offline member learns them by Sync.
//!
//! A refusal leaves nothing behind: every read that can fail (users, blocks, rows, the head)
//! comes before the first change to the overlay. Membership ops are in `members.rs`.

use bytes::Bytes;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ContentType, ErrorCode, GroupEventKind as Kind};
use smallvec::SmallVec;

use super::roles::{Action, Verdict, verdict};
use super::sequencer::UserSlot;
use super::{GroupOp, GroupOpKind, encode_event, event, policy_to_wire};
use crate::accounts::Refusal;
use crate::messaging::writer::{Draft, Writer};
use crate::store::{
    ConvId, ConvRecord, GroupRecord, GroupRole, MemberRecord, UserGroupRecord, UserId,
};
use crate::time::now_ms;

/// What a group write did: its reply, the events it appended (indexes into the commit group's
/// messages), and the membership changes delivery applies around them, in order.
#[derive(Debug)]
pub(crate) struct GroupDone {
    pub reply: Body,
    pub group: ConvId,
    pub events: SmallVec<[usize; 2]>,
    /// Members from before the events (they get them).
    pub joined: Vec<UserId>,
    /// Members no more after the events (they get them, and nothing later).
    pub left: Vec<UserId>,
    /// Non-members told of the events too (an applicant whose application was rejected).
    pub also: Vec<UserId>,
}

impl GroupDone {
    pub(super) fn new(group: ConvId) -> Self {
        Self {
            reply: Body::GroupOk(v1::GroupOk {
                conversation_id: group.to_wire(),
                ..v1::GroupOk::default()
            }),
            group,
            events: SmallVec::new(),
            joined: Vec::new(),
            left: Vec::new(),
            also: Vec::new(),
        }
    }

    /// A GroupOk with the last event's seq (0: nothing changed), a state and results.
    pub(super) fn ok(
        mut self,
        event_seq: u64,
        state: v1::GroupJoinState,
        results: Vec<v1::MemberResult>,
    ) -> Self {
        self.reply = Body::GroupOk(v1::GroupOk {
            conversation_id: self.group.to_wire(),
            event_seq,
            state: state as i32,
            results,
        });
        self
    }
}

pub(super) fn not_found() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such group")
}

pub(super) fn dissolved() -> Refusal {
    Refusal::new(
        ErrorCode::GroupDissolved,
        "the group was dissolved: its history stays readable, nothing new is accepted",
    )
}

pub(super) fn refused_by(v: Verdict, what: &str) -> Result<(), Refusal> {
    match v {
        Verdict::Allowed | Verdict::AsApplication => Ok(()),
        Verdict::Refused(code) => Err(Refusal::new(code, format!("your role may not {what}"))),
    }
}

pub(super) fn result(user: UserId, code: ErrorCode) -> v1::MemberResult {
    v1::MemberResult {
        user_id: user,
        code: code as i32,
    }
}

/// The acting member of a live group: its record, the actor's row and the group's head.
pub(super) struct Acting {
    pub g: ConvId,
    pub record: GroupRecord,
    pub me: MemberRecord,
    pub head: ConvRecord,
}

impl Writer {
    pub(crate) fn group_write(&mut self, op: GroupOp) -> Result<GroupDone, Refusal> {
        let GroupOp { actor, kind } = op;
        match kind {
            GroupOpKind::Create {
                name,
                avatar_url,
                intro,
                members,
                join_policy,
                history_visible,
            } => {
                let record = GroupRecord {
                    name,
                    avatar_url,
                    intro,
                    owner: actor,
                    join_policy,
                    history_visible,
                    mute_all: false,
                    member_count: 0,
                    admin_count: 0,
                    application_count: 0,
                    created_ms: now_ms(),
                    dissolved_seq: 0,
                };
                self.group_create(actor, record, members)
            }
            GroupOpKind::Update {
                g,
                name,
                avatar_url,
                intro,
                join_policy,
                history_visible,
                mute_all,
            } => {
                let mut a = self.acting(g, actor)?;
                refused_by(verdict(a.me.role, Action::Update), "change the group")?;
                let mut ev = event(Kind::Updated, actor, Vec::new());
                let r = &mut a.record;
                if let Some(v) = name.filter(|v| *v != r.name) {
                    r.name.clone_from(&v);
                    ev.name = Some(v);
                }
                if let Some(v) = avatar_url.filter(|v| *v != r.avatar_url) {
                    r.avatar_url.clone_from(&v);
                    ev.avatar_url = Some(v);
                }
                if let Some(v) = intro.filter(|v| *v != r.intro) {
                    r.intro.clone_from(&v);
                    ev.intro = Some(v);
                }
                if let Some(v) = join_policy.filter(|v| *v != r.join_policy) {
                    r.join_policy = v;
                    ev.join_policy = Some(policy_to_wire(v) as i32);
                }
                if let Some(v) = history_visible.filter(|v| *v != r.history_visible) {
                    r.history_visible = v;
                    ev.history_visible = Some(v);
                }
                let mute_all = mute_all.filter(|v| *v != r.mute_all);
                let mut done = GroupDone::new(g);
                let mut seq = 0;
                let updated = ev.name.is_some()
                    || ev.avatar_url.is_some()
                    || ev.intro.is_some()
                    || ev.join_policy.is_some()
                    || ev.history_visible.is_some();
                if updated {
                    seq = self.append_event(&mut a, &mut done, actor, &ev);
                }
                if let Some(on) = mute_all {
                    a.record.mute_all = on;
                    let mut ev = event(Kind::MuteAll, actor, Vec::new());
                    ev.until_ms = u64::from(on);
                    seq = self.append_event(&mut a, &mut done, actor, &ev);
                }
                self.groups.put_group(g, a.record);
                Ok(done.ok(seq, v1::GroupJoinState::Joined, Vec::new()))
            }
            GroupOpKind::Invite { g, users } => self.group_invite(actor, g, users),
            GroupOpKind::Join { g, message } => self.group_join(actor, g, message),
            GroupOpKind::Approve { g, user, accept } => self.group_approve(actor, g, user, accept),
            GroupOpKind::Leave { g } => self.group_leave(actor, g),
            GroupOpKind::Remove { g, users } => self.group_remove(actor, g, users),
            GroupOpKind::SetRole { g, user, role } => {
                let mut a = self.acting(g, actor)?;
                let target = self.groups.member(g, user)?.ok_or_else(not_a_member)?;
                refused_by(
                    verdict(a.me.role, Action::SetRole(target.role)),
                    "set roles",
                )?;
                let mut done = GroupDone::new(g);
                if target.role == role {
                    return Ok(done.ok(0, v1::GroupJoinState::Joined, Vec::new()));
                }
                if role == GroupRole::Admin {
                    if a.record.admin_count >= self.groups.limits.admins_max {
                        return Err(Refusal::new(
                            ErrorCode::TooManyAdmins,
                            format!("the group has {} admins", self.groups.limits.admins_max),
                        ));
                    }
                    a.record.admin_count += 1;
                } else {
                    a.record.admin_count = a.record.admin_count.saturating_sub(1);
                }
                self.groups
                    .put_member(g, user, Some(MemberRecord { role, ..target }));
                let mut ev = event(Kind::RoleChanged, actor, vec![user]);
                ev.role = super::role_to_wire(role) as i32;
                let seq = self.append_event(&mut a, &mut done, actor, &ev);
                self.groups.put_group(g, a.record);
                Ok(done.ok(seq, v1::GroupJoinState::Joined, Vec::new()))
            }
            GroupOpKind::Mute { g, user, until_ms } => {
                let mut a = self.acting(g, actor)?;
                let mut done = GroupDone::new(g);
                if user == 0 {
                    refused_by(verdict(a.me.role, Action::Update), "mute everyone")?;
                    let on = until_ms != 0;
                    if a.record.mute_all == on {
                        return Ok(done.ok(0, v1::GroupJoinState::Joined, Vec::new()));
                    }
                    a.record.mute_all = on;
                    let mut ev = event(Kind::MuteAll, actor, Vec::new());
                    ev.until_ms = u64::from(on);
                    let seq = self.append_event(&mut a, &mut done, actor, &ev);
                    self.groups.put_group(g, a.record);
                    return Ok(done.ok(seq, v1::GroupJoinState::Joined, Vec::new()));
                }
                let target = self.groups.member(g, user)?.ok_or_else(not_a_member)?;
                refused_by(
                    verdict(a.me.role, Action::Mute(target.role)),
                    "mute this member",
                )?;
                self.groups.put_member(
                    g,
                    user,
                    Some(MemberRecord {
                        muted_until_ms: until_ms,
                        ..target
                    }),
                );
                let kind = if until_ms == 0 {
                    Kind::Unmuted
                } else {
                    Kind::Muted
                };
                let mut ev = event(kind, actor, vec![user]);
                ev.until_ms = until_ms;
                let seq = self.append_event(&mut a, &mut done, actor, &ev);
                self.groups.put_group(g, a.record);
                Ok(done.ok(seq, v1::GroupJoinState::Joined, Vec::new()))
            }
            GroupOpKind::Transfer { g, user } => {
                let mut a = self.acting(g, actor)?;
                refused_by(verdict(a.me.role, Action::Transfer), "transfer the group")?;
                let target = self.groups.member(g, user)?.ok_or_else(not_a_member)?;
                if target.role == GroupRole::Admin {
                    a.record.admin_count = a.record.admin_count.saturating_sub(1);
                }
                // The old owner stays as an admin (past admins_max if need be: a transfer is
                // never refused for it).
                a.record.admin_count += 1;
                a.record.owner = user;
                let me = MemberRecord {
                    role: GroupRole::Admin,
                    ..a.me
                };
                self.groups.put_member(g, actor, Some(me));
                self.groups.put_member(
                    g,
                    user,
                    Some(MemberRecord {
                        role: GroupRole::Owner,
                        // Nobody may mute an owner, so nobody could lift a mute kept here.
                        muted_until_ms: 0,
                        ..target
                    }),
                );
                let mut done = GroupDone::new(g);
                let ev = event(Kind::OwnerChanged, actor, vec![user]);
                let seq = self.append_event(&mut a, &mut done, actor, &ev);
                self.groups.put_group(g, a.record);
                Ok(done.ok(seq, v1::GroupJoinState::Joined, Vec::new()))
            }
            GroupOpKind::Dissolve { g } => {
                let mut a = self.acting(g, actor)?;
                refused_by(verdict(a.me.role, Action::Dissolve), "dissolve the group")?;
                let mut done = GroupDone::new(g);
                let ev = event(Kind::Dissolved, actor, Vec::new());
                let seq = self.append_event(&mut a, &mut done, actor, &ev);
                a.record.dissolved_seq = seq;
                self.groups.put_group(g, a.record);
                Ok(done.ok(seq, v1::GroupJoinState::Joined, Vec::new()))
            }
            GroupOpKind::OperatorDissolve { g } => self.operator_dissolve(g),
            GroupOpKind::SetNotify { g, muted } => {
                let mine = self.groups.user_slot(actor, g)?;
                let Some(row) = mine.record else {
                    return Err(not_found());
                };
                if row.notify_muted != muted {
                    self.groups.put_user_group(
                        actor,
                        g,
                        &mine,
                        Some(UserGroupRecord {
                            notify_muted: muted,
                            ..row
                        }),
                    );
                }
                Ok(GroupDone::new(g).ok(0, v1::GroupJoinState::Joined, Vec::new()))
            }
        }
    }

    /// The actor as a member of a live group; NOT_FOUND for a non-member, as for no group.
    pub(super) fn acting(&mut self, g: ConvId, actor: UserId) -> Result<Acting, Refusal> {
        let record = self.groups.group(g)?.ok_or_else(not_found)?;
        let me = self.groups.member(g, actor)?.ok_or_else(not_found)?;
        if record.dissolved_seq != 0 {
            return Err(dissolved());
        }
        let head = self.conv(g)?;
        Ok(Acting {
            g,
            record,
            me,
            head,
        })
    }

    /// Appends a GROUP_EVENT by `actor` to the group's log; returns its seq.
    pub(super) fn append_event(
        &mut self,
        a: &mut Acting,
        done: &mut GroupDone,
        actor: UserId,
        ev: &v1::GroupEvent,
    ) -> u64 {
        let index = self.append_server_message(
            a.g,
            &mut a.head,
            actor,
            ContentType::GroupEvent as i32,
            encode_event(ev),
        );
        done.events.push(index);
        a.head.max_seq
    }

    /// Whether `user` (whose row of the group is `slot`) may be added by `adder`: an account,
    /// no block either way, the user's friends-only policy unless they asked to join
    /// (`user_asked`), room in the user's list. The one check for every way in that someone
    /// else decides: create, invite, approve. Reads only: `Ok(Err(refusal))` is that user's
    /// answer.
    pub(super) fn check_addable(
        &mut self,
        adder: UserId,
        user: UserId,
        slot: &UserSlot,
        user_asked: bool,
    ) -> Result<Result<(), Refusal>, Refusal> {
        if !self.user_exists(user)? {
            return Ok(Err(Refusal::new(
                ErrorCode::UserNotFound,
                format!("no user {user}"),
            )));
        }
        let fresh = self.ownership.is_some();
        if let Err(refusal) = self
            .contacts
            .may_add_to_group(adder, user, user_asked, fresh)
        {
            if refusal.code == ErrorCode::NotAllowed {
                return Ok(Err(refusal));
            }
            return Err(refusal);
        }
        if let Some(refusal) = self.too_many_groups(slot) {
            return Ok(Err(Refusal::new(
                refusal.code,
                "the user is in too many groups",
            )));
        }
        Ok(Ok(()))
    }

    fn group_create(
        &mut self,
        owner: UserId,
        mut record: GroupRecord,
        users: Vec<UserId>,
    ) -> Result<GroupDone, Refusal> {
        let per_user_max = self.groups.limits.per_user_max;
        if self.groups.user_group_count(owner)? >= per_user_max {
            return Err(Refusal::new(
                ErrorCode::TooManyGroups,
                format!("you are in {per_user_max} groups: leave one first"),
            ));
        }
        let mut results = Vec::new();
        let mut added = vec![owner];
        for user in users {
            let slot = self.groups.new_slot(user)?;
            match self.check_addable(owner, user, &slot, false)? {
                Ok(()) if added.len() as u32 >= self.groups.limits.members_max => {
                    results.push(result(user, ErrorCode::GroupFull));
                }
                Ok(()) => added.push(user),
                Err(refusal) => results.push(result(user, refusal.code)),
            }
        }
        let mut slots = Vec::with_capacity(added.len());
        for user in &added {
            slots.push(self.groups.new_slot(*user)?);
        }
        let g = self.take_group_id()?;
        let now = now_ms();
        record.member_count = added.len() as u32;
        let mut a = Acting {
            g,
            record,
            me: MemberRecord {
                role: GroupRole::Owner,
                joined_ms: now,
                visible_from_seq: 1,
                muted_until_ms: 0,
            },
            head: ConvRecord::default(),
        };
        let mut done = GroupDone::new(g);
        let ev = event(Kind::Created, owner, added[1..].to_vec());
        let seq = self.append_event(&mut a, &mut done, owner, &ev);
        for (user, slot) in added.iter().zip(slots) {
            let role = if *user == owner {
                GroupRole::Owner
            } else {
                GroupRole::Member
            };
            let member = MemberRecord {
                role,
                joined_ms: now,
                visible_from_seq: seq,
                muted_until_ms: 0,
            };
            self.groups.put_member(g, *user, Some(member));
            self.groups.put_user_group(
                *user,
                g,
                &slot,
                Some(UserGroupRecord {
                    visible_from_seq: seq,
                    added: *user != owner,
                    ..UserGroupRecord::default()
                }),
            );
        }
        self.groups.new_reads(g, added.len() as u32);
        done.joined = added;
        let group = super::reads::group_view(
            g,
            super::reads::snapshot(&a.record),
            a.record.created_ms,
            Some(&a.me),
            None,
            a.head.max_seq,
        );
        self.groups.put_group(g, a.record);
        done.reply = Body::GroupCreated(v1::GroupCreated {
            group: Some(group),
            event_seq: seq,
            results,
        });
        Ok(done)
    }

    /// Appends a server-made message (an event) to a conversation whose head the caller read;
    /// returns its index in the commit group's messages.
    pub(crate) fn append_server_message(
        &mut self,
        conv: ConvId,
        head: &mut ConvRecord,
        from: UserId,
        content_type: i32,
        content: Bytes,
    ) -> usize {
        self.push_message(
            conv,
            head,
            Draft {
                from,
                client_msg_id: String::new(),
                content_type,
                content,
                mentions: None,
            },
        )
    }
}

pub(super) fn not_a_member() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such member")
}
