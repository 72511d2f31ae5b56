//! `scylla:HOST:PORT[,HOST:PORT…][/KEYSPACE]` as `--from`/`--to`: the hosts and keyspace come
//! from the spec, the rest of `[storage.scylla]` from the environment variables that set it
//! for a server (`RINGCHAT_STORAGE__SCYLLA__…`), so credentials stay out of the command line.
//! The result is checked as `check-config` checks the section.

use crate::config::ScyllaConfig;

const ENV: &str = "RINGCHAT_STORAGE__SCYLLA__";

/// The hosts and keyspace of what follows `scylla:`.
pub(super) fn split_hosts(rest: &str) -> Result<(Vec<String>, String), String> {
    let (hosts, keyspace) = match rest.split_once('/') {
        Some((hosts, keyspace)) => (hosts, keyspace.to_owned()),
        None => (rest, ScyllaConfig::default().keyspace),
    };
    if keyspace.is_empty() {
        return Err("nothing after the '/' (the keyspace)".into());
    }
    let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    if hosts.iter().any(String::is_empty) {
        return Err("an empty host (hosts are HOST:PORT, separated by ',')".into());
    }
    Ok((hosts, keyspace))
}

/// The section a copy connects with; `env` reads an environment variable.
pub(super) fn config(
    hosts: &[String],
    keyspace: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ScyllaConfig, String> {
    let var = |key: &str| env(&format!("{ENV}{key}")).filter(|v| !v.is_empty());
    let number = |key: &str, default: u64| -> Result<u64, String> {
        match var(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{ENV}{key}={v:?} is not a number")),
        }
    };
    let defaults = ScyllaConfig::default();
    let config = ScyllaConfig {
        hosts: hosts.to_vec(),
        keyspace: keyspace.to_owned(),
        local_datacenter: var("LOCAL_DATACENTER").unwrap_or_default(),
        username: var("USERNAME").unwrap_or_default(),
        password_file: var("PASSWORD_FILE").map(Into::into),
        password: var("PASSWORD").unwrap_or_default(),
        request_timeout_ms: number("REQUEST_TIMEOUT_MS", defaults.request_timeout_ms)?,
        copy_requests_max: usize::try_from(number(
            "COPY_REQUESTS_MAX",
            defaults.copy_requests_max as u64,
        )?)
        .unwrap_or(usize::MAX),
        ..defaults
    };
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(format!(
            "{} (the section's other keys come from {ENV}<KEY> environment variables)",
            problems.join("; ")
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| format!("{ENV}{k}") == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn hosts_and_keyspace_split() {
        assert_eq!(
            split_hosts("a:9042,b:9042/chat").unwrap(),
            (vec!["a:9042".into(), "b:9042".into()], "chat".into())
        );
        assert_eq!(split_hosts("a:9042").unwrap().1, "ringchat");
        assert!(split_hosts("a:9042/").is_err());
        assert!(split_hosts("a:9042,/ks").is_err());
    }

    #[test]
    fn the_rest_of_the_section_comes_from_the_environment_and_is_checked() {
        let hosts = vec!["127.0.0.1:9042".to_owned()];
        let env = env_of(&[
            ("LOCAL_DATACENTER", "dc1"),
            ("USERNAME", "copier"),
            ("PASSWORD", "secret"),
            ("COPY_REQUESTS_MAX", "16"),
        ]);
        let cfg = config(&hosts, "ks", &env).unwrap();
        assert_eq!(
            (cfg.local_datacenter.as_str(), cfg.username.as_str()),
            ("dc1", "copier")
        );
        assert_eq!(
            (cfg.password.as_str(), cfg.copy_requests_max),
            ("secret", 16)
        );

        let err = config(&hosts, "ks", &env_of(&[])).unwrap_err();
        assert!(err.contains("local_datacenter"), "{err}");
        let err = config(&hosts, "bad-name", &env).unwrap_err();
        assert!(err.contains("keyspace"), "{err}");
        let err = config(
            &hosts,
            "ks",
            &env_of(&[("LOCAL_DATACENTER", "dc1"), ("COPY_REQUESTS_MAX", "0")]),
        )
        .unwrap_err();
        assert!(err.contains("copy_requests_max"), "{err}");
        let err = config(
            &hosts,
            "ks",
            &env_of(&[("LOCAL_DATACENTER", "dc1"), ("REQUEST_TIMEOUT_MS", "soon")]),
        )
        .unwrap_err();
        assert!(err.contains("REQUEST_TIMEOUT_MS"), "{err}");
        let err = config(
            &hosts,
            "ks",
            &env_of(&[("LOCAL_DATACENTER", "dc1"), ("USERNAME", "u")]),
        )
        .unwrap_err();
        assert!(err.contains("no password"), "{err}");
    }
}
