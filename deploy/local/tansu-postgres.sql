-- The schema of tansu 0.6's `postgres://` storage engine, which tansu does not create itself.
-- Applied by deploy/local/stack.sh to the broker's own database (idempotent: every object is
-- created only if missing, nothing is altered or dropped, so re-running it on a database in
-- use is safe). No schema is named: the objects land in the connection's search_path, which
-- lets a test give one broker a schema of its own (services/platform/tests/broker_restart.rs).
--
-- Written from the queries tansu-storage 0.6.0 prepares (src/sql/*.sql, src/pg/*.sql and the
-- column types src/pg.rs reads and binds: int4 for ids, partitions and sequences, int8 for
-- offsets and producer ids, int2 for producer epochs and record attributes, uuid for topic
-- ids and consumer-group e-tags, json for the group detail, timestamp for record times).
-- Facts that matter beyond the types:
-- - record.transaction_id: the record fetch only returns rows whose writing transaction is
--   older than every transaction still running (pg_current_snapshot()), so a consumer never
--   reads past an offset whose insert has not committed yet;
-- - consumer_group_detail.e_tag: the compare-and-set of a group's state (join, sync,
--   heartbeat) updates a row only while its e-tag is the one the broker last read;
-- - unique (cluster, name) on topic, (topic, partition) on topition, (consumer_group,
--   topition) on consumer_offset, (consumer_group) on consumer_group_detail and (name) on
--   cluster back the queries' `on conflict` clauses;
-- - header rows go with their record (the compaction of `cleanup.policy=compact` topics and
--   the `delete` retention delete records).

begin;

create table if not exists cluster (
    id int generated always as identity primary key,
    name text not null unique,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists topic (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    uuid uuid not null default gen_random_uuid(),
    partitions int not null,
    replication_factor int not null,
    is_internal bool not null default false,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, name)
);

create table if not exists topic_configuration (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    name text not null,
    value text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (topic, name)
);

create table if not exists topition (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    partition int,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (topic, partition)
);

create table if not exists watermark (
    id int generated always as identity primary key,
    topition int references topition (id) on delete cascade unique,
    low bigint,
    high bigint,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists record (
    topition int references topition (id) on delete cascade,
    offset_id bigint not null,
    transaction_id xid8 not null default pg_current_xact_id(),
    attributes smallint,
    producer_id bigint,
    producer_epoch smallint,
    timestamp timestamp,
    k bytea,
    v bytea,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    primary key (topition, offset_id)
);

create table if not exists header (
    topition int,
    offset_id bigint,
    k bytea,
    v bytea,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    foreign key (topition, offset_id) references record (topition, offset_id) on delete cascade
);

-- Not unique: Kafka lets a record repeat a header key. The index serves the fetch's lookup
-- of a record's headers and the cascade when compaction or retention deletes the record.
create index if not exists header_record on header (topition, offset_id);

create table if not exists consumer_group (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, name)
);

create table if not exists consumer_group_detail (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade unique,
    e_tag uuid not null,
    detail json not null,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists consumer_offset (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    timestamp timestamp,
    metadata text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (consumer_group, topition)
);

-- Idempotent (and transactional) producers: a producer id, its epochs, and the last
-- sequence number per epoch and partition.
create table if not exists producer (
    id bigint generated by default as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists producer_epoch (
    id int generated by default as identity primary key,
    producer bigint references producer (id) on delete cascade,
    epoch smallint not null default 0,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (producer, epoch)
);

create table if not exists producer_detail (
    id bigint generated by default as identity primary key,
    producer_epoch int references producer_epoch (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    sequence int not null default 0,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (producer_epoch, topition)
);

-- Transactions (the services do not use them; tansu's queries join these tables on every
-- watermark and list-offsets request, so they must exist).
create table if not exists txn (
    id bigint generated always as identity primary key,
    cluster int references cluster (id) on delete cascade,
    name text,
    producer bigint references producer (id) on delete cascade,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, name)
);

create table if not exists txn_detail (
    id bigint generated always as identity primary key,
    "transaction" bigint references txn (id) on delete cascade,
    producer_epoch int references producer_epoch (id) on delete cascade,
    transaction_timeout_ms int not null,
    -- set when the first partition joins the transaction (its timer starts then)
    started_at timestamp,
    -- BEGIN, PREPARE_COMMIT, PREPARE_ABORT, COMMITTED or ABORTED
    status text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique ("transaction", producer_epoch)
);

create table if not exists txn_topition (
    id int generated always as identity primary key,
    txn_detail bigint references txn_detail (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (txn_detail, topition)
);

create table if not exists txn_produce_offset (
    id int generated always as identity primary key,
    txn_topition int references txn_topition (id) on delete cascade unique,
    offset_start bigint,
    offset_end bigint,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp
);

create table if not exists txn_offset_commit (
    id int generated always as identity primary key,
    txn_detail bigint references txn_detail (id) on delete cascade,
    consumer_group int references consumer_group (id) on delete cascade,
    generation_id int,
    member_id text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (txn_detail, consumer_group)
);

create table if not exists txn_offset_commit_tp (
    id int generated always as identity primary key,
    offset_commit int references txn_offset_commit (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    metadata text,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (offset_commit, topition)
);

create table if not exists scram_credential (
    id bigint generated by default as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    username text,
    mechanism int,
    salt bytea not null,
    iterations int not null,
    stored_key bytea not null,
    server_key bytea not null,
    last_updated timestamp not null default current_timestamp,
    created_at timestamp not null default current_timestamp,
    unique (cluster, username, mechanism)
);

commit;
