-- ringchat's store of record on PostgreSQL, version 1. Applied once by the adapter at open
-- (store/postgres/migrate.rs), in a transaction, under an advisory lock.
--
-- Integers: every u64 of the server is stored as the bigint with the same bits, so direct and
-- group conversation ids read as on the wire and system conversation ids (top bit set) read
-- negative. `recent.conv_order` is the one column whose ordering must follow the u64 order:
-- it holds the id with the top bit flipped.
-- Text keys that are scanned by prefix or in order use COLLATE "C": byte order, as fjall.
-- Nested lists that are only ever read and written whole (a cursor row's device cursors and
-- recent sends, a message's mentions, a read histogram's counts) are postcard bytea, as fjall
-- stores them: no JSON parsing per row on the message path, and one encoding for both stores.

CREATE TABLE counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

CREATE TABLE users (
    user_id       bigint PRIMARY KEY,
    username      text NOT NULL,
    username_key  text COLLATE "C" NOT NULL UNIQUE,
    password_hash text NOT NULL,
    email         text NOT NULL,
    -- NULL when the user has no address: unique only where given.
    email_key     text UNIQUE,
    created_at_ms bigint NOT NULL
);

CREATE TABLE tokens (
    hash          bytea PRIMARY KEY,
    user_id       bigint NOT NULL,
    device_id     text NOT NULL,
    issued_at_ms  bigint NOT NULL,
    expires_at_ms bigint NOT NULL,
    platform      integer NOT NULL,
    last_seen_ms  bigint NOT NULL
);
CREATE INDEX tokens_by_user ON tokens (user_id, hash);

CREATE TABLE messages (
    conv_id          bigint NOT NULL,
    seq              bigint NOT NULL,
    msg_id           bigint NOT NULL,
    from_user        bigint NOT NULL,
    to_user          bigint NOT NULL,
    -- bytea, not text: a client's id may hold any UTF-8, NUL included.
    client_msg_id    bytea NOT NULL,
    content_type     integer NOT NULL,
    -- Emptied when the message is recalled.
    content          bytea NOT NULL,
    server_time_ms   bigint NOT NULL,
    recall_of_seq    bigint NOT NULL,
    -- Seq of the recall event; 0: not recalled.
    recall_event_seq bigint NOT NULL DEFAULT 0,
    -- Group messages: postcard of the mentions; NULL: none.
    mentions         bytea,
    PRIMARY KEY (conv_id, seq)
);

CREATE TABLE cursor_rows (
    conv_id       bigint NOT NULL,
    user_id       bigint NOT NULL,
    delivered_seq bigint NOT NULL,
    read_seq      bigint NOT NULL,
    -- postcard of Vec<RecentSend> and Vec<DeviceCursor>.
    recent_sends  bytea NOT NULL,
    devices       bytea NOT NULL,
    PRIMARY KEY (conv_id, user_id)
);

-- A user's conversations by the hour of their last activity.
CREATE TABLE recent (
    user_id    bigint NOT NULL,
    bucket     bigint NOT NULL,
    conv_order bigint NOT NULL,
    PRIMARY KEY (user_id, bucket, conv_order)
);

CREATE TABLE conv_owners (
    conv_id bigint PRIMARY KEY,
    -- 0: a placeholder a fenced commit group locked; nobody claimed it yet.
    epoch   bigint NOT NULL,
    node    bigint NOT NULL
);

CREATE TABLE relations (
    owner    bigint NOT NULL,
    kind     smallint NOT NULL,
    other    bigint NOT NULL,
    since_ms bigint NOT NULL,
    message  text NOT NULL,
    PRIMARY KEY (owner, kind, other)
);

CREATE TABLE contact_summaries (
    user_id        bigint PRIMARY KEY,
    friends        integer NOT NULL,
    requests_out   integer NOT NULL,
    requests_in    integer NOT NULL,
    blocks         integer NOT NULL,
    request_day    bigint NOT NULL,
    requests_today integer NOT NULL,
    -- NULL: the server's default; 1 everyone, 2 friends only.
    dm_policy      smallint
);

CREATE TABLE profiles (
    user_id        bigint PRIMARY KEY,
    nickname       text NOT NULL,
    avatar_url     text NOT NULL,
    bio            text NOT NULL,
    searchable     boolean,
    updated_ms     bigint NOT NULL,
    hide_last_seen boolean NOT NULL
);

CREATE TABLE groups (
    group_id          bigint PRIMARY KEY,
    name              text NOT NULL,
    -- group_name_key(name): the name index, scanned by prefix.
    name_key          text COLLATE "C" NOT NULL,
    avatar_url        text NOT NULL,
    intro             text NOT NULL,
    owner             bigint NOT NULL,
    -- 0 open, 1 approval, 2 invite only.
    join_policy       smallint NOT NULL,
    history_visible   boolean NOT NULL,
    mute_all          boolean NOT NULL,
    member_count      integer NOT NULL,
    admin_count       integer NOT NULL,
    application_count integer NOT NULL,
    created_ms        bigint NOT NULL,
    dissolved_seq     bigint NOT NULL
);
CREATE INDEX groups_by_name ON groups (name_key, group_id);

CREATE TABLE group_members (
    group_id         bigint NOT NULL,
    user_id          bigint NOT NULL,
    -- 0 member, 1 admin, 2 owner.
    role             smallint NOT NULL,
    joined_ms        bigint NOT NULL,
    visible_from_seq bigint NOT NULL,
    muted_until_ms   bigint NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE user_groups (
    user_id          bigint NOT NULL,
    group_id         bigint NOT NULL,
    visible_from_seq bigint NOT NULL,
    left_seq         bigint NOT NULL,
    notify_muted     boolean NOT NULL,
    PRIMARY KEY (user_id, group_id)
);

CREATE TABLE user_group_counts (
    user_id bigint PRIMARY KEY,
    count   integer NOT NULL
);

CREATE TABLE group_applications (
    group_id bigint NOT NULL,
    user_id  bigint NOT NULL,
    message  text NOT NULL,
    sent_ms  bigint NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

-- user_id 0: @everyone.
CREATE TABLE mentions (
    group_id bigint NOT NULL,
    user_id  bigint NOT NULL,
    seq      bigint NOT NULL,
    PRIMARY KEY (group_id, user_id, seq)
);

CREATE TABLE read_histograms (
    group_id bigint PRIMARY KEY,
    base_seq bigint NOT NULL,
    below    integer NOT NULL,
    -- postcard of the BTreeMap read seq -> members.
    counts   bytea NOT NULL
);

CREATE TABLE audit (
    id        bigint PRIMARY KEY,
    at_ms     bigint NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,
    from_addr text NOT NULL,
    detail    text NOT NULL
);

CREATE TABLE user_flags (
    user_id        bigint PRIMARY KEY,
    disabled_at_ms bigint NOT NULL,
    disabled_by    text NOT NULL,
    reason         text NOT NULL
);

CREATE TABLE invites (
    id         bigint PRIMARY KEY,
    code_hash  bytea NOT NULL UNIQUE,
    issuer     text NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    uses_max   integer NOT NULL,
    uses       integer NOT NULL,
    note       text NOT NULL
);

CREATE TABLE push_tokens (
    user_id    bigint NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    provider   integer NOT NULL,
    token      text NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
