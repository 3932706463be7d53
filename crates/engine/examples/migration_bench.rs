//! Slot-migration benchmark (issue 3, item 5): `redis-cli --cluster rebalance` against kredis
//! on the same machine and the same data. Not part of `make test`; `make bench` runs it.
//!
//! ```text
//! cargo run --release -p kredis-engine --example migration_bench -- [--keys 1000000]
//!     [--value-bytes 100] [--only redis-cli|kredis|kredis-seq] [--sequential-moves]
//!     [--batch-keys N] [--slots-in-flight N] [--waves-in-flight N] [--migrates-in-flight N]
//!     [--redis-cli-pipeline N] [--load TASKS] [--load-per-task] [--broadcast-per-slot]
//!     [--no-detach-grace]
//! ```
//!
//! For each tool, on a fresh set of four local redis-server processes (loopback only, killed
//! on exit, even on failure or Ctrl-C):
//! 1. the engine creates a 3-master cluster (no replicas) and `--keys` string keys of
//!    `--value-bytes` bytes are loaded, pipelined, straight into the owner of each slot;
//! 2. the 4th, empty node joins with `redis-cli --cluster add-node` (not timed, same for both);
//! 3. timed, 3 -> 4: `redis-cli --cluster rebalance --cluster-use-empty-masters`, or kredis
//!    `converge` with 4 masters;
//! 4. timed, 4 -> 3: `redis-cli --cluster rebalance --cluster-weight <4th>=0`, or kredis
//!    `converge` with 3 masters (which also detaches the drained node when the planner
//!    releases it: more work than redis-cli is timed for);
//! 5. after each step: DBSIZE summed over the masters equals `--keys`, the slot counts are the
//!    balanced ones, and `redis-cli --cluster check` is clean.
//!
//! Prints the CPU each process used during each timed step, then a table of seconds and keys
//! per second, and the ratio redis-cli / kredis. `--sequential-moves` adds `kredis-seq`, the
//! executor with `concurrent_moves` off (one MoveSlots step after the other, as before the
//! moves of a plan ran as a group). `RUST_LOG=kredis_engine=info` shows the engine's steps
//! with timestamps.
//!
//! `--load TASKS` (`make load`) runs a client load through each timed step: TASKS tasks on a
//! redis-rs cluster connection alternate SET and GET of the loaded keys, and the bench prints
//! commands/s, failed commands, wrong reads and latency before (5 s), during and after (5 s)
//! the step. The load slows the move, so compare tools' times without it. `--load-per-task`
//! gives each task its own cluster connection (redis-rs 1.8 shares the one-shot ASKING flag
//! of a multiplexed connection between tasks, so shared, some redirected commands fail).
//! `--broadcast-per-slot` finalizes each slot with its own epoch bump and PONG broadcast, the
//! textbook form, to compare with the default (one broadcast per wave). `--no-detach-grace`
//! resets a drained master at once instead of waiting for clients to stop being redirected.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kredis_engine::admin::{Admin, AdminConfig};
use kredis_engine::exec::{ExecOptions, Executor};
use kredis_engine::local::{LocalNode, LocalNodeConfig};
use kredis_engine::model::{ClusterView, NodeAddr, Role, Slot};
use kredis_engine::observe::observe;
use kredis_engine::plan::{Desired, Member, Policy};
use kredis_engine::reconcile::converge_with;

#[path = "support/load.rs"]
mod load;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// SETs per pipeline while loading.
const LOAD_PIPELINE: usize = 5_000;
/// Pipelines in flight per master while loading.
const LOAD_IN_FLIGHT: usize = 4;
/// How long gossip may take to settle after a step before the checks fail.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// With `--load`: how long the load runs before and after each timed step.
const LOAD_PHASE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    RedisCli,
    Kredis,
    /// For comparison: kredis with `ExecOptions::concurrent_moves` off.
    KredisSequential,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::RedisCli => "redis-cli",
            Tool::Kredis => "kredis",
            Tool::KredisSequential => "kredis-seq",
        }
    }
}

#[derive(Debug)]
struct Args {
    keys: usize,
    value_bytes: usize,
    only: Option<Tool>,
    sequential_moves: bool,
    batch_keys: Option<usize>,
    slots_in_flight: Option<usize>,
    waves_in_flight: Option<usize>,
    migrates_in_flight: Option<usize>,
    redis_cli_pipeline: Option<usize>,
    load: Option<usize>,
    broadcast_per_slot: bool,
    load_per_task: bool,
    no_detach_grace: bool,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            keys: 1_000_000,
            value_bytes: 100,
            only: None,
            sequential_moves: false,
            batch_keys: None,
            slots_in_flight: None,
            waves_in_flight: None,
            migrates_in_flight: None,
            redis_cli_pipeline: None,
            load: None,
            broadcast_per_slot: false,
            load_per_task: false,
            no_detach_grace: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| format!("{flag} needs a value").into())
                    .and_then(|v: String| {
                        v.replace('_', "")
                            .parse::<usize>()
                            .map_err(|e| BoxError::from(format!("{flag} {v}: {e}")))
                    })
            };
            match flag.as_str() {
                "--keys" => args.keys = value()?,
                "--value-bytes" => args.value_bytes = value()?,
                "--batch-keys" => args.batch_keys = Some(value()?),
                "--slots-in-flight" => args.slots_in_flight = Some(value()?),
                "--redis-cli-pipeline" => args.redis_cli_pipeline = Some(value()?),
                "--waves-in-flight" => args.waves_in_flight = Some(value()?),
                "--migrates-in-flight" => args.migrates_in_flight = Some(value()?),
                "--sequential-moves" => args.sequential_moves = true,
                "--broadcast-per-slot" => args.broadcast_per_slot = true,
                "--load-per-task" => args.load_per_task = true,
                "--no-detach-grace" => args.no_detach_grace = true,
                "--load" => args.load = Some(value()?.max(1)),
                "--only" => {
                    args.only = match it.next().as_deref() {
                        Some("redis-cli") => Some(Tool::RedisCli),
                        Some("kredis") => Some(Tool::Kredis),
                        Some("kredis-seq") => Some(Tool::KredisSequential),
                        other => {
                            return Err(format!(
                                "--only redis-cli|kredis|kredis-seq, not {other:?}"
                            )
                            .into())
                        }
                    }
                }
                "-h" | "--help" => {
                    println!(
                        "usage: migration_bench [--keys N] [--value-bytes B] \
                         [--only redis-cli|kredis|kredis-seq] [--sequential-moves] [--batch-keys N] \
                         [--slots-in-flight N] [--waves-in-flight N] [--migrates-in-flight N] \
                         [--redis-cli-pipeline N] [--load TASKS] [--load-per-task] [--broadcast-per-slot] [--no-detach-grace]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other} (try --help)").into()),
            }
        }
        if args.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        Ok(args)
    }
}

/// One timed data movement.
#[derive(Clone, Debug)]
struct Measure {
    direction: &'static str,
    tool: Tool,
    seconds: f64,
    keys_moved: u64,
    slots_moved: usize,
    /// kredis only: from the start to the first slot done, and from the last slot done to the
    /// end (observe/plan/convergence waits/detach), in seconds.
    overhead: Option<(f64, f64)>,
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,redis=error".into()),
        )
        .try_init();
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropping `run` (on error, success or Ctrl-C) drops every LocalNode, which kills it.
    let result = rt.block_on(async {
        tokio::select! {
            r = run(&args) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    drop(rt);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    println!(
        "migration_bench: {} keys of {} bytes, 3 -> 4 -> 3 masters, no replicas, loopback",
        args.keys, args.value_bytes
    );
    let mut results = Vec::new();
    for tool in [Tool::RedisCli, Tool::Kredis, Tool::KredisSequential] {
        let wanted = match args.only {
            Some(only) => only == tool,
            None => tool != Tool::KredisSequential || args.sequential_moves,
        };
        if !wanted {
            continue;
        }
        results.extend(bench_tool(tool, args).await?);
    }
    print_table(&results);
    Ok(())
}

/// Fresh cluster, same data, 3 -> 4 -> 3 with `tool`.
async fn bench_tool(tool: Tool, args: &Args) -> Result<Vec<Measure>> {
    println!("\n== {} ==", tool.name());
    let bench = Bench::start(4).await?;
    let nodes: Vec<String> = (0..4)
        .map(|i| format!("n{i} {} (pid {})", bench.addr(i), bench.pids[i]))
        .collect();
    println!("  nodes: {}", nodes.join(", "));
    let t = Instant::now();
    bench.create().await?;
    println!(
        "  3-master cluster created in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    bench.load(args.keys, args.value_bytes).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  loaded {} keys in {secs:.2} s ({:.0} keys/s)",
        args.keys,
        args.keys as f64 / secs
    );
    bench
        .verify(args.keys as u64, &[0, 1, 2], &[0, 1, 2])
        .await?;
    bench.add_node_with_redis_cli(3).await?;
    bench.wait_settled(4).await?;
    println!("  4th node joined (empty)");

    let mut out = Vec::new();
    // 3 -> 4.
    let load = bench.load_before(args, &[0, 1, 2]).await?;
    let cpu = bench.cpu();
    let (seconds, overhead) = match tool {
        Tool::RedisCli => {
            let mut extra = vec!["--cluster-use-empty-masters".to_owned()];
            extra.extend(pipeline_arg(args));
            (bench.redis_cli_rebalance(&extra).await?, None)
        }
        Tool::Kredis | Tool::KredisSequential => {
            let (s, o, released) = bench.kredis_converge(4, 4, args, tool).await?;
            if !released.is_empty() {
                return Err(format!("scale-out released members: {released:?}").into());
            }
            (s, Some(o))
        }
    };
    bench.print_cpu(&cpu, seconds);
    load_after(load, "3 -> 4", tool).await?;
    bench.wait_settled(4).await?;
    let per_node = bench
        .verify(args.keys as u64, &[0, 1, 2, 3], &[0, 1, 2, 3])
        .await?;
    let m = Measure {
        direction: "3 -> 4",
        tool,
        seconds,
        keys_moved: per_node[3],
        slots_moved: bench.slots_of(3).await?,
        overhead,
    };
    println!(
        "  3 -> 4: {:.2} s, {} keys moved, check OK",
        m.seconds, m.keys_moved
    );
    out.push(m);

    // 4 -> 3: drain the 4th node.
    let keys_on_4th = per_node[3];
    let slots_on_4th = bench.slots_of(3).await?;
    let mut detached = false;
    let load = bench.load_before(args, &[0, 1, 2, 3]).await?;
    let cpu = bench.cpu();
    let (seconds, overhead) = match tool {
        Tool::RedisCli => {
            let id = bench.id_of(3).await?;
            let mut extra = vec!["--cluster-weight".to_owned(), format!("{id}=0")];
            extra.extend(pipeline_arg(args));
            (bench.redis_cli_rebalance(&extra).await?, None)
        }
        Tool::Kredis | Tool::KredisSequential => {
            let (s, o, released) = bench.kredis_converge(3, 4, args, tool).await?;
            match released.as_slice() {
                [] => println!(
                    "  note: kredis drained n3 but did not release it (it stays an empty master)"
                ),
                [n] if n == "n3" => detached = true,
                other => return Err(format!("scale-in released {other:?}, want n3").into()),
            }
            (s, Some(o))
        }
    };
    bench.print_cpu(&cpu, seconds);
    load_after(load, "4 -> 3", tool).await?;
    // A detached node is alone; otherwise the drained node stays an empty master (redis-cli
    // is not timed for del-node).
    let in_cluster: &[usize] = if detached { &[0, 1, 2] } else { &[0, 1, 2, 3] };
    bench.wait_settled(in_cluster.len()).await?;
    let per_node = bench
        .verify(args.keys as u64, &[0, 1, 2, 3], &[0, 1, 2])
        .await?;
    if per_node[3] != 0 {
        return Err(format!("{} keys left on the drained node", per_node[3]).into());
    }
    let m = Measure {
        direction: "4 -> 3",
        tool,
        seconds,
        keys_moved: keys_on_4th,
        slots_moved: slots_on_4th,
        overhead,
    };
    println!(
        "  4 -> 3: {:.2} s, {} keys moved, check OK",
        m.seconds, m.keys_moved
    );
    out.push(m);
    Ok(out)
}

/// With `--load`: the "during" phase ends, the load runs [`LOAD_PHASE`] more, and its report
/// is printed. Failed commands or wrong reads are printed, not fatal: they are the finding.
async fn load_after(load: Option<load::Load>, step: &str, tool: Tool) -> Result<()> {
    let Some(mut load) = load else {
        return Ok(());
    };
    load.next_phase();
    tokio::time::sleep(LOAD_PHASE).await;
    let report = load.stop().await?;
    load::print_report(step, tool.name(), &report);
    Ok(())
}

fn pipeline_arg(args: &Args) -> Vec<String> {
    args.redis_cli_pipeline
        .map(|p| vec!["--cluster-pipeline".to_owned(), p.to_string()])
        .unwrap_or_default()
}

fn print_table(results: &[Measure]) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<8} {:<10} {:>9} {:>11} {:>7} {:>11}  kredis overhead (before first / after last slot)",
        "dir", "tool", "seconds", "keys moved", "slots", "keys/s"
    );
    for m in results {
        let overhead = m
            .overhead
            .map(|(a, b)| format!("{a:.2} s / {b:.2} s"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<8} {:<10} {:>9.2} {:>11} {:>7} {:>11.0}  {overhead}",
            m.direction,
            m.tool.name(),
            m.seconds,
            m.keys_moved,
            m.slots_moved,
            m.keys_moved as f64 / m.seconds.max(1e-9),
        );
    }
    for dir in ["3 -> 4", "4 -> 3"] {
        let find = |tool| {
            results
                .iter()
                .find(|m| m.direction == dir && m.tool == tool)
        };
        for tool in [Tool::Kredis, Tool::KredisSequential] {
            if let (Some(cli), Some(k)) = (find(Tool::RedisCli), find(tool)) {
                let _ = writeln!(
                    s,
                    "ratio redis-cli/{}, {dir}: {:.2}x",
                    tool.name(),
                    cli.seconds / k.seconds.max(1e-9)
                );
            }
        }
    }
    print!("{s}");
}

/// Four local nodes and an admin pool for them.
struct Bench {
    nodes: Vec<LocalNode>,
    admin: Admin,
    /// Process id of each node, for CPU accounting.
    pids: Vec<String>,
}

impl Bench {
    async fn start(n: usize) -> Result<Bench> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(LocalNode::start(LocalNodeConfig::default()).await?);
        }
        let admin = Admin::new(AdminConfig::default());
        let mut pids = Vec::new();
        for n in &nodes {
            let mut cmd = redis::cmd("INFO");
            cmd.arg("server");
            let info: String = admin.node(n.addr()).await?.raw("INFO", cmd).await?;
            let pid = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("process_id:"))
                .unwrap_or("0")
                .to_owned();
            pids.push(pid);
        }
        Ok(Bench { nodes, admin, pids })
    }

    /// With `--load`: starts the client load seeded from `members` and lets it run
    /// [`LOAD_PHASE`] before the timed step ("before"), then switches it to "during".
    async fn load_before(&self, args: &Args, members: &[usize]) -> Result<Option<load::Load>> {
        let Some(tasks) = args.load else {
            return Ok(None);
        };
        let seeds: Vec<String> = members
            .iter()
            .map(|&i| format!("{}:{}", self.addr(i).host, self.addr(i).port))
            .collect();
        let mut load = load::Load::start(
            &seeds,
            tasks,
            args.keys,
            args.value_bytes,
            args.load_per_task,
        )
        .await?;
        tokio::time::sleep(LOAD_PHASE).await;
        load.next_phase();
        Ok(Some(load))
    }

    /// CPU seconds used so far by this process (the kredis client side) and by each node.
    fn cpu(&self) -> Vec<f64> {
        std::iter::once(cpu_seconds("self"))
            .chain(self.pids.iter().map(|p| cpu_seconds(p)))
            .collect()
    }

    /// Prints the CPU used since `before` (from [`Bench::cpu`]) over `secs` of wall time.
    fn print_cpu(&self, before: &[f64], secs: f64) {
        let after = self.cpu();
        let mut line = String::from("    cpu seconds:");
        for (i, (a, b)) in after.iter().zip(before).enumerate() {
            let name = if i == 0 {
                "bench".to_owned()
            } else {
                format!("n{}", i - 1)
            };
            let _ = write!(
                line,
                " {name} {:.2} ({:.0}%)",
                a - b,
                100.0 * (a - b) / secs.max(1e-9)
            );
        }
        println!("{line}");
    }

    fn addr(&self, i: usize) -> &NodeAddr {
        self.nodes[i].addr()
    }

    /// Members `0..count`, each pinned to its own shard so the 4th node is the one drained.
    fn members(&self, count: usize) -> Vec<Member> {
        (0..count)
            .map(|i| Member {
                name: format!("n{i}"),
                addr: self.addr(i).clone(),
                bus_port: self.nodes[i].bus_port(),
                worker: format!("w{i}"),
                shard: Some(i),
                terminating: false,
            })
            .collect()
    }

    async fn view(&self, nodes: usize) -> ClusterView {
        let seeds: Vec<NodeAddr> = (0..nodes).map(|i| self.addr(i).clone()).collect();
        observe(&self.admin, &seeds).await
    }

    /// 3 masters, no replicas, with the engine (not timed).
    async fn create(&self) -> Result<()> {
        let executor = Executor::new(self.admin.clone(), ExecOptions::default());
        converge_with(
            &executor,
            &self.admin,
            &Desired {
                masters: 3,
                replicas_per_master: 0,
            },
            &self.members(3),
            &Policy::default(),
        )
        .await?;
        self.wait_settled(3).await
    }

    /// SET `key:<i>` to a `value_bytes`-byte value, pipelined, straight into each slot's owner.
    async fn load(&self, keys: usize, value_bytes: usize) -> Result<()> {
        let view = self.view(3).await;
        let mut by_owner: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
        for i in 0..keys {
            let slot = Slot::for_key(key(i).as_bytes());
            let addr = view
                .owner_of(slot)
                .and_then(|id| view.nodes.get(id))
                .and_then(|n| n.addr.clone())
                .ok_or_else(|| format!("no owner for slot {slot}"))?;
            by_owner.entry(addr).or_default().push(i);
        }
        let loads = by_owner.into_iter().map(|(addr, ids)| async move {
            let conn = raw_connection(&addr).await?;
            let chunks: Vec<&[usize]> = ids.chunks(LOAD_PIPELINE).collect();
            let mut pending = futures::stream::iter(chunks.into_iter().map(|chunk| {
                let mut conn = conn.clone();
                async move {
                    let mut pipe = redis::pipe();
                    for &i in chunk {
                        pipe.cmd("SET")
                            .arg(key(i))
                            .arg(value(i, value_bytes))
                            .ignore();
                    }
                    pipe.query_async::<()>(&mut conn).await
                }
            }))
            .buffer_unordered(LOAD_IN_FLIGHT);
            while let Some(r) = pending.next().await {
                r.map_err(|e| format!("loading into {addr}: {e}"))?;
            }
            Ok::<(), BoxError>(())
        });
        for r in futures::future::join_all(loads).await {
            r?;
        }
        Ok(())
    }

    async fn add_node_with_redis_cli(&self, i: usize) -> Result<()> {
        let out = redis_cli(&[
            "--cluster".to_owned(),
            "add-node".to_owned(),
            self.addr(i).to_string(),
            self.addr(0).to_string(),
        ])
        .await?;
        if !out.0 {
            return Err(
                format!("redis-cli --cluster add-node failed:\n{}", tail(&out.1, 20)).into(),
            );
        }
        Ok(())
    }

    /// Waits until the first `nodes` nodes agree on everything and know exactly each other.
    async fn wait_settled(&self, nodes: usize) -> Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let view = self.view(nodes).await;
            let mut problems = view.problems();
            if view.nodes.len() != nodes {
                problems.push(format!("{} nodes known, want {nodes}", view.nodes.len()));
            }
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("cluster not settled: {}", problems.join("; ")).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn id_of(&self, i: usize) -> Result<String> {
        let c = self.admin.node(self.addr(i)).await?;
        Ok(c.myid().await?.as_str().to_owned())
    }

    /// Slots node `i` serves, by its own table.
    async fn slots_of(&self, i: usize) -> Result<usize> {
        let c = self.admin.node(self.addr(i)).await?;
        Ok(c.cluster_nodes()
            .await?
            .iter()
            .find(|e| e.flags.myself)
            .map_or(0, |e| e.slots.len()))
    }

    /// Every key is there exactly once (DBSIZE summed over `count` equals `keys`), the
    /// slot-serving masters `masters` hold balanced slot counts, and `redis-cli --cluster
    /// check` is clean. Returns DBSIZE per node of `count`.
    async fn verify(&self, keys: u64, count: &[usize], masters: &[usize]) -> Result<Vec<u64>> {
        let mut per_node = vec![0; self.nodes.len()];
        for &i in count {
            per_node[i] = self.admin.node(self.addr(i)).await?.dbsize().await?;
        }
        let sum: u64 = per_node.iter().sum();
        if sum != keys {
            return Err(
                format!("DBSIZE sum is {sum}, want {keys} (per node: {per_node:?})").into(),
            );
        }
        let view = self.view(masters.len()).await;
        let fair = 16384 / masters.len();
        let serving: Vec<_> = view
            .nodes
            .values()
            .filter(|n| n.role == Role::Master && !n.slots.is_empty())
            .collect();
        if serving.len() != masters.len()
            || serving
                .iter()
                .any(|n| n.slots.len() != fair && n.slots.len() != fair + 1)
        {
            let counts: Vec<_> = serving.iter().map(|n| n.slots.len()).collect();
            return Err(format!("unbalanced slots: {counts:?}").into());
        }
        self.redis_cli_check(masters[0]).await?;
        Ok(per_node)
    }

    /// `redis-cli --cluster check` with no warning or error, retried while gossip settles.
    async fn redis_cli_check(&self, via: usize) -> Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let (ok, text) = redis_cli(&[
                "--cluster".to_owned(),
                "check".to_owned(),
                self.addr(via).to_string(),
            ])
            .await?;
            let clean = ok
                && text.contains("[OK] All 16384 slots covered.")
                && !text.contains("[WARNING]")
                && !text.contains("[ERR]");
            if clean {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("redis-cli --cluster check is not clean:\n{text}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Timed `redis-cli --cluster rebalance <node 0> <extra...>`.
    async fn redis_cli_rebalance(&self, extra: &[String]) -> Result<f64> {
        let mut argv = vec![
            "--cluster".to_owned(),
            "rebalance".to_owned(),
            self.addr(0).to_string(),
        ];
        argv.extend(extra.iter().cloned());
        let t = Instant::now();
        let (ok, text) = redis_cli(&argv).await?;
        let secs = t.elapsed().as_secs_f64();
        if !ok || text.contains("[ERR]") {
            return Err(
                format!("redis-cli {} failed:\n{}", argv.join(" "), tail(&text, 20)).into(),
            );
        }
        Ok(secs)
    }

    /// Timed kredis `converge` to `masters` masters over members `0..members`. Also returns the
    /// time before the first slot was done and after the last one (engine overhead).
    async fn kredis_converge(
        &self,
        masters: usize,
        members: usize,
        args: &Args,
        tool: Tool,
    ) -> Result<(f64, (f64, f64), Vec<String>)> {
        let mut options = ExecOptions::default();
        if let Some(b) = args.batch_keys {
            options.migration.batch_keys = b;
        }
        options.migration.broadcast_per_slot = args.broadcast_per_slot;
        if args.no_detach_grace {
            options.detach_grace = Duration::ZERO;
        }
        if let Some(s) = args.slots_in_flight {
            options.migration.slots_in_flight = s;
        }
        if let Some(w) = args.waves_in_flight {
            options.migration.waves_in_flight = w;
        }
        if let Some(m) = args.migrates_in_flight {
            options.migration.migrates_in_flight = m;
        }
        options.concurrent_moves = tool != Tool::KredisSequential;
        let executor = Executor::new(self.admin.clone(), options.clone());
        let progress = executor.progress().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let t = Instant::now();
        // Samples the progress counters to tell moving time from overhead.
        let sampler = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut first, mut last) = (None, None);
                let mut done_before = 0;
                while !stop.load(Ordering::Relaxed) {
                    let done = progress.slots_done();
                    if done > 0 && first.is_none() {
                        first = Some(t.elapsed());
                    }
                    if done != done_before {
                        last = Some(t.elapsed());
                        done_before = done;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (first, last)
            })
        };
        let desired = Desired {
            masters,
            replicas_per_master: 0,
        };
        let members = self.members(members);
        let result = converge_with(
            &executor,
            &self.admin,
            &desired,
            &members,
            &Policy::default(),
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let (first, last) = sampler.await.unwrap_or((None, None));
        let report = result?;
        let before = first.map_or(secs, |d| d.as_secs_f64());
        let after = last.map_or(0.0, |d| secs - d.as_secs_f64());
        println!(
            "  kredis converge to {masters} masters: {} round(s), {} step(s), released {:?}",
            report.rounds, report.steps, report.released
        );
        Ok((secs, (before, after), report.released))
    }
}

/// CPU seconds (user + system) a process used so far, from /proc (Linux only; 0 elsewhere).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    // USER_HZ is 100 on every Linux architecture Rust targets.
    ticks / 100.0
}

fn key(i: usize) -> String {
    format!("key:{i}")
}

fn value(i: usize, bytes: usize) -> Vec<u8> {
    let mut v = format!("{i:012}-").into_bytes();
    v.resize(bytes, b'x');
    v
}

async fn raw_connection(addr: &NodeAddr) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{}:{}/", addr.host, addr.port))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Runs redis-cli (killed if the benchmark is dropped); returns success and stdout+stderr.
async fn redis_cli(argv: &[String]) -> Result<(bool, String)> {
    let out = tokio::process::Command::new("redis-cli")
        .args(argv)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("failed to run redis-cli (is redis-tools installed?): {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn chain(e: &(dyn Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
