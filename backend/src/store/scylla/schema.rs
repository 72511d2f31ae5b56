//! `deploy/scylla/schema.cql`, built in: split into statements, the keyspace statement made
//! from the configuration, the tables applied when the keyspace lacks any of them.

/// The schema file, as operators apply it with `cqlsh -f`.
pub(super) const SCHEMA_CQL: &str = include_str!("../../../../deploy/scylla/schema.cql");

/// The file's statements, comments dropped, in order.
pub(super) fn statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// What a statement of the file is, for applying it to a configured keyspace.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Statement<'a> {
    /// `CREATE KEYSPACE …`: the adapter makes its own from the configuration.
    Keyspace,
    /// `USE …`: the adapter names its keyspace in each statement instead.
    Use,
    /// `CREATE TABLE IF NOT EXISTS name (…)`: the name and the text after it.
    Table { name: &'a str, rest: &'a str },
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS ";

pub(super) fn classify(statement: &str) -> Option<Statement<'_>> {
    if statement.starts_with("CREATE KEYSPACE ") {
        return Some(Statement::Keyspace);
    }
    if statement.starts_with("USE ") {
        return Some(Statement::Use);
    }
    let after = statement.strip_prefix(CREATE_TABLE)?;
    let (name, rest) = after.split_once(' ')?;
    Some(Statement::Table { name, rest })
}

/// The table statements of the schema, qualified with `keyspace`: `(table, statement)`.
pub(super) fn tables(keyspace: &str) -> Vec<(String, String)> {
    statements(SCHEMA_CQL)
        .iter()
        .filter_map(|s| match classify(s) {
            Some(Statement::Table { name, rest }) => Some((
                name.to_owned(),
                format!("{CREATE_TABLE}{keyspace}.{name} {rest}"),
            )),
            _ => None,
        })
        .collect()
}

/// `CREATE KEYSPACE` for the configured keyspace: NetworkTopologyStrategy with `rf` replicas
/// in `datacenter`, tablets off (the file says why).
pub(super) fn create_keyspace(keyspace: &str, datacenter: &str, rf: u32) -> String {
    let dc = datacenter.replace('\'', "''");
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', '{dc}': {rf}}} AND tablets = {{'enabled': false}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_parses_into_the_keyspace_use_and_every_table() {
        let all = statements(SCHEMA_CQL);
        let kinds: Vec<_> = all.iter().map(|s| classify(s)).collect();
        assert!(
            kinds.iter().all(Option::is_some),
            "unknown statement in {all:#?}"
        );
        assert_eq!(kinds[0], Some(Statement::Keyspace));
        assert_eq!(kinds[1], Some(Statement::Use));
        let keyspace = &all[0];
        assert!(keyspace.contains("'NetworkTopologyStrategy'"), "{keyspace}");
        assert!(
            keyspace.contains("tablets = {'enabled': false}"),
            "{keyspace}"
        );
        let names: Vec<String> = tables("ks").into_iter().map(|(n, _)| n).collect();
        for needed in [
            "meta",
            "users",
            "usernames",
            "emails",
            "tokens",
            "user_tokens",
            "messages",
            "conv_meta",
            "cursor_rows",
            "recent",
            "relations",
            "groups",
            "audit",
            "push_tokens",
        ] {
            assert!(
                names.iter().any(|n| n == needed),
                "{needed} not in {names:?}"
            );
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a table twice: {names:?}");
    }

    #[test]
    fn tables_are_qualified_and_comments_are_gone() {
        for (name, statement) in tables("rc_test") {
            assert!(
                statement.starts_with(&format!("CREATE TABLE IF NOT EXISTS rc_test.{name} (")),
                "{statement}"
            );
            assert!(!statement.contains("--"), "{statement}");
            assert!(
                statement.ends_with(')') || statement.contains(" WITH "),
                "{statement}"
            );
        }
        let messages = tables("k")
            .into_iter()
            .find(|(n, _)| n == "messages")
            .unwrap()
            .1;
        assert!(
            messages.contains("PRIMARY KEY ((conv, bucket), seq)"),
            "{messages}"
        );
    }

    #[test]
    fn the_keyspace_statement_quotes_the_datacenter() {
        let cql = create_keyspace("ringchat", "eu'west", 3);
        assert_eq!(
            cql,
            "CREATE KEYSPACE IF NOT EXISTS ringchat WITH replication = {'class': \
             'NetworkTopologyStrategy', 'eu''west': 3} AND tablets = {'enabled': false}"
        );
    }
}
