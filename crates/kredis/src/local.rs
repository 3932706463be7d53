//! `kredis local`: a Redis Cluster of local redis-server processes, created by the engine
//! alone (no Kubernetes). Foreground until Ctrl-C/SIGTERM; every process dies with it.

use std::path::PathBuf;

use anyhow::Context as _;
use kredis_engine::admin::{Admin, AdminConfig, Credentials};
use kredis_engine::exec::ExecOptions;
use kredis_engine::local::{free_port_pair, LocalNode, LocalNodeConfig, BUS_PORT_OFFSET};
use kredis_engine::model::Role;
use kredis_engine::plan::{Desired, Member, Policy};
use kredis_engine::reconcile::converge;

/// Arguments of `kredis local`.
#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Number of masters.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Replicas per master.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// First client port (node i listens on base-port + i; bus port = port + 10000).
    /// Default: a free range picked at start.
    #[arg(long)]
    base_port: Option<u16>,
    /// Password for every node (requirepass + masterauth). Default: none.
    #[arg(long, env = "KREDIS_LOCAL_PASSWORD")]
    password: Option<String>,
    /// Directory for the nodes' files (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Simulated worker nodes the processes are spread over (replicas avoid their master's).
    #[arg(long, default_value_t = 3)]
    workers: usize,
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.masters >= 1, "--masters must be at least 1");
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    let count = args.masters * (1 + args.replicas);
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("kredis-local-")
                .tempdir()
                .context("failed to create a directory")?;
            tmp.path().to_path_buf()
        }
    };
    let config = LocalNodeConfig {
        password: args.password.clone(),
        ..LocalNodeConfig::default()
    };
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let port = match args.base_port {
            Some(base) => {
                let port = base
                    .checked_add(u16::try_from(i)?)
                    .context("port overflow")?;
                anyhow::ensure!(
                    port.checked_add(BUS_PORT_OFFSET).is_some(),
                    "bus port of {port} exceeds 65535"
                );
                port
            }
            None => free_port_pair()?,
        };
        let node = LocalNode::start_in(&dir.join(format!("node-{i}")), port, config.clone())
            .await
            .with_context(|| format!("failed to start node {i}"))?;
        nodes.push(node);
    }
    let members: Vec<Member> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Member {
            name: format!("node-{i}"),
            addr: n.addr().clone(),
            bus_port: n.bus_port(),
            worker: format!("worker-{}", i % args.workers),
            shard: None,
            terminating: false,
        })
        .collect();
    let admin = Admin::new(AdminConfig {
        credentials: Credentials {
            username: None,
            password: args.password.clone(),
        },
        ..AdminConfig::default()
    });
    let desired = Desired {
        masters: args.masters,
        replicas_per_master: args.replicas,
    };
    let report = converge(
        &admin,
        &ExecOptions::default(),
        &desired,
        &members,
        &Policy::default(),
    )
    .await
    .context("failed to create the cluster")?;
    for note in &report.notes {
        println!("note: {note:?}");
    }
    println!(
        "Redis Cluster ready: {} masters x {} replicas ({} steps)",
        args.masters, args.replicas, report.steps
    );
    for (id, obs) in &report.view.observed {
        let role = match obs.myself().map(|m| m.role()) {
            Some(Role::Master) => format!(
                "master  slots {}",
                report
                    .view
                    .nodes
                    .get(id)
                    .map(|n| n.slots.to_string())
                    .unwrap_or_default()
            ),
            _ => format!(
                "replica of {}",
                obs.myself()
                    .and_then(|m| m.master.as_ref())
                    .map(|m| m.short().to_owned())
                    .unwrap_or_default()
            ),
        };
        println!("  {}  {}  {role}", obs.addr, id.short());
    }
    let first = &members[0].addr;
    let auth = args
        .password
        .as_ref()
        .map(|_| " -a <password>")
        .unwrap_or_default();
    println!(
        "\nConnect:  redis-cli -c -h {} -p {}{auth}",
        first.host, first.port
    );
    println!("Check:    redis-cli --cluster check {first}{auth}");
    println!("Files:    {}", dir.display());
    println!("Press Ctrl-C to stop every node.");
    wait_for_shutdown().await?;
    drop(nodes);
    println!("stopped");
    Ok(())
}

async fn wait_for_shutdown() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).context("failed to install a SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("failed to wait for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
