//! The client commands: topic, cluster, produce, consume.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use strata_client::{
    Acks, Admin, Client, Compression, Consumer, ConsumerConfig, ErrorCode, NewTopic, OffsetReset, Producer,
    ProducerConfig, Record, Seek, TopicPartition,
};

use crate::Connection;

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Creates a topic; returns once its partitions have leaders (up to 10 s).
    Create {
        /// Topic name.
        name: String,
        /// Partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (default: 3, or fewer brokers).
        #[arg(long, default_value_t = 0)]
        replication_factor: u32,
        /// Topic config as KEY=VALUE (retention.ms, max.message.bytes, ...).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed, changing nothing, when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Lists topic names.
    List,
    /// Shows a topic's partitions, leaders, replicas and offsets.
    Describe {
        /// Topic name.
        name: String,
        /// Also show every replica: log start and end, size on disk,
        /// segments (asks every broker).
        #[arg(long)]
        verbose: bool,
    },
    /// Changes a topic's configuration at runtime, or adds partitions.
    Alter {
        /// Topic name.
        name: String,
        /// Grow the topic to this many partitions (never fewer: partitions
        /// are not removed). Records with a key may map to other partitions
        /// from then on.
        #[arg(long)]
        partitions: Option<u32>,
        /// A key to set, as KEY=VALUE (retention.ms, retention.bytes,
        /// cleanup.policy, segment.bytes, ...).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// A key to remove (back to the cluster default).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Moves a partition to other brokers: new replicas catch up as
    /// learners before they vote; `topic describe` shows the progress.
    Reassign {
        /// Topic name.
        name: String,
        /// The partition to move.
        #[arg(long)]
        partition: u32,
        /// The brokers to hold it, by id, comma-separated (the first is
        /// preferred as leader).
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
    },
    /// Deletes a partition's records before an offset (Kafka's
    /// kafka-delete-records): readers then start at that offset, and
    /// segments wholly below it are removed from every replica.
    #[command(group(clap::ArgGroup::new("upto").required(true).args(["before", "all"])))]
    DeleteRecords {
        /// Topic name.
        name: String,
        /// Only this partition (default, with --all: every partition).
        #[arg(long)]
        partition: Option<u32>,
        /// Delete the partition's records before this offset (at most its
        /// high watermark).
        #[arg(long, requires = "partition")]
        before: Option<u64>,
        /// Delete every committed record.
        #[arg(long)]
        all: bool,
    },
    /// Deletes a topic and its data.
    Delete {
        /// Topic name.
        name: String,
        /// Succeed, changing nothing, when the topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Lists consumer groups.
    List,
    /// Shows a group's members, their partitions, and per partition the
    /// committed offset, the log end and the lag.
    Describe {
        /// Group name.
        group: String,
    },
    /// Sets a group's committed offsets (the group must have no members).
    ResetOffsets {
        /// Group name.
        group: String,
        /// Topic whose partitions are reset.
        #[arg(long)]
        topic: String,
        /// To the first stored offset.
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset", "to_datetime"])]
        to_earliest: bool,
        /// To the log end.
        #[arg(long, conflicts_with_all = ["to_offset", "to_datetime"])]
        to_latest: bool,
        /// To this offset.
        #[arg(long, conflicts_with = "to_datetime")]
        to_offset: Option<u64>,
        /// To the first record at or after this time (ms since the epoch).
        #[arg(long)]
        to_datetime: Option<i64>,
    },
    /// Deletes a group with no members, and its offsets.
    Delete {
        /// Group name.
        group: String,
    },
}

pub async fn group(connection: &Connection, command: GroupCommand) -> Result<()> {
    let admin = Admin::new(&client(connection)?);
    match command {
        GroupCommand::List => {
            for group in admin.list_groups().await? {
                outln!("{group}");
            }
        }
        GroupCommand::Describe { group } => {
            let d = admin.describe_group(&group).await?;
            outln!(
                "Group: {}\tState: {}\tEpoch: {}\tAssignor: {}\tCoordinator: {}",
                d.group,
                d.state,
                d.epoch,
                d.assignor,
                d.coordinator
            );
            let mut owner: std::collections::BTreeMap<TopicPartition, String> = Default::default();
            for m in &d.members {
                for tp in &m.assignment {
                    owner.insert(tp.clone(), m.member_id.clone());
                }
            }
            let mut rows: std::collections::BTreeMap<TopicPartition, Option<u64>> =
                owner.keys().map(|tp| (tp.clone(), None)).collect();
            for (tp, offset) in &d.offsets {
                rows.insert(tp.clone(), Some(*offset));
            }
            outln!("TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tMEMBER");
            for (tp, committed) in rows {
                let end = admin.list_offset(&tp, -1).await.ok();
                let lag = match (committed, end) {
                    (Some(c), Some(e)) => e.saturating_sub(c).to_string(),
                    (None, Some(e)) => e.to_string(),
                    _ => "-".into(),
                };
                let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                let member = owner.get(&tp).cloned().unwrap_or_else(|| "-".into());
                outln!("{}\t{}\t{}\t{}\t{lag}\t{member}", tp.topic, tp.partition, show(committed), show(end));
            }
            for m in &d.members {
                let parts: Vec<String> =
                    m.assignment.iter().map(|tp| format!("{}/{}", tp.topic, tp.partition)).collect();
                let instance = if m.instance_id.is_empty() { String::new() } else { format!(" ({})", m.instance_id) };
                outln!("Member {}{instance}\tEpoch: {}\tPartitions: {}", m.member_id, m.epoch, parts.join(","));
            }
        }
        GroupCommand::ResetOffsets { group, topic, to_earliest, to_latest, to_offset, to_datetime } => {
            let partitions = client(connection)?.partitions(&topic).await?;
            let mut offsets = Vec::new();
            for p in partitions {
                let tp = TopicPartition::new(&topic, p.partition);
                let offset = match (to_offset, to_datetime, to_earliest, to_latest) {
                    (Some(o), _, _, _) => o,
                    (_, Some(ts), _, _) => match admin.list_offset(&tp, ts).await {
                        Ok(o) => o,
                        Err(_) => admin.list_offset(&tp, -1).await?,
                    },
                    (_, _, true, _) => admin.list_offset(&tp, -2).await?,
                    (_, _, _, true) => admin.list_offset(&tp, -1).await?,
                    _ => bail!("say where to: --to-earliest, --to-latest, --to-offset N or --to-datetime MS"),
                };
                offsets.push((tp, offset));
            }
            for (tp, offset) in &offsets {
                outln!("{}\t{}\t{offset}", tp.topic, tp.partition);
            }
            admin.reset_offsets(&group, offsets).await?;
            outln!("Reset the offsets of group {group}.");
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            outln!("Deleted group {group}.");
        }
    }
    Ok(())
}

/// How long `topic create` waits for the new partitions' leaders.
const TOPIC_LEADERS_WAIT: Duration = Duration::from_secs(10);

/// Waits for every partition of `name` to have a leader, so that the next
/// command (a producer, most often) is not refused first, then prints
/// `done` and what is still without a leader.
async fn report_leaders(admin: &Admin, name: &str, done: &str, partitions: u32) -> Result<()> {
    match admin.wait_for_leaders(name, TOPIC_LEADERS_WAIT).await {
        Ok(0) => outln!("{done}."),
        Ok(leaderless) => outln!(
            "{done}; {leaderless} of its {partitions} partitions have no leader yet (their elections are still running)."
        ),
        Err(err) => outln!("{done}; its leaders could not be checked: {err}."),
    }
    Ok(())
}

fn client(connection: &Connection) -> Result<Client> {
    connection.client().context("connect")
}

pub async fn topic(connection: &Connection, command: TopicCommand) -> Result<()> {
    let admin = Admin::new(&client(connection)?);
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs, if_not_exists } => {
            let mut topic = NewTopic::new(&name, partitions).replication_factor(replication_factor);
            for config in configs {
                let Some((k, v)) = config.split_once('=') else { bail!("--config {config:?}: expected KEY=VALUE") };
                topic = topic.config(k.trim(), v.trim());
            }
            match admin.create_topic(topic).await {
                Err(err) if if_not_exists && err.code() == Some(ErrorCode::TopicAlreadyExists) => {
                    outln!("Topic {name} already exists.");
                    return Ok(());
                }
                result => result?,
            }
            report_leaders(&admin, &name, &format!("Created topic {name}"), partitions).await?;
        }
        TopicCommand::List => {
            for name in admin.list_topics().await? {
                outln!("{name}");
            }
        }
        TopicCommand::Alter { name, partitions, configs, delete } => {
            if partitions.is_none() && configs.is_empty() && delete.is_empty() {
                bail!("nothing to change: give --partitions N, --config KEY=VALUE or --delete-config KEY");
            }
            // The configuration first: a bad key then changes nothing.
            if !configs.is_empty() || !delete.is_empty() {
                let mut set = std::collections::BTreeMap::new();
                for config in configs {
                    let Some((k, v)) = config.split_once('=') else { bail!("--config {config:?}: expected KEY=VALUE") };
                    set.insert(k.trim().to_string(), v.trim().to_string());
                }
                let result = admin.alter_topic_config(&name, set, delete).await?;
                let shown: Vec<String> = result.iter().map(|(k, v)| format!("{k}={v}")).collect();
                outln!("Altered topic {name}. Configs: {}", shown.join(","));
            }
            if let Some(count) = partitions {
                admin.create_partitions(&name, count).await?;
                report_leaders(&admin, &name, &format!("Topic {name} has {count} partitions"), count).await?;
            }
        }
        TopicCommand::DeleteRecords { name, partition, before, all: _ } => {
            let partitions = match partition {
                Some(p) => vec![TopicPartition::new(&name, p)],
                None => (0..admin.describe_topic(&name).await?.partitions.len() as u32)
                    .map(|p| TopicPartition::new(&name, p))
                    .collect(),
            };
            for tp in partitions {
                let start = admin.delete_records(&tp, before).await?;
                outln!("{name}/{}: records before offset {start} deleted; the log starts at {start}.", tp.partition);
            }
        }
        TopicCommand::Reassign { name, partition, replicas } => {
            let shown: Vec<String> = replicas.iter().map(u64::to_string).collect();
            admin.reassign_partition(&name, partition, replicas).await?;
            outln!(
                "Reassigning {name}/{partition} to brokers {}; follow it with `strata topic describe {name}`.",
                shown.join(",")
            );
        }
        TopicCommand::Describe { name, verbose } => {
            let topic = admin.describe_topic(&name).await?;
            let configs: Vec<String> = topic.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!("Topic: {}\tPartitions: {}\tConfigs: {}", topic.name, topic.partitions.len(), configs.join(","));
            for p in topic.partitions {
                let leader = p.leader.map_or("none".to_string(), |l| l.to_string());
                let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
                outln!(
                    "\tPartition: {}\tLeader: {leader}\tReplicas: {}\tLogStart: {}\tHighWatermark: {}",
                    p.partition,
                    replicas.join(","),
                    p.log_start_offset,
                    p.high_watermark
                );
            }
            if verbose {
                outln!("Replicas:");
                for r in admin.describe_replicas(&name).await? {
                    outln!(
                        "\tPartition: {}\tBroker: {}{}\tLogStart: {}\tLogEnd: {}\tSize: {}\tSegments: {}",
                        r.partition,
                        r.broker,
                        if r.is_leader { " (leader)" } else { "" },
                        r.log_start_offset,
                        r.log_end_offset,
                        r.size_bytes,
                        r.segments
                    );
                }
            }
        }
        TopicCommand::Delete { name, if_exists } => match admin.delete_topic(&name).await {
            Err(err) if if_exists && err.code() == Some(ErrorCode::UnknownTopic) => {
                outln!("Topic {name} does not exist.");
            }
            result => {
                result?;
                outln!("Deleted topic {name}.");
            }
        },
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Shows the brokers and the controller (the default).
    Describe,
    /// Removes a broker for good: its replicas move to the other brokers,
    /// then it leaves the cluster (stop it once `strata topic describe`
    /// shows none of its replicas); its id is never used again.
    RemoveNode {
        /// The broker's node id.
        id: u64,
    },
}

pub async fn cluster(connection: &Connection, command: Option<ClusterCommand>) -> Result<()> {
    let admin = Admin::new(&client(connection)?);
    if let Some(ClusterCommand::RemoveNode { id }) = command {
        let moved = admin.remove_broker(id).await?;
        outln!("Removing broker {id}: moving {moved} partition replicas off it; follow with `strata topic describe`.");
        return Ok(());
    }
    let cluster = admin.describe_cluster().await?;
    let controller = cluster.controller.map_or("none".to_string(), |c| c.to_string());
    outln!("Controller: {controller}\tTopics: {}\tPartitions: {}", cluster.topics, cluster.partitions);
    for b in cluster.brokers {
        outln!("\tBroker: {}\tAddress: {}\tPeer: {}", b.id, b.address, b.raft_address);
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AcksArg {
    All,
    Leader,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Lz4,
}

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to write to.
    #[arg(long)]
    topic: String,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(long)]
    key_separator: Option<String>,
    /// A header added to every record, KEY=VALUE.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Write every record to this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// When a write counts as done.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// Batch compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// How long a batch waits for more records, ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

pub async fn produce(args: ProduceArgs) -> Result<()> {
    let client = client(&args.connection)?;
    let config = ProducerConfig {
        acks: match args.acks {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
            AcksArg::None => Acks::None,
        },
        compression: match args.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
        },
        linger: Duration::from_millis(args.linger_ms),
        // A mistyped topic fails within seconds, not Kafka's minute; a
        // topic just created is known everywhere long before.
        max_block: Duration::from_secs(5),
        ..ProducerConfig::default()
    };
    let mut headers = Vec::new();
    for header in &args.headers {
        let Some((k, v)) = header.split_once('=') else { bail!("--header {header:?}: expected KEY=VALUE") };
        headers.push((k.to_string(), Bytes::copy_from_slice(v.as_bytes())));
    }
    let producer = Producer::with_config(&client, config);
    // Deliveries are awaited by a second task, so reading stdin never waits
    // for acknowledgements.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<strata_client::DeliveryFuture>(100_000);
    let waiter = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(delivery) = rx.recv().await {
            match delivery.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    eprintln!("error: a record was not written: {e}");
                }
            }
        }
        (ok, failed)
    });
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(10_000);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut record = Record::new(args.topic.as_str(), value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        for (k, v) in &headers {
            record = record.header(k.clone(), v.clone());
        }
        let delivery = producer.send(record).await?;
        if tx.send(delivery).await.is_err() {
            break;
        }
    }
    drop(tx);
    producer.close().await;
    let (ok, failed) = waiter.await.context("delivery task")?;
    eprintln!(
        "{ok} {} written to {}{}",
        plural(ok, "record"),
        args.topic,
        if failed > 0 { format!(", {failed} failed") } else { String::new() }
    );
    if failed > 0 {
        bail!("{failed} {} not written", if failed == 1 { "record was" } else { "records were" });
    }
    Ok(())
}

/// "1 record", "2 records": the count's noun in the number it takes.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 { noun.to_string() } else { format!("{noun}s") }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// The value (with --print-key, key TAB value).
    Text,
    /// One JSON object per record.
    Json,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all).
    #[arg(long, conflicts_with = "group")]
    partition: Option<u32>,
    /// Consume as a member of this consumer group (offsets committed; a
    /// new group starts per --from-beginning, else at the end).
    #[arg(long)]
    group: Option<String>,
    /// Start at the first stored record (default: only new records).
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    offset: Option<u64>,
    /// Start at the first record at or after this time (ms since the epoch).
    #[arg(long)]
    from_time: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record came for this long (ms); default: never.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Text format: print the key before the value.
    #[arg(long)]
    print_key: bool,
}

pub async fn consume(args: ConsumeArgs) -> Result<()> {
    let client = client(&args.connection)?;
    let config = ConsumerConfig {
        auto_offset_reset: if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest },
        ..ConsumerConfig::default()
    };
    // In a group, commit exactly what was printed (after each poll), not
    // what was fetched: --max-messages must not skip records for the next
    // run.
    let config = ConsumerConfig { group_id: args.group.clone(), enable_auto_commit: false, ..config };
    let mut printed: std::collections::BTreeMap<TopicPartition, u64> = Default::default();
    let mut consumer = Consumer::with_config(&client, config);
    let partitions: Vec<TopicPartition> = match (&args.group, args.partition) {
        (Some(_), _) => Vec::new(),
        (None, Some(p)) => vec![TopicPartition::new(&args.topic, p)],
        (None, None) => consumer.partitions_of(&args.topic).await?,
    };
    if args.group.is_some() {
        consumer.subscribe(vec![args.topic.clone()])?;
    } else {
        consumer.assign(partitions.clone());
    }
    for tp in &partitions {
        let seek = match (args.offset, args.from_time, args.from_beginning) {
            (Some(offset), _, _) => Seek::Offset(offset),
            (_, Some(ts), _) => Seek::Timestamp(ts),
            (_, _, true) => Seek::Beginning,
            _ => Seek::End,
        };
        consumer.seek(tp, seek).await?;
    }
    // Without a group or a partition, every partition of the topic is read,
    // those added while this runs too (a group's member is given them by
    // its group).
    let follow_growth = args.group.is_none() && args.partition.is_none();
    let mut growth_checked = tokio::time::Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    let mut last_record = tokio::time::Instant::now();
    // Ctrl-C (or SIGTERM) ends the loop like --max-messages does: a group
    // member then leaves its group, so its partitions are reassigned at
    // once instead of when its session times out (Kafka's console consumer
    // closes its consumer on exit too).
    let stop = strata_broker::wait_for_signal();
    tokio::pin!(stop);
    loop {
        if args.max_messages.is_some_and(|max| n >= max) {
            break;
        }
        if args.timeout_ms.is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t)) {
            break;
        }
        if follow_growth && growth_checked.elapsed() >= PARTITION_CHECK_INTERVAL {
            growth_checked = tokio::time::Instant::now();
            add_new_partitions(&client, &mut consumer, &args).await?;
        }
        let records = tokio::select! {
            records = consumer.poll() => records?,
            _ = &mut stop => break,
        };
        if !records.is_empty() {
            last_record = tokio::time::Instant::now();
        }
        match print_records(&mut out, records, &args, &mut n, &mut printed) {
            Ok(()) => {}
            // The reader went away (`strata consume ... | head`): stop as
            // --max-messages does, leaving the group, without committing
            // records it may not have read.
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(err) => return Err(err.into()),
        }
        if args.group.is_some() && !printed.is_empty() {
            consumer.commit_offsets(std::mem::take(&mut printed).into_iter().collect()).await?;
        }
    }
    drop(out);
    if args.group.is_some() {
        consumer.close().await?;
    }
    Ok(())
}

/// How often a console consumer without a group looks for partitions
/// added to its topic.
const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Assigns `consumer` the partitions added to the topic since it was
/// assigned, each read from its beginning (everything in it came after the
/// consumer started), or from --from-time.
async fn add_new_partitions(client: &Client, consumer: &mut Consumer, args: &ConsumeArgs) -> Result<()> {
    match client.refresh_metadata(std::slice::from_ref(&args.topic)).await {
        Ok(()) => {}
        // A broker down or a leader moving: the next check.
        Err(err) if err.is_retriable() => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    let assigned = consumer.assignment();
    let all = consumer.partitions_of(&args.topic).await?;
    let added: Vec<TopicPartition> = all.iter().filter(|tp| !assigned.contains(tp)).cloned().collect();
    if added.is_empty() {
        return Ok(());
    }
    consumer.assign(all);
    for tp in &added {
        let seek = args.from_time.map_or(Seek::Beginning, Seek::Timestamp);
        match consumer.seek(tp, seek).await {
            Ok(()) => {}
            // No leader yet: left out until the next check, rather than
            // read from wherever auto_offset_reset says.
            Err(err) if err.is_retriable() => {
                consumer.assign(assigned);
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Prints `records` (up to --max-messages in all, counted in `n`) and notes
/// each partition's next offset in `printed`; flushes.
fn print_records(
    out: &mut impl std::io::Write,
    records: Vec<strata_client::ConsumerRecord>,
    args: &ConsumeArgs,
    n: &mut u64,
    printed: &mut std::collections::BTreeMap<TopicPartition, u64>,
) -> std::io::Result<()> {
    for record in records {
        if args.max_messages.is_some_and(|max| *n >= max) {
            break;
        }
        *n += 1;
        printed.insert(TopicPartition::new(&*record.topic, record.partition), record.offset + 1);
        let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        match args.format {
            Format::Text => {
                let value = text(&record.value).unwrap_or_else(|| "null".into());
                if args.print_key {
                    writeln!(out, "{}\t{value}", text(&record.key).unwrap_or_else(|| "null".into()))?;
                } else {
                    writeln!(out, "{value}")?;
                }
            }
            Format::Json => {
                let headers: serde_json::Map<String, serde_json::Value> = record
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), text(&h.value).map_or(serde_json::Value::Null, Into::into)))
                    .collect();
                let line = serde_json::json!({
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                    "key": text(&record.key),
                    "value": text(&record.value),
                    "headers": headers,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()
}
