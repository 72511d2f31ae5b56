//! The run's setup, not measured: members signed up and logged in, the group made.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ringchat_proto::Body;
use ringchat_proto::v1;

use super::{GroupConfig, SETUP_CONCURRENCY, SETUP_SETTLE_TIMEOUT, Shared, member_name};
use crate::client::Client;
use crate::scenario::{asking, run_id};
use crate::signup::{Identity, Refusals, sign_up_tcp};

/// Signs up and logs in this thread's online members: (member number, client, user id). Those
/// logged in ping while the rest sign up.
pub(super) async fn log_in_online(
    cfg: &GroupConfig,
    owned: &[usize],
    refusals: &Refusals,
) -> anyhow::Result<Vec<(usize, Client, u64)>> {
    let limit = Rc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::with_capacity(owned.len());
    for &n in owned {
        let (addr, limit, name) = (cfg.addr, Rc::clone(&limit), member_name(cfg, n));
        let (password, refusals) = (cfg.password.clone(), refusals.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = limit.acquire().await?;
            let (client, ok) =
                sign_up_tcp(addr, None, &Identity::bench(&name, &password), &refusals).await?;
            anyhow::Ok((n, client, ok.user_id))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (member, failed) in crate::heartbeat::gather(tasks, |m| Some(&mut m.1)).await? {
        if let Some(e) = failed {
            return Err(e);
        }
        out.push(member);
    }
    Ok(out)
}

/// On the main thread, while the load threads wait at `ready`: signs up the offline members,
/// creates the group with everyone, and waits until every online member has seen the last setup
/// event. Always passes `ready` (so the load threads never wait forever) and returns the group.
pub(super) async fn set_up_group(cfg: &GroupConfig, shared: &Shared) -> anyhow::Result<u64> {
    let refusals = &shared.setup_refusals;
    let offline = sign_up_offline(cfg, refusals).await;
    let name = format!("{}gowner", cfg.user_prefix);
    let owner = sign_up_tcp(
        cfg.addr,
        None,
        &Identity::bench(&name, &cfg.password),
        refusals,
    )
    .await;
    shared.ready.wait();
    let (offline, (mut owner, _)) = (offline?, owner?);
    let mut ids: Vec<u64> = {
        let mut online = shared.ids.lock().expect("not poisoned").clone();
        if online.len() != cfg.online {
            bail!(
                "only {} of {} online members logged in",
                online.len(),
                cfg.online
            );
        }
        online.sort_unstable();
        online.into_iter().map(|(_, id)| id).collect()
    };
    ids.extend(offline);
    let mut batches = ids.chunks(cfg.invite_batch);
    let first = batches.next().unwrap_or_default().to_vec();
    let create = Body::GroupCreate(v1::GroupCreate {
        name: format!("bench {:x}", run_id() & 0xffff_ffff),
        member_ids: first,
        join_policy: v1::JoinPolicy::Open.into(),
        ..Default::default()
    });
    // A server with its default `groups.writes_per_min_max` makes a big group's setup wait.
    let mut retries = 0;
    let (conversation_id, mut last_seq) =
        match asking(&mut owner, 1, &mut retries, || create.clone()).await? {
            Body::GroupCreated(c) => {
                if let Some(r) = c.results.first() {
                    bail!("GroupCreate refused user {}: code {}", r.user_id, r.code);
                }
                let group = c.group.context("GroupCreated without its group")?;
                (group.conversation_id, c.event_seq)
            }
            other => bail!("GroupCreate: {other:?}"),
        };
    for batch in batches {
        let invite = Body::GroupInvite(v1::GroupInvite {
            conversation_id,
            user_ids: batch.to_vec(),
        });
        match asking(&mut owner, 1, &mut retries, || invite.clone()).await? {
            Body::GroupOk(ok) => {
                if let Some(r) = ok.results.first() {
                    bail!("GroupInvite refused user {}: code {}", r.user_id, r.code);
                }
                last_seq = last_seq.max(ok.event_seq);
            }
            other => bail!("GroupInvite: {other:?}"),
        }
    }
    // The owner hands the group to member 0 and leaves: the group is exactly the M members,
    // and any of them may be online.
    let transfer = Body::GroupTransfer(v1::GroupTransfer {
        conversation_id,
        user_id: ids[0],
    });
    match asking(&mut owner, 1, &mut retries, || transfer.clone()).await? {
        Body::GroupOk(ok) => last_seq = last_seq.max(ok.event_seq),
        other => bail!("GroupTransfer: {other:?}"),
    }
    let leave = Body::GroupLeave(v1::GroupLeave { conversation_id });
    match asking(&mut owner, 1, &mut retries, || leave.clone()).await? {
        Body::GroupOk(ok) => last_seq = last_seq.max(ok.event_seq),
        other => bail!("GroupLeave: {other:?}"),
    }
    shared
        .conversation_id
        .set(conversation_id)
        .expect("set once");
    // The measured phase starts once the setup's events have reached everyone.
    let deadline = Instant::now() + SETUP_SETTLE_TIMEOUT;
    while shared
        .last_seq
        .iter()
        .any(|s| s.load(Ordering::Relaxed) < last_seq)
    {
        if Instant::now() >= deadline {
            bail!(
                "online members did not see the setup's group events within {SETUP_SETTLE_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(conversation_id)
}

/// Signs up (or logs in) the members who stay offline, and returns their ids.
async fn sign_up_offline(cfg: &GroupConfig, refusals: &Refusals) -> anyhow::Result<Vec<u64>> {
    let limit = Rc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::with_capacity(cfg.members - cfg.online);
    for n in cfg.online..cfg.members {
        let (addr, limit, name) = (cfg.addr, Rc::clone(&limit), member_name(cfg, n));
        let (password, refusals) = (cfg.password.clone(), refusals.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = limit.acquire().await?;
            let who = Identity::bench(&name, &password);
            let (_, ok) = sign_up_tcp(addr, None, &who, &refusals).await?;
            anyhow::Ok(ok.user_id)
        }));
    }
    let mut ids = Vec::with_capacity(tasks.len());
    for t in tasks {
        ids.push(t.await??);
    }
    Ok(ids)
}
