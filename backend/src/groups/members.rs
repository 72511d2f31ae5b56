//! Who is in a group: invite, join (by policy), approve or reject, leave, remove. Each change is
//! one event in the group's log, in the same commit as the rows it changes; delivery applies
//! the online-index change around the event (`GroupDone::joined` / `left`).

use prost::Message;
use ringchat_proto::v1::{self, ErrorCode, GroupEventKind as Kind, GroupJoinState as State};

use super::event;
use super::ops::{Acting, GroupDone, dissolved, not_found, refused_by, result};
use super::reads::snapshot;
use super::roles::{Action, Verdict, verdict};
use super::sequencer::UserSlot;
use crate::accounts::Refusal;
use crate::messaging::writer::Writer;
use crate::store::{
    ApplicationRecord, ConvId, GroupRole, JoinPolicy, MemberRecord, UserGroupRecord, UserId,
};
use crate::time::now_ms;

impl Writer {
    /// Adds users as members after their event at `seq` (visible from it, or from 1 when the
    /// group shows its history), dropping their applications, and counts them by read cursor
    /// (`load_for_count` came first for each). Their read cursors start right before the event:
    /// nothing from before they joined is unread (or an unread mention) for them.
    /// `mutes` (from `carried_mutes`, in the same order): a returning user's mute. `added`
    /// (the same order): someone else put the user in, it never asked (`UserGroupRecord`);
    /// under a carried mute the user's row keeps what it said.
    fn add_members(
        &mut self,
        a: &mut Acting,
        seq: u64,
        users: &[(UserId, UserSlot, bool)],
        mutes: &[u64],
        added: &[bool],
    ) {
        let from = if a.record.history_visible { 1 } else { seq };
        let now = now_ms();
        for (i, (user, slot, applied)) in users.iter().enumerate() {
            let muted_until_ms = mutes.get(i).copied().unwrap_or(0);
            let member = MemberRecord {
                role: GroupRole::Member,
                joined_ms: now,
                visible_from_seq: from,
                muted_until_ms,
            };
            self.groups.put_member(a.g, *user, Some(member));
            // Put back in under the mute it left with, the user stays as it came in before:
            // else a second account's invitation would let a user who joined itself hide the
            // group at once (`group_leave`) and come back unmuted.
            let added = added.get(i).copied().unwrap_or(false)
                && (muted_until_ms == 0 || slot.record.is_some_and(|r| r.added));
            let row = UserGroupRecord {
                visible_from_seq: from,
                left_seq: 0,
                notify_muted: slot.record.is_some_and(|r| r.notify_muted),
                added,
            };
            self.groups.put_user_group(*user, a.g, slot, Some(row));
            let before_join = seq.saturating_sub(1);
            if self.row(a.g, *user).cursor.read_seq < before_join {
                self.mark_own_message_read(a.g, *user, before_join);
            }
            self.count_member_in(a.g, *user);
            if *applied {
                self.groups.put_application(a.g, *user, None);
                a.record.application_count = a.record.application_count.saturating_sub(1);
            }
        }
        a.record.member_count += users.len() as u32;
    }

    /// Mutes outlive leaving: a user muted when it left or was removed is muted again, until
    /// the same time, when it comes back (its LEFT / REMOVED event keeps the time). Reads only.
    fn carried_mutes(
        &self,
        g: ConvId,
        users: &[(UserId, UserSlot, bool)],
    ) -> Result<Vec<u64>, Refusal> {
        users
            .iter()
            .map(|(user, slot, _)| self.carried_mute(g, *user, slot))
            .collect()
    }

    /// The end of the mute `user` left `g` under, if it has not passed (else 0).
    fn carried_mute(&self, g: ConvId, user: UserId, slot: &UserSlot) -> Result<u64, Refusal> {
        Ok(self.how_left(g, user, slot)?.1)
    }

    /// How `user` left `g`: its event's kind (LEFT, REMOVED; `None` while a member) and the end
    /// of the mute it left under, if that has not passed (else 0).
    fn how_left(
        &self,
        g: ConvId,
        user: UserId,
        slot: &UserSlot,
    ) -> Result<(Option<Kind>, u64), Refusal> {
        let left_seq = slot.record.as_ref().map_or(0, |r| r.left_seq);
        let (mut kind, mut until) = (None, 0);
        if left_seq > 0
            && let Some(m) = self.message_at(g, left_seq)?
            && let Ok(ev) = v1::GroupEvent::decode(m.content.as_ref())
            && let Some(i) = ev.user_ids.iter().position(|u| *u == user)
        {
            kind = Kind::try_from(ev.kind).ok();
            until = ev.muted_until_ms.get(i).copied().unwrap_or(0);
        }
        Ok((kind, if until > now_ms() { until } else { 0 }))
    }

    /// The LEFT / REMOVED event of `users` leaving `a`'s group (or the DISSOLVED of its last
    /// member leaving), with the mutes they leave under and the group as it stands once they
    /// are out: what they keep seeing of it (`reads.rs` `former_snapshot`).
    fn leaving_event(
        kind: Kind,
        actor: UserId,
        a: &Acting,
        users: &[(UserId, MemberRecord, UserSlot)],
    ) -> v1::GroupEvent {
        let mut ev = event(kind, actor, users.iter().map(|(u, _, _)| *u).collect());
        let now = now_ms();
        if users.iter().any(|(_, m, _)| m.muted_until_ms > now) {
            ev.muted_until_ms = users.iter().map(|(_, m, _)| m.muted_until_ms).collect();
        }
        let mut after = snapshot(&a.record);
        after.member_count = after.member_count.saturating_sub(users.len() as u32);
        after.dissolved |= kind == Kind::Dissolved;
        ev.group = Some(after);
        ev
    }

    /// Takes members out after their event at `seq`: their rows keep the history up to it
    /// (`load_for_count` came first for each).
    fn drop_members(
        &mut self,
        a: &mut Acting,
        seq: u64,
        users: &[(UserId, MemberRecord, UserSlot)],
    ) {
        for (user, member, slot) in users {
            self.groups.put_member(a.g, *user, None);
            self.count_member_out(a.g, *user);
            if member.role == GroupRole::Admin {
                a.record.admin_count = a.record.admin_count.saturating_sub(1);
            }
            let row = UserGroupRecord {
                visible_from_seq: member.visible_from_seq,
                left_seq: seq,
                notify_muted: slot.record.is_some_and(|r| r.notify_muted),
                added: slot.record.is_some_and(|r| r.added),
            };
            self.groups.put_user_group(*user, a.g, slot, Some(row));
        }
        a.record.member_count = a.record.member_count.saturating_sub(users.len() as u32);
    }

    fn full(&self, a: &Acting, adding: usize) -> bool {
        a.record.member_count as usize + adding > self.groups.limits.members_max as usize
    }

    pub(super) fn too_many_groups(&self, slot: &UserSlot) -> Option<Refusal> {
        let max = self.groups.limits.per_user_max;
        (slot.record.is_none() && slot.count >= max).then(|| {
            Refusal::new(
                ErrorCode::TooManyGroups,
                format!("you are in {max} groups: leave one first"),
            )
        })
    }

    fn group_full(&self) -> Refusal {
        Refusal::new(
            ErrorCode::GroupFull,
            format!("the group has {} members", self.groups.limits.members_max),
        )
    }

    pub(super) fn group_invite(
        &mut self,
        actor: UserId,
        g: ConvId,
        users: Vec<UserId>,
    ) -> Result<GroupDone, Refusal> {
        let mut a = self.acting(g, actor)?;
        let v = verdict(a.me.role, Action::Invite(a.record.join_policy));
        refused_by(v, "invite under this group's join policy")?;
        let mut results = Vec::new();
        let mut adding = Vec::new();
        let mut added = Vec::new();
        for user in users {
            if self.groups.member(g, user)?.is_some() {
                continue;
            }
            let slot = self.groups.user_slot(user, g)?;
            if let Err(refusal) = self.check_addable(actor, user, &slot, false)? {
                results.push(result(user, refusal.code));
                continue;
            }
            let application = self.groups.application(g, user)?;
            let applied = application.is_some();
            if v == Verdict::AsApplication && applied {
                continue;
            }
            self.load_for_count(g, user)?;
            // Unless the user's own application was pending: then it asked.
            added.push(application.is_none_or(|a| a.inviter != 0));
            adding.push((user, slot, applied));
        }
        let mut done = GroupDone::new(g);
        if v == Verdict::AsApplication {
            // Members' invitations fill at most half the queue (rounded up): the rest stays
            // for users who ask themselves, so one member cannot shut the door.
            let max = (self.groups.limits.applications_max as usize).div_ceil(2);
            let room = max.saturating_sub(a.record.application_count as usize);
            for (user, _, _) in adding.drain(room.min(adding.len())..) {
                results.push(result(user, ErrorCode::TooManyApplications));
            }
            if adding.is_empty() {
                return Ok(done.ok(0, State::Pending, results));
            }
            let now = now_ms();
            for (user, _, _) in &adding {
                let app = ApplicationRecord {
                    message: format!("invited by {actor}"),
                    sent_ms: now,
                    inviter: actor,
                };
                self.groups.put_application(g, *user, Some(app));
            }
            a.record.application_count += adding.len() as u32;
            let ids = adding.iter().map(|(u, _, _)| *u).collect();
            let seq =
                self.append_event(&mut a, &mut done, actor, &event(Kind::Applied, actor, ids));
            self.groups.put_group(g, a.record);
            return Ok(done.ok(seq, State::Pending, results));
        }
        let max = self.groups.limits.members_max as usize;
        let room = max.saturating_sub(a.record.member_count as usize);
        for (user, _, _) in adding.drain(room.min(adding.len())..) {
            results.push(result(user, ErrorCode::GroupFull));
        }
        added.truncate(adding.len());
        if adding.is_empty() {
            return Ok(done.ok(0, State::Joined, results));
        }
        let ids: Vec<UserId> = adding.iter().map(|(u, _, _)| *u).collect();
        let mutes = self.carried_mutes(g, &adding)?;
        let seq = self.append_event(
            &mut a,
            &mut done,
            actor,
            &event(Kind::Invited, actor, ids.clone()),
        );
        self.add_members(&mut a, seq, &adding, &mutes, &added);
        done.joined = ids;
        self.groups.put_group(g, a.record);
        Ok(done.ok(seq, State::Joined, results))
    }

    pub(super) fn group_join(
        &mut self,
        user: UserId,
        g: ConvId,
        message: String,
    ) -> Result<GroupDone, Refusal> {
        let record = self.groups.group(g)?.ok_or_else(not_found)?;
        if record.dissolved_seq != 0 {
            return Err(dissolved());
        }
        let mut done = GroupDone::new(g);
        if self.groups.member(g, user)?.is_some() {
            return Ok(done.ok(0, State::Joined, Vec::new()));
        }
        if record.join_policy == JoinPolicy::InviteOnly {
            return Err(Refusal::new(
                ErrorCode::JoinNotAllowed,
                "this group takes members by invitation only",
            ));
        }
        let slot = self.groups.user_slot(user, g)?;
        if let Some(refusal) = self.too_many_groups(&slot) {
            return Err(refusal);
        }
        let applied = self.groups.application(g, user)?.is_some();
        let head = self.conv(g)?;
        let mut a = Acting {
            g,
            record,
            me: MemberRecord {
                role: GroupRole::Member,
                joined_ms: 0,
                visible_from_seq: 0,
                muted_until_ms: 0,
            },
            head,
        };
        if a.record.join_policy == JoinPolicy::Approval {
            if applied {
                return Ok(done.ok(0, State::Pending, Vec::new()));
            }
            let max = self.groups.limits.applications_max;
            if a.record.application_count >= max {
                return Err(Refusal::new(
                    ErrorCode::TooManyApplications,
                    format!("the group has {max} pending applications"),
                ));
            }
            let app = ApplicationRecord {
                message,
                sent_ms: now_ms(),
                inviter: 0,
            };
            self.groups.put_application(g, user, Some(app));
            a.record.application_count += 1;
            let seq = self.append_event(
                &mut a,
                &mut done,
                user,
                &event(Kind::Applied, user, vec![user]),
            );
            self.groups.put_group(g, a.record);
            return Ok(done.ok(seq, State::Pending, Vec::new()));
        }
        if self.full(&a, 1) {
            return Err(self.group_full());
        }
        // Still nothing changed: an application above returned.
        self.load_for_count(g, user)?;
        let joining = [(user, slot, applied)];
        let mutes = self.carried_mutes(g, &joining)?;
        let seq = self.append_event(
            &mut a,
            &mut done,
            user,
            &event(Kind::Joined, user, vec![user]),
        );
        self.add_members(&mut a, seq, &joining, &mutes, &[false]);
        done.joined = vec![user];
        self.groups.put_group(g, a.record);
        Ok(done.ok(seq, State::Joined, Vec::new()))
    }

    pub(super) fn group_approve(
        &mut self,
        actor: UserId,
        g: ConvId,
        user: UserId,
        accept: bool,
    ) -> Result<GroupDone, Refusal> {
        let mut a = self.acting(g, actor)?;
        refused_by(verdict(a.me.role, Action::Approve), "answer applications")?;
        let Some(application) = self.groups.application(g, user)? else {
            return Err(Refusal::new(ErrorCode::NotFound, "no such application"));
        };
        let mut done = GroupDone::new(g);
        if !accept || self.groups.member(g, user)?.is_some() {
            self.groups.put_application(g, user, None);
            a.record.application_count = a.record.application_count.saturating_sub(1);
            let mut seq = 0;
            if !accept {
                seq = self.append_event(
                    &mut a,
                    &mut done,
                    actor,
                    &event(Kind::Rejected, actor, vec![user]),
                );
                done.also = vec![user];
            }
            self.groups.put_group(g, a.record);
            return Ok(done.ok(seq, State::None, Vec::new()));
        }
        // Checked now, not when it was filed: the user's blocks, policy and list may have
        // changed since. A user who asked is checked against whoever approves (blocks only);
        // a member's invitation against the inviter too, as the user's policy is (the user
        // never asked).
        let slot = self.groups.user_slot(user, g)?;
        match application.inviter {
            0 => self.check_addable(actor, user, &slot, true)??,
            inviter => {
                // Told to the approver: whose block (or policy) it was is not its business.
                self.check_addable(inviter, user, &slot, false)?
                    .map_err(|r| match r.code {
                        ErrorCode::NotAllowed => Refusal::new(
                            r.code,
                            "the user may not be added by the member who invited them",
                        ),
                        _ => r,
                    })?;
                if inviter != actor {
                    self.check_addable(actor, user, &slot, true)??;
                }
            }
        }
        self.load_for_count(g, user)?;
        if self.full(&a, 1) {
            return Err(self.group_full());
        }
        let joining = [(user, slot, true)];
        let mutes = self.carried_mutes(g, &joining)?;
        let seq = self.append_event(
            &mut a,
            &mut done,
            actor,
            &event(Kind::Joined, actor, vec![user]),
        );
        self.add_members(&mut a, seq, &joining, &mutes, &[application.inviter != 0]);
        done.joined = vec![user];
        self.groups.put_group(g, a.record);
        Ok(done.ok(seq, State::Joined, Vec::new()))
    }

    pub(super) fn group_leave(&mut self, user: UserId, g: ConvId) -> Result<GroupDone, Refusal> {
        let slot = self.groups.user_slot(user, g)?;
        let member = self.groups.member(g, user)?;
        let mut done = GroupDone::new(g);
        let Some(member) = member else {
            // No longer a member: leaving again hides the group from the user's lists. Not
            // while the mute it left under runs: its row is what carries the mute back, so
            // that leaving sheds no mute.
            let Some(row) = slot.record else {
                return Err(not_found());
            };
            // Unless the group is dissolved (it takes nobody back), removed the user, or put
            // it in without its asking (`UserGroupRecord::added`): such a user shed nothing
            // by its own doing, and the list is the user's own, not for a stranger to pin
            // (each row counts toward `per_user_max`; anyone may add anyone, and mute them
            // for `mute_max_s`). A return after hiding is unmuted; the group's admins may
            // mute again.
            let dissolved = self.groups.gate(g)?.is_none_or(|r| r.dissolved_seq != 0);
            let muted_until = if dissolved || row.added {
                0
            } else {
                match self.how_left(g, user, &slot)? {
                    (Some(Kind::Removed), _) => 0,
                    (_, until) => until,
                }
            };
            if muted_until > 0 {
                return Err(Refusal {
                    code: ErrorCode::Muted,
                    message: "a group you left muted stays listed until the mute ends".into(),
                    retry_after_ms: muted_until.saturating_sub(now_ms()).max(1),
                });
            }
            self.groups.put_user_group(user, g, &slot, None);
            return Ok(done.ok(0, State::None, Vec::new()));
        };
        let record = self.groups.group(g)?.ok_or_else(not_found)?;
        let head = self.conv(g)?;
        self.load_for_count(g, user)?;
        let mut a = Acting {
            g,
            record,
            me: member,
            head,
        };
        if a.record.dissolved_seq != 0 {
            // Nothing new is written to a dissolved group's log: the member goes, and the
            // group leaves the user's lists.
            self.groups.put_member(g, user, None);
            self.count_member_out(g, user);
            a.record.member_count = a.record.member_count.saturating_sub(1);
            if member.role == GroupRole::Admin {
                a.record.admin_count = a.record.admin_count.saturating_sub(1);
            }
            self.groups.put_user_group(user, g, &slot, None);
            done.left = vec![user];
            self.groups.put_group(g, a.record);
            return Ok(done.ok(0, State::None, Vec::new()));
        }
        let last = a.record.member_count <= 1;
        let kind = match verdict(member.role, Action::Leave) {
            Verdict::Refused(ErrorCode::OwnerMustTransfer) if last => Kind::Dissolved,
            Verdict::Refused(code) => {
                return Err(Refusal::new(
                    code,
                    "transfer the group to another member before leaving, or dissolve it",
                ));
            }
            Verdict::Allowed | Verdict::AsApplication => Kind::Left,
        };
        let leaving = [(user, member, slot)];
        let ev = Self::leaving_event(kind, user, &a, &leaving);
        let seq = self.append_event(&mut a, &mut done, user, &ev);
        if kind == Kind::Dissolved {
            a.record.dissolved_seq = seq;
        }
        self.drop_members(&mut a, seq, &leaving);
        done.left = vec![user];
        self.groups.put_group(g, a.record);
        Ok(done.ok(seq, State::None, Vec::new()))
    }

    pub(super) fn group_remove(
        &mut self,
        actor: UserId,
        g: ConvId,
        users: Vec<UserId>,
    ) -> Result<GroupDone, Refusal> {
        let mut a = self.acting(g, actor)?;
        refused_by(
            match verdict(a.me.role, Action::Remove(GroupRole::Member)) {
                Verdict::Refused(_) => Verdict::Refused(ErrorCode::Forbidden),
                v => v,
            },
            "remove members",
        )?;
        let mut results = Vec::new();
        let mut removing = Vec::new();
        for user in users {
            let Some(member) = self.groups.member(g, user)? else {
                continue;
            };
            if let Verdict::Refused(code) = verdict(a.me.role, Action::Remove(member.role)) {
                results.push(result(user, code));
                continue;
            }
            self.load_for_count(g, user)?;
            removing.push((user, member, self.groups.user_slot(user, g)?));
        }
        let mut done = GroupDone::new(g);
        if removing.is_empty() {
            return Ok(done.ok(0, State::Joined, results));
        }
        let ids: Vec<UserId> = removing.iter().map(|(u, _, _)| *u).collect();
        let ev = Self::leaving_event(Kind::Removed, actor, &a, &removing);
        let seq = self.append_event(&mut a, &mut done, actor, &ev);
        self.drop_members(&mut a, seq, &removing);
        done.left = ids;
        self.groups.put_group(g, a.record);
        Ok(done.ok(seq, State::Joined, results))
    }
}
