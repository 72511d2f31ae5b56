//! The jobs' registry: one job per id (a repeat returns it, a failed one is run again),
//! running jobs bounded, the history trimmed to the newest finished.

use super::*;

fn notice(text: &str) -> Notice {
    Notice {
        title: String::new(),
        text: text.into(),
        content_type: "text/plain".into(),
    }
}

fn registry(running_max: usize, history_max: usize) -> Notifications {
    Notifications::new(NotificationsConfig {
        jobs_running_max: running_max,
        history_max,
        ..NotificationsConfig::default()
    })
}

#[test]
fn an_id_names_one_job_and_other_content_under_it_conflicts() {
    let n = registry(4, 10);
    let (job, how) = n
        .register(
            "a".into(),
            "admin:x".into(),
            notice("hi"),
            &Audience::All,
            3,
        )
        .unwrap();
    assert_eq!(how, Registered::New);
    let (again, how) = n
        .register(
            "a".into(),
            "admin:y".into(),
            notice("hi"),
            &Audience::All,
            3,
        )
        .unwrap();
    assert!(
        how == Registered::Repeat && Arc::ptr_eq(&job, &again),
        "the same job back"
    );
    assert_eq!(
        n.register("a".into(), "x".into(), notice("other"), &Audience::All, 3)
            .unwrap_err(),
        StartError::IdConflict
    );
    let to_users = Audience::Users(vec![1]);
    assert_eq!(
        n.register("a".into(), "x".into(), notice("hi"), &to_users, 1)
            .unwrap_err(),
        StartError::IdConflict
    );
}

#[test]
fn an_id_sent_again_to_other_users_conflicts_and_to_the_same_repeats() {
    let n = registry(4, 10);
    let to = |users: &[UserId]| Audience::Users(users.to_vec());
    let (job, _) = n
        .register("a".into(), "x".into(), notice("hi"), &to(&[1, 2]), 2)
        .unwrap();
    n.finished(&job, Ok(()));
    for other in [&[1][..], &[1, 3], &[1, 2, 3], &[3]] {
        assert_eq!(
            n.repeat_of("a", &notice("hi"), &to(other)).unwrap_err(),
            StartError::IdConflict,
            "{other:?}"
        );
        assert_eq!(
            n.register("a".into(), "x".into(), notice("hi"), &to(other), 1)
                .unwrap_err(),
            StartError::IdConflict
        );
    }
    // The same users in another order, or named twice, are the same recipients.
    let (same, how) = n
        .register("a".into(), "x".into(), notice("hi"), &to(&[2, 1, 2]), 2)
        .unwrap();
    assert!(how == Registered::Repeat && Arc::ptr_eq(&same, &job));
}

#[test]
fn running_jobs_are_bounded_and_history_keeps_the_newest_finished() {
    let n = registry(2, 2);
    let start = |id: &str| {
        n.register(id.into(), "x".into(), notice(id), &Audience::All, 1)
            .map(|(job, _)| job)
    };
    let a = start("a").unwrap();
    let b = start("b").unwrap();
    assert_eq!(start("c").unwrap_err(), StartError::Busy(2));
    n.finished(&a, Ok(()));
    let c = start("c").unwrap();
    assert_eq!(
        n.page(u64::MAX, 10).len(),
        2,
        "a, finished and oldest, is forgotten"
    );
    assert!(n.get("a").is_none());
    n.finished(&b, Err("x".into()));
    n.finished(&c, Ok(()));
    let page: Vec<String> = n.page(u64::MAX, 10).iter().map(|j| j.id.clone()).collect();
    assert_eq!(page, ["c", "b"], "newest first");
    assert_eq!(n.get("b").unwrap().progress().state, JobState::Failed);
    let after_c: Vec<String> = n.page(c.seq, 10).iter().map(|j| j.id.clone()).collect();
    assert_eq!(after_c, ["b"]);
}

#[test]
fn a_failed_jobs_id_runs_it_again_and_a_done_ones_does_not() {
    let n = registry(1, 10);
    let start =
        |id: &str, text: &str| n.register(id.into(), "x".into(), notice(text), &Audience::All, 1);
    let (a, _) = start("a", "hi").unwrap();
    n.finished(&a, Err("commit failed".into()));
    assert_eq!(start("a", "other").unwrap_err(), StartError::IdConflict);
    assert!(
        n.repeat_of("a", &notice("hi"), &Audience::All)
            .unwrap()
            .is_none()
    );
    let (again, how) = start("a", "hi").unwrap();
    assert_eq!(how, Registered::Rerun);
    assert!(!Arc::ptr_eq(&a, &again), "a new run");
    assert_eq!(again.progress().state, JobState::Running);
    assert!(Arc::ptr_eq(&n.get("a").unwrap(), &again));
    let page: Vec<u64> = n.page(u64::MAX, 10).iter().map(|j| j.seq).collect();
    assert_eq!(page, [again.seq], "the failed run's row made way");
    // While it runs, or once done, the id is a repeat again.
    let (same, how) = start("a", "hi").unwrap();
    assert!(how == Registered::Repeat && Arc::ptr_eq(&same, &again));
    n.finished(&again, Ok(()));
    assert!(
        n.repeat_of("a", &notice("hi"), &Audience::All)
            .unwrap()
            .is_some()
    );
    assert_eq!(start("a", "hi").unwrap().1, Registered::Repeat);
    // A rerun takes a running slot like any job.
    let (b, _) = start("b", "hi").unwrap();
    n.finished(&b, Err("x".into()));
    let (_c, _) = start("c", "hi").unwrap();
    assert_eq!(start("b", "hi").unwrap_err(), StartError::Busy(1));
}
