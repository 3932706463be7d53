//! Operator resource benchmark (not a test): 20 KRedis of 3 masters x 1 replica in `kredis dev`,
//! with the operator as a separate process so its memory and CPU can be read from /proc.
//!
//! ```sh
//! make bench-operator   # cargo run --release -p kredis --example operator_bench
//! ```
//!
//! 1. starts `kredis dev --no-operator` (3 worker nodes, 127.1.x.x) in a temporary directory and
//!    waits for its kubeconfig and API server;
//! 2. installs the CRD printed by `kredis crd` with the kube client;
//! 3. starts `kredis operator` against it and waits for `/readyz`;
//! 4. creates N KRedis (basePort 10000 + 10*i: 7 client ports each, plus the exporter (+5000)
//!    and bus (+10000) ranges, so a stride of 10 never overlaps) and waits until every one is
//!    `Ready` for its generation;
//! 5. reports the operator's peak RSS (VmHWM) and CPU seconds (utime+stime) at all-Ready, then
//!    lets everything idle and reports the CPU used while idle, with PASS/MISS per target;
//! 6. stops every process it started (also on error, Ctrl-C, SIGTERM or panic) and checks that no
//!    redis-server of its clusters survived.
//!
//! The kredis binary is `--kredis PATH` (or `KREDIS_BIN`); by default, under `cargo run`, the
//! bench first runs `cargo build -p kredis --bin kredis` with its own profile, so the binary
//! measured is the one of this tree, and uses the one next to `target/<profile>/examples/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use kredis_api::{KRedis, Phase};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

/// Peak RSS target (VmHWM), from the issue: under 64 MB (taken as 64 MiB).
const RSS_TARGET_KIB: u64 = 64 * 1024;
/// "Idle CPU near zero": at most 1% of one core while every cluster is Ready.
const IDLE_CPU_TARGET_FRACTION: f64 = 0.01;
/// The operator requeues a Ready cluster this often (`OperatorConfig::default().resync`).
const RESYNC: Duration = Duration::from_secs(30);
/// Stride between the clusters' base ports; each uses 7 consecutive ports from its base.
const PORT_STRIDE: u16 = 10;
/// Ports a 3x1 cluster reserves: pods + 1 (the rolling-update index).
const PORTS_PER_CLUSTER: u16 = 7;

/// Measure the kredis operator's RSS and CPU with many clusters in `kredis dev`.
#[derive(Debug, Parser)]
#[command(name = "operator_bench")]
struct Args {
    /// Number of KRedis objects (3 masters x 1 replica each).
    #[arg(long, default_value_t = 20)]
    clusters: u16,
    /// Seconds to idle once every cluster is Ready.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Seconds to wait for every cluster to be Ready.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// basePort of the first cluster; cluster i uses basePort + 10*i.
    #[arg(long, default_value_t = 10000)]
    base_port: u16,
    /// Worker nodes of `kredis dev`.
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// The kredis binary to run (default: build it with cargo, see the module docs).
    #[arg(long, env = "KREDIS_BIN")]
    kredis: Option<PathBuf>,
    /// RUST_LOG of the operator process.
    #[arg(long, default_value = "info")]
    operator_log: String,
    /// Keep the temporary directory (operator.log, dev.log, pod logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let dir = match tempfile::Builder::new()
        .prefix("kredis-operator-bench-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Declared after `dir`, so it is dropped (every process stopped) before the directory goes.
    let mut procs = Procs::new(&args);
    let result = tokio::select! {
        r = run(&args, dir.path(), &mut procs) => r,
        s = stop_signal() => Err(anyhow::anyhow!("{s}: stopping")),
    };
    if let Err(e) = &result {
        eprintln!("\nerror: {e:#}");
        for (name, file) in [("operator", "operator.log"), ("kredis dev", "dev.log")] {
            eprintln!(
                "--- last lines of the {name} log ---\n{}",
                tail(&dir.path().join(file), 25)
            );
        }
    }
    println!("\ncleanup: stopping the operator and kredis dev");
    let leftovers = procs.stop();
    let clean = if leftovers.is_empty() {
        println!("cleanup: done, no redis-server of the benchmark's clusters is left");
        true
    } else {
        eprintln!(
            "cleanup: killed {} surviving redis-server process(es): {}",
            leftovers.len(),
            summarize(&leftovers)
        );
        false
    };
    if args.keep {
        println!(
            "kept {} (operator.log, dev.log, dev/)",
            dir.keep().display()
        );
    }
    match result {
        Ok(()) if clean => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// The first SIGINT or SIGTERM, so a Ctrl-C or `timeout` still cleans up.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

async fn run(args: &Args, dir: &Path, procs: &mut Procs) -> anyhow::Result<()> {
    ensure!(args.clusters > 0, "--clusters must be at least 1");
    let last_base =
        u32::from(args.base_port) + u32::from(PORT_STRIDE) * u32::from(args.clusters - 1);
    ensure!(
        last_base + u32::from(PORTS_PER_CLUSTER) + 10000 <= 65535,
        "--base-port {} with {} clusters runs out of ports",
        args.base_port,
        args.clusters
    );
    let kredis = kredis_binary(args)?;
    let clk_tck = clock_ticks();
    preflight(args)?;
    print_machine(&kredis);

    // 1. The control plane.
    let api_port = free_port()?;
    let dev_dir = dir.join("dev");
    let dev_log = std::fs::File::create(dir.join("dev.log"))?;
    let dev = Command::new(&kredis)
        .args(["dev", "--no-operator", "--port", &api_port.to_string()])
        .args(["--nodes", &args.nodes.to_string(), "--dir"])
        .arg(&dev_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(dev_log.try_clone()?)
        .stderr(dev_log)
        .spawn()
        .with_context(|| format!("failed to start {} dev", kredis.display()))?;
    let dev_pid = dev.id();
    procs.dev = Some(dev);
    let kubeconfig = dev_dir.join("kubeconfig");
    let t = Instant::now();
    let client = loop {
        procs.check_alive()?;
        if kubeconfig.exists() {
            if let Ok(c) = client_from(&kubeconfig).await {
                if c.apiserver_version().await.is_ok() {
                    break c;
                }
            }
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "kredis dev did not come up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "kredis dev: pid {dev_pid}, API at 127.0.0.1:{api_port}, {} nodes, up in {:.1} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );

    // 2. The CRD, exactly as the binary under test prints it.
    let out = Command::new(&kredis)
        .arg("crd")
        .output()
        .context("kredis crd")?;
    ensure!(
        out.status.success(),
        "kredis crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crd: DynamicObject =
        serde_saphyr::from_str(&String::from_utf8(out.stdout)?).context("parse the CRD")?;
    let crd_api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crd_api
        .create(&PostParams::default(), &crd)
        .await
        .context("install the KRedis CRD")?;
    let kredis_api: Api<KRedis> = Api::namespaced(client.clone(), "default");
    let t = Instant::now();
    while kredis_api.list(&ListParams::default()).await.is_err() {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the KRedis resource is not served 30 s after its CRD"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("CRD installed (from `kredis crd`)");

    // 3. The operator, as its own process.
    let http_port = free_port()?;
    let op_log = std::fs::File::create(dir.join("operator.log"))?;
    let operator = Command::new(&kredis)
        .arg("operator")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .env("RUST_LOG", &args.operator_log)
        .env_remove("KREDIS_NAMESPACE")
        .env_remove("KREDIS_LEADER_ELECT")
        .stdin(Stdio::null())
        .stdout(op_log.try_clone()?)
        .stderr(op_log)
        .spawn()
        .context("failed to start kredis operator")?;
    let op_pid = operator.id();
    procs.operator = Some(operator);
    let t = Instant::now();
    loop {
        procs.check_alive()?;
        if matches!(http_get(http_port, "/readyz").await, Ok((200, _))) {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "the operator's /readyz did not answer 200 within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "operator: pid {op_pid}, HTTP API at 127.0.0.1:{http_port}, ready in {:.1} s (RUST_LOG={})",
        t.elapsed().as_secs_f64(),
        args.operator_log
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = ProcSample::read(op_pid)?;
    println!("operator before any KRedis: {}", baseline.describe(clk_tck));

    // 4. The clusters.
    let names: Vec<String> = (0..args.clusters)
        .map(|i| format!("bench-{i:02}"))
        .collect();
    let start = Instant::now();
    let start_sample = ProcSample::read(op_pid)?;
    let dev_start = ProcSample::read(dev_pid)?;
    for (i, name) in names.iter().enumerate() {
        let base = u32::from(args.base_port) + u32::from(PORT_STRIDE) * i as u32;
        let k: KRedis = serde_json::from_value(serde_json::json!({
            "apiVersion": "kredis.io/v1alpha1",
            "kind": "KRedis",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"masters": 3, "replicasPerMaster": 1, "basePort": base},
        }))?;
        kredis_api
            .create(&PostParams::default(), &k)
            .await
            .with_context(|| format!("create KRedis {name}"))?;
    }
    println!(
        "created {} KRedis (3 masters x 1 replica, basePort {}..={} step {PORT_STRIDE}) in {:.2} s; waiting for Ready (timeout {} s)",
        names.len(),
        args.base_port,
        last_base,
        start.elapsed().as_secs_f64(),
        args.timeout_secs
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut ready_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    let mut last_ready = usize::MAX;
    loop {
        procs.check_alive()?;
        let list = kredis_api
            .list(&ListParams::default())
            .await
            .context("list KRedis")?;
        let mut phases: BTreeMap<String, usize> = BTreeMap::new();
        let mut ready_now = 0;
        for k in &list.items {
            let status = k.status.as_ref();
            let phase = status.and_then(|s| s.phase);
            // Ready for the spec it was given, not a status left from an earlier generation.
            let current = status.and_then(|s| s.observed_generation) == k.metadata.generation;
            if phase == Some(Phase::Ready) && current {
                ready_now += 1;
                let name = k.metadata.name.clone().unwrap_or_default();
                ready_at.entry(name).or_insert_with(|| start.elapsed());
            }
            let label = phase.map_or_else(|| "(none)".to_owned(), |p| format!("{p:?}"));
            *phases.entry(label).or_default() += 1;
        }
        let sample = ProcSample::read(op_pid)?;
        if ready_now != last_ready || last_print.elapsed() >= Duration::from_secs(10) {
            let mut ph = String::new();
            for (p, n) in &phases {
                let _ = write!(ph, " {p}={n}");
            }
            println!(
                "[{:6.1} s] Ready {ready_now}/{} |{ph} | operator {}",
                start.elapsed().as_secs_f64(),
                names.len(),
                sample.describe(clk_tck)
            );
            last_print = Instant::now();
            last_ready = ready_now;
        }
        if ready_now == names.len() && list.items.len() == names.len() {
            break;
        }
        if start.elapsed() > timeout {
            let waiting: Vec<&String> = names
                .iter()
                .filter(|n| !ready_at.contains_key(*n))
                .collect();
            bail!(
                "not every KRedis is Ready after {} s; never Ready: {waiting:?}",
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let to_ready = start.elapsed();
    let at_ready = ProcSample::read(op_pid)?;
    let dev_at_ready = ProcSample::read(dev_pid)?;
    let metrics_ready = Metrics::scrape(http_port).await;
    let mut each: Vec<f64> = ready_at.values().map(Duration::as_secs_f64).collect();
    each.sort_by(f64::total_cmp);
    let redis_pids = redis_children(dev_pid);
    procs.redis.extend(redis_pids.iter().copied());
    println!(
        "\nall {} KRedis Ready in {:.1} s (first {:.1} s, median {:.1} s, last {:.1} s); {} redis-server processes running",
        names.len(),
        to_ready.as_secs_f64(),
        each[0],
        each[each.len() / 2],
        each[each.len() - 1],
        redis_pids.len()
    );
    println!("operator at all-Ready: {}", at_ready.describe(clk_tck));

    // 5. Idle.
    println!(
        "idling {} s (the bench makes no API calls meanwhile)",
        args.idle_secs
    );
    let redis_idle_start: u64 = redis_pids
        .iter()
        .filter_map(|p| ProcSample::read(*p).ok())
        .map(|s| s.cpu_ticks)
        .sum();
    let idle_start = Instant::now();
    let mut timeline = Vec::new();
    let step = Duration::from_secs(10);
    while idle_start.elapsed() < Duration::from_secs(args.idle_secs) {
        let left = Duration::from_secs(args.idle_secs).saturating_sub(idle_start.elapsed());
        tokio::time::sleep(left.min(step)).await;
        procs.check_alive()?;
        let s = ProcSample::read(op_pid)?;
        timeline.push(format!(
            "{:.0}s:{:.2}",
            idle_start.elapsed().as_secs_f64(),
            (s.cpu_ticks - at_ready.cpu_ticks) as f64 / clk_tck
        ));
    }
    let idle_elapsed = idle_start.elapsed();
    let after_idle = ProcSample::read(op_pid)?;
    let dev_after_idle = ProcSample::read(dev_pid)?;
    let redis_idle_end: u64 = redis_pids
        .iter()
        .filter_map(|p| ProcSample::read(*p).ok())
        .map(|s| s.cpu_ticks)
        .sum();
    let metrics_idle = Metrics::scrape(http_port).await;
    let list = kredis_api.list(&ListParams::default()).await?;
    let still_ready = list
        .items
        .iter()
        .filter(|k| k.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready))
        .count();
    procs.redis.extend(redis_children(dev_pid));

    // Report.
    let idle_cpu = (after_idle.cpu_ticks - at_ready.cpu_ticks) as f64 / clk_tck;
    let idle_target = IDLE_CPU_TARGET_FRACTION * idle_elapsed.as_secs_f64();
    let create_cpu = (at_ready.cpu_ticks - start_sample.cpu_ticks) as f64 / clk_tck;
    let peak = after_idle.hwm_kib.max(at_ready.hwm_kib);
    println!(
        "\n=== kredis operator, {} KRedis of 3x1 ({} redis-server) ===",
        names.len(),
        redis_pids.len()
    );
    println!(
        "time to all Ready              {:8.1} s",
        to_ready.as_secs_f64()
    );
    println!(
        "operator CPU, start to Ready   {:8.2} s  (total since start {:.2} s)",
        create_cpu,
        at_ready.cpu_ticks as f64 / clk_tck
    );
    println!(
        "operator peak RSS (VmHWM)      {:8.1} MiB at all-Ready, {:.1} MiB after idle",
        mib(at_ready.hwm_kib),
        mib(after_idle.hwm_kib)
    );
    println!("operator RSS (VmRSS)           {:8.1} MiB at all-Ready, {:.1} MiB after idle, {:.1} MiB before any KRedis", mib(at_ready.rss_kib), mib(after_idle.rss_kib), mib(baseline.rss_kib));
    println!("operator threads               {:8}", after_idle.threads);
    println!("operator CPU while idle        {:8.2} s in {:.1} s ({:.2}% of one core); cumulative every 10 s: {}", idle_cpu, idle_elapsed.as_secs_f64(), 100.0 * idle_cpu / idle_elapsed.as_secs_f64(), timeline.join(" "));
    if let (Some(a), Some(b)) = (&metrics_ready, &metrics_idle) {
        let runs = b.reconcile_runs - a.reconcile_runs;
        let expected = f64::from(args.clusters) * idle_elapsed.as_secs_f64() / RESYNC.as_secs_f64();
        let secs = b.reconcile_seconds - a.reconcile_seconds;
        println!(
            "reconciles while idle          {runs:8.0}  (expected about {expected:.0}: one per cluster per {} s); {:.1} ms wall and {:.1} ms CPU each",
            RESYNC.as_secs(),
            if runs > 0.0 { 1000.0 * secs / runs } else { 0.0 },
            if runs > 0.0 { 1000.0 * idle_cpu / runs } else { 0.0 }
        );
        println!(
            "reconciles, start to Ready     {:8.0}  (failures {:.0}); {:.0} reconciles in total",
            a.reconcile_runs, a.reconcile_failures, b.reconcile_runs
        );
    }
    println!(
        "context: kredis dev (API server + kubelets) used {:.2} CPU-s to Ready, {:.2} CPU-s while idle; the {} redis-server used {:.2} CPU-s while idle",
        (dev_at_ready.cpu_ticks - dev_start.cpu_ticks) as f64 / clk_tck,
        (dev_after_idle.cpu_ticks - dev_at_ready.cpu_ticks) as f64 / clk_tck,
        redis_pids.len(),
        redis_idle_end.saturating_sub(redis_idle_start) as f64 / clk_tck
    );
    println!(
        "still Ready after idle         {still_ready:8}/{}",
        names.len()
    );
    let rss_ok = peak < RSS_TARGET_KIB;
    let idle_ok = idle_cpu <= idle_target;
    println!(
        "\ntarget peak RSS < 64 MiB                         {:>4}  ({:.1} MiB)",
        verdict(rss_ok),
        mib(peak)
    );
    println!(
        "target idle CPU ~0 (<= 1% of a core = {:.2} s)    {:>4}  ({:.2} s)",
        idle_target,
        verdict(idle_ok),
        idle_cpu
    );
    ensure!(
        still_ready == names.len(),
        "only {still_ready}/{} KRedis are still Ready after the idle period",
        names.len()
    );
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The kredis binary: `--kredis`, else built with cargo for this profile (under `cargo run`),
/// else the one next to this example's directory.
fn kredis_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.kredis {
        ensure!(path.is_file(), "--kredis {} is not a file", path.display());
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/examples/operator_bench -> target/<profile>/kredis
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target directory from this executable")?;
    let path = profile_dir.join("kredis");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "-p",
                "kredis",
                "--bin",
                "kredis",
                "--manifest-path",
            ])
            .arg(&manifest);
        // Not the variables `cargo run` gave this process: build scripts (ring's) track
        // CARGO_PKG_*, so inheriting them would rebuild half the tree now and again next time.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_MAKEFLAGS",
                ]
                .contains(&k.as_ref())
            {
                build.env_remove(&key);
            }
        }
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        println!("building the kredis binary: {build:?}");
        let status = build.status().context("run cargo build")?;
        ensure!(status.success(), "cargo build -p kredis failed");
    } else {
        println!(
            "not run by cargo: using {} as built (pass --kredis to choose)",
            path.display()
        );
    }
    ensure!(
        path.is_file(),
        "no kredis binary at {}: build it (cargo build -p kredis) or pass --kredis",
        path.display()
    );
    Ok(path)
}

/// Refuses to start if the ports this run needs on the node addresses are taken (another
/// `kredis dev`, e.g. `make run`, in the 127.1 block).
fn preflight(args: &Args) -> anyhow::Result<()> {
    let mut busy = Vec::new();
    for node in 1..=args.nodes {
        let ip = std::net::Ipv4Addr::new(127, 1, 0, node);
        for c in 0..args.clusters {
            for i in 0..PORTS_PER_CLUSTER {
                let port = args.base_port + PORT_STRIDE * c + i;
                for p in [port, port + 5000, port + 10000] {
                    if std::net::TcpListener::bind((ip, p)).is_err() {
                        busy.push(format!("{ip}:{p}"));
                    }
                }
            }
        }
    }
    ensure!(
        busy.is_empty(),
        "ports the benchmark's clusters need are in use (another kredis dev in 127.1.x.x?): {}",
        busy.join(" ")
    );
    let others = redis_servers_in(args.base_port, port_end(args));
    ensure!(
        others.is_empty(),
        "redis-server processes already use the benchmark's ports: {others:?}"
    );
    Ok(())
}

fn port_end(args: &Args) -> u16 {
    args.base_port + PORT_STRIDE * args.clusters
}

fn print_machine(kredis: &Path) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "redis-server not found".into());
    println!(
        "machine: {cores} cores ({cpu}), {:.1} GiB RAM, load average {}",
        mib(mem) / 1024.0,
        load.trim()
    );
    println!("{redis}");
    println!(
        "binary: {} ({})",
        kredis.display(),
        if cfg!(debug_assertions) {
            "debug profile"
        } else {
            "release profile"
        }
    );
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (no client dependency): status code and body.
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fetch).await??;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((code, body))
}

/// The operator's own counters, from /metrics.
struct Metrics {
    reconcile_runs: f64,
    reconcile_failures: f64,
    reconcile_seconds: f64,
}

impl Metrics {
    async fn scrape(port: u16) -> Option<Metrics> {
        let (code, body) = http_get(port, "/metrics").await.ok()?;
        (code == 200).then(|| Metrics {
            reconcile_runs: metric_sum(&body, "kredis_reconcile_runs_total"),
            reconcile_failures: metric_sum(&body, "kredis_reconcile_failures_total"),
            reconcile_seconds: metric_sum(&body, "kredis_reconcile_duration_seconds_sum"),
        })
    }
}

/// Sum of every sample of `name` (all label sets).
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| {
            let value_part = match l.rfind('}') {
                Some(i) => &l[i + 1..],
                None => &l[name.len()..],
            };
            value_part.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(0.0, |a, b| a + b)
}

/// Memory and CPU of one process, from /proc.
#[derive(Clone, Copy, Debug)]
struct ProcSample {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

impl ProcSample {
    fn read(pid: u32) -> anyhow::Result<ProcSample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status (process gone?)"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cpu_ticks = stat_cpu_ticks(pid).with_context(|| format!("read /proc/{pid}/stat"))?;
        Ok(ProcSample {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            threads: field("Threads:"),
            cpu_ticks,
        })
    }

    fn describe(&self, clk_tck: f64) -> String {
        format!(
            "RSS {:.1} MiB, peak {:.1} MiB, CPU {:.2} s, {} threads",
            mib(self.rss_kib),
            mib(self.hwm_kib),
            self.cpu_ticks as f64 / clk_tck,
            self.threads
        )
    }
}

/// Fields of /proc/<pid>/stat after the command name: (state, ppid, ..., utime at [11], stime at [12]).
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    Some((
        comm,
        stat[close + 1..]
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    ))
}

fn stat_cpu_ticks(pid: u32) -> Option<u64> {
    let (_, f) = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// redis-server processes whose parent is `parent` (the kubelets of `kredis dev` run them).
fn redis_children(parent: u32) -> BTreeSet<u32> {
    pids()
        .into_iter()
        .filter(|&p| {
            stat_fields(p).is_some_and(|(comm, f)| {
                comm == "redis-server"
                    && f.get(1).and_then(|pp| pp.parse::<u32>().ok()) == Some(parent)
            })
        })
        .collect()
}

/// redis-server processes listening on 127.1.x.y:<port> with port in [from, to) (the client
/// ports of the benchmark's clusters), with their command lines.
fn redis_servers_in(from: u16, to: u16) -> Vec<(u32, String)> {
    pids()
        .into_iter()
        .filter_map(|p| {
            let raw = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if !cmd.contains("redis-server") {
                return None;
            }
            let ours = cmd.split_whitespace().any(|tok| {
                tok.strip_prefix("127.1.")
                    .and_then(|rest| rest.rsplit_once(':'))
                    .and_then(|(_, port)| port.parse::<u16>().ok())
                    .is_some_and(|port| (from..to).contains(&port))
            });
            ours.then(|| (p, cmd.trim().to_owned()))
        })
        .collect()
}

/// The processes this benchmark started; stopped on drop (error, panic) or by `stop`.
struct Procs {
    operator: Option<Child>,
    dev: Option<Child>,
    /// redis-server pids seen as children of `kredis dev`.
    redis: BTreeSet<u32>,
    ports: (u16, u16),
    stopped: bool,
}

impl Procs {
    fn new(args: &Args) -> Procs {
        Procs {
            operator: None,
            dev: None,
            redis: BTreeSet::new(),
            ports: (args.base_port, port_end(args)),
            stopped: false,
        }
    }

    /// An error if a child exited on its own.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in [
            ("operator", &mut self.operator),
            ("kredis dev", &mut self.dev),
        ] {
            if let Some(c) = child {
                if let Some(status) = c.try_wait()? {
                    bail!("{name} (pid {}) exited: {status}", c.id());
                }
            }
        }
        Ok(())
    }

    /// Stops the operator, then `kredis dev` (SIGINT: it stops its pods; SIGKILL after a
    /// grace period), then kills any redis-server of ours still alive. Returns the survivors
    /// that had to be killed.
    fn stop(&mut self) -> Vec<(u32, String)> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        if let Some(c) = self.operator.take() {
            interrupt_and_wait(c, "operator", Duration::from_secs(20));
        }
        if let Some(c) = self.dev.take() {
            self.redis.extend(redis_children(c.id()));
            interrupt_and_wait(c, "kredis dev", Duration::from_secs(60));
        }
        // Give orphans a moment to finish exiting before looking.
        std::thread::sleep(Duration::from_millis(500));
        let mut survivors = redis_servers_in(self.ports.0, self.ports.1);
        for &p in &self.redis {
            if !survivors.iter().any(|(q, _)| *q == p)
                && stat_fields(p).is_some_and(|(comm, _)| comm == "redis-server")
            {
                survivors.push((p, "redis-server (child of our kredis dev)".into()));
            }
        }
        for (p, _) in &survivors {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status();
        }
        survivors
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        let left = self.stop();
        if !left.is_empty() {
            eprintln!(
                "cleanup: killed {} surviving redis-server process(es): {}",
                left.len(),
                summarize(&left)
            );
        }
    }
}

/// The first few of a list of processes, for messages.
fn summarize(procs: &[(u32, String)]) -> String {
    let mut out: Vec<String> = procs
        .iter()
        .take(5)
        .map(|(p, c)| format!("{p} {c}"))
        .collect();
    if procs.len() > 5 {
        out.push(format!("and {} more", procs.len() - 5));
    }
    out.join("; ")
}

/// SIGINT, wait up to `grace`, then SIGKILL.
fn interrupt_and_wait(mut child: Child, name: &str, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let t = Instant::now();
    while t.elapsed() < grace {
        match child.try_wait() {
            Ok(Some(status)) => {
                println!("cleanup: {name} (pid {}) exited: {status}", child.id());
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break,
        }
    }
    eprintln!(
        "cleanup: {name} (pid {}) did not stop within {grace:?} of SIGINT: SIGKILL",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
