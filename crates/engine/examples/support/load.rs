//! Client load for `migration_bench --load N` (issue 7, "Load"): N tasks on one redis-rs
//! cluster connection (the independent client, with its own MOVED/ASK handling), each
//! alternating a SET and a GET of the loaded keys. Every SET writes the key's original value
//! again, so the bench's DBSIZE and content checks still hold; every GET must return exactly
//! that value (a nil or a different value is a wrong read). Counts are kept per phase: before
//! the timed step, during it, and after it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;

use super::{key, value, Result};

/// The phases of one timed step.
pub const PHASES: [&str; 3] = ["before", "during", "after"];

/// How long each task waits for one command before counting it failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one task saw in one phase.
#[derive(Default, Clone)]
struct Tally {
    ok: u64,
    errors: u64,
    wrong_reads: u64,
    /// Latency of each successful command, in microseconds.
    micros: Vec<u32>,
    /// The first error's text, to say what failed.
    first_error: Option<String>,
}

/// A running load.
pub struct Load {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    started: [Option<Instant>; 3],
    ended: [Option<Instant>; 3],
    tasks: Vec<tokio::task::JoinHandle<[Tally; 3]>>,
}

/// One phase's totals.
pub struct PhaseReport {
    pub name: &'static str,
    pub seconds: f64,
    pub ok: u64,
    pub errors: u64,
    pub wrong_reads: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub first_error: Option<String>,
}

impl Load {
    /// Starts `tasks` clients over keys `0..keys` of `value_bytes`, seeded from `seeds`
    /// (`host:port`). The phase is "before" until [`Load::next_phase`].
    /// `per_task`: each task gets a cluster connection of its own instead of sharing one.
    pub async fn start(
        seeds: &[String],
        tasks: usize,
        keys: usize,
        value_bytes: usize,
        per_task: bool,
    ) -> Result<Load> {
        let urls: Vec<String> = seeds.iter().map(|s| format!("redis://{s}")).collect();
        let client = redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(RESPONSE_TIMEOUT)
            .build()?;
        let shared = client.get_async_connection().await?;
        let phase = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for t in 0..tasks {
            // One multiplexed connection shared by every task, as an application would; or,
            // to take redis-rs' shared-connection ASKING race out of the picture, one each.
            let mut conn = if per_task {
                client.get_async_connection().await?
            } else {
                shared.clone()
            };
            let phase = Arc::clone(&phase);
            let stop = Arc::clone(&stop);
            // xorshift64, seeded per task: no shared RNG on the hot path.
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64 + 1).wrapping_mul(0xBF58_476D);
            handles.push(tokio::spawn(async move {
                let mut tally: [Tally; 3] = Default::default();
                let mut write = true;
                while !stop.load(Ordering::Relaxed) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let i = (state % keys as u64) as usize;
                    let k = key(i);
                    let want = value(i, value_bytes);
                    let p = usize::from(phase.load(Ordering::Relaxed)).min(2);
                    let began = Instant::now();
                    let outcome = if write {
                        conn.set::<_, _, ()>(&k, &want).await.map(|()| true)
                    } else {
                        conn.get::<_, Option<Vec<u8>>>(&k)
                            .await
                            .map(|got| got.as_deref() == Some(&want[..]))
                    };
                    write = !write;
                    let tally = &mut tally[p];
                    match outcome {
                        Ok(true) => {
                            tally.ok += 1;
                            let us = began.elapsed().as_micros();
                            tally.micros.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Ok(false) => tally.wrong_reads += 1,
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert_with(|| e.to_string());
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                tally
            }));
        }
        Ok(Load {
            phase,
            stop,
            started: [Some(Instant::now()), None, None],
            ended: [None; 3],
            tasks: handles,
        })
    }

    /// Ends the current phase and starts the next one.
    pub fn next_phase(&mut self) {
        let p = usize::from(self.phase.load(Ordering::Relaxed));
        if p >= 2 {
            return;
        }
        let now = Instant::now();
        self.ended[p] = Some(now);
        self.started[p + 1] = Some(now);
        self.phase.store(p as u8 + 1, Ordering::Relaxed);
    }

    /// Stops every task and sums their tallies per phase.
    pub async fn stop(mut self) -> Result<Vec<PhaseReport>> {
        let now = Instant::now();
        let p = usize::from(self.phase.load(Ordering::Relaxed)).min(2);
        self.ended[p] = Some(now);
        self.stop.store(true, Ordering::Relaxed);
        let mut sum: [Tally; 3] = Default::default();
        for h in self.tasks.drain(..) {
            for (total, t) in sum.iter_mut().zip(h.await?) {
                total.ok += t.ok;
                total.errors += t.errors;
                total.wrong_reads += t.wrong_reads;
                total.micros.extend(t.micros);
                if total.first_error.is_none() {
                    total.first_error = t.first_error;
                }
            }
        }
        let mut out = Vec::new();
        for (i, mut t) in sum.into_iter().enumerate() {
            let seconds = match (self.started[i], self.ended[i]) {
                (Some(a), Some(b)) => (b - a).as_secs_f64(),
                _ => continue,
            };
            t.micros.sort_unstable();
            let at = |q: f64| {
                let n = t.micros.len();
                if n == 0 {
                    return 0.0;
                }
                let idx = ((n as f64 * q) as usize).min(n - 1);
                f64::from(t.micros[idx]) / 1000.0
            };
            out.push(PhaseReport {
                name: PHASES[i],
                seconds,
                ok: t.ok,
                errors: t.errors,
                wrong_reads: t.wrong_reads,
                p50_ms: at(0.5),
                p99_ms: at(0.99),
                max_ms: t.micros.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
                first_error: t.first_error,
            });
        }
        Ok(out)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Prints one step's load table.
pub fn print_report(step: &str, tool: &str, report: &[PhaseReport]) {
    println!("    load during {step} ({tool}):");
    println!(
        "      {:<7} {:>7} {:>10} {:>9} {:>7} {:>11} {:>8} {:>8} {:>8}",
        "phase",
        "seconds",
        "commands",
        "cmds/s",
        "errors",
        "wrong reads",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for r in report {
        println!(
            "      {:<7} {:>7.2} {:>10} {:>9.0} {:>7} {:>11} {:>8.2} {:>8.2} {:>8.1}",
            r.name,
            r.seconds,
            r.ok,
            r.ok as f64 / r.seconds.max(1e-9),
            r.errors,
            r.wrong_reads,
            r.p50_ms,
            r.p99_ms,
            r.max_ms
        );
        if let Some(e) = &r.first_error {
            println!("        first error: {e}");
        }
    }
}
