//! Prometheus metrics of the operator (prometheus-client), served at `/metrics`. No network
//! of its own. Names and labels are a contract (dashboards and alerts use them);
//! `docs/monitoring.md` lists them, and `tests/monitoring.rs` checks that every name the
//! dashboard and the alerts use is exported here.

use std::sync::atomic::AtomicU64;

use kredis_api::{KRedisStatus, Phase};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels naming one cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// Namespace of the KRedis.
    pub namespace: String,
    /// Name of the KRedis.
    pub name: String,
}

/// Labels of a failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The error's stable category.
    pub category: String,
}

/// Labels of a failover.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    /// Namespace of the KRedis.
    pub namespace: String,
    /// Name of the KRedis.
    pub name: String,
    /// graceful, force or takeover.
    pub mode: String,
}

/// Labels of the phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Namespace of the KRedis.
    pub namespace: String,
    /// Name of the KRedis.
    pub name: String,
    /// The phase.
    pub phase: PhaseValue,
}

/// A phase as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PhaseValue {
    /// Pending.
    Pending,
    /// Creating.
    Creating,
    /// Ready.
    Ready,
    /// Scaling.
    Scaling,
    /// Healing.
    Healing,
    /// Degraded.
    Degraded,
    /// Invalid.
    Invalid,
    /// Deleting.
    Deleting,
}

const PHASES: [PhaseValue; 8] = [
    PhaseValue::Pending,
    PhaseValue::Creating,
    PhaseValue::Ready,
    PhaseValue::Scaling,
    PhaseValue::Healing,
    PhaseValue::Degraded,
    PhaseValue::Invalid,
    PhaseValue::Deleting,
];

fn phase_value(p: Phase) -> PhaseValue {
    match p {
        Phase::Pending => PhaseValue::Pending,
        Phase::Creating => PhaseValue::Creating,
        Phase::Ready => PhaseValue::Ready,
        Phase::Scaling => PhaseValue::Scaling,
        Phase::Healing => PhaseValue::Healing,
        Phase::Degraded => PhaseValue::Degraded,
        Phase::Invalid => PhaseValue::Invalid,
        Phase::Deleting => PhaseValue::Deleting,
    }
}

/// Values of the `mode` label of `kredis_failovers_total`.
pub const FAILOVER_MODES: [&str; 3] = ["graceful", "force", "takeover"];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms .. ~160 s: a no-op reconcile up to a large migration.
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// `kredis_reconcile_runs_total`.
    pub reconcile_runs: Counter,
    /// `kredis_reconcile_failures_total{category}`.
    pub reconcile_failures: Family<FailureLabels, Counter>,
    /// `kredis_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `kredis_cluster_ready_masters{namespace,name}`.
    pub ready_masters: Family<ClusterLabels, Gauge>,
    /// `kredis_cluster_ready_replicas{namespace,name}`.
    pub ready_replicas: Family<ClusterLabels, Gauge>,
    /// `kredis_cluster_desired_masters{namespace,name}`.
    pub desired_masters: Family<ClusterLabels, Gauge>,
    /// `kredis_cluster_desired_replicas{namespace,name}` (replicas in total).
    pub desired_replicas: Family<ClusterLabels, Gauge>,
    /// `kredis_cluster_slots_assigned{namespace,name}`.
    pub slots_assigned: Family<ClusterLabels, Gauge>,
    /// `kredis_cluster_ready_nodes{namespace,name}`.
    pub ready_nodes: Family<ClusterLabels, Gauge>,
    /// `kredis_cluster_phase{namespace,name,phase}`: 1 for the current phase, else 0.
    pub phase: Family<PhaseLabels, Gauge>,
    /// `kredis_failovers_total{namespace,name,mode}`.
    pub failovers: Family<FailoverLabels, Counter>,
    /// `kredis_slots_migrated_total{namespace,name}`.
    pub slots_migrated: Family<ClusterLabels, Counter>,
    /// `kredis_keys_migrated_total{namespace,name}`.
    pub keys_migrated: Family<ClusterLabels, Counter>,
    /// `kredis_operation_duration_seconds{namespace,name}`: wall time of reconciles that
    /// changed something.
    pub operation_duration: HistogramFamily<ClusterLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kredis");
        let m = Metrics {
            reconcile_runs: Counter::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: duration_histogram(),
            ready_masters: Family::default(),
            ready_replicas: Family::default(),
            desired_masters: Family::default(),
            desired_replicas: Family::default(),
            slots_assigned: Family::default(),
            ready_nodes: Family::default(),
            phase: Family::default(),
            failovers: Family::default(),
            slots_migrated: Family::default(),
            keys_migrated: Family::default(),
            operation_duration: Family::new_with_constructor(duration_histogram),
            registry: Registry::default(),
        };
        registry.register("reconcile_runs", "Reconciles run", m.reconcile_runs.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error category",
            m.reconcile_failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            m.reconcile_duration.clone(),
        );
        let gauges = [
            (
                "cluster_ready_masters",
                "Masters that serve slots and are ready",
                &m.ready_masters,
            ),
            (
                "cluster_ready_replicas",
                "Replicas linked to their master and ready",
                &m.ready_replicas,
            ),
            (
                "cluster_desired_masters",
                "Masters the spec asks for",
                &m.desired_masters,
            ),
            (
                "cluster_desired_replicas",
                "Replicas in total the spec asks for",
                &m.desired_replicas,
            ),
            (
                "cluster_slots_assigned",
                "Slots (of 16384) served by some master",
                &m.slots_assigned,
            ),
            (
                "cluster_ready_nodes",
                "Pods whose Redis node is ready",
                &m.ready_nodes,
            ),
        ];
        for (name, help, family) in gauges {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "cluster_phase",
            "1 for the cluster's current phase, 0 for the others",
            m.phase.clone(),
        );
        registry.register(
            "failovers",
            "Failovers the operator triggered, by mode",
            m.failovers.clone(),
        );
        registry.register(
            "slots_migrated",
            "Slots moved with their keys",
            m.slots_migrated.clone(),
        );
        registry.register(
            "keys_migrated",
            "Keys moved by slot migrations",
            m.keys_migrated.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Duration of reconciles that changed the cluster",
            m.operation_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records a cluster's status in the per-cluster gauges.
    pub fn record_status(
        &self,
        namespace: &str,
        name: &str,
        status: &KRedisStatus,
        masters: u32,
        replicas: u32,
    ) {
        let l = ClusterLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.ready_masters
            .get_or_create(&l)
            .set(i64::from(status.ready_masters));
        self.ready_replicas
            .get_or_create(&l)
            .set(i64::from(status.ready_replicas));
        self.desired_masters
            .get_or_create(&l)
            .set(i64::from(masters));
        self.desired_replicas
            .get_or_create(&l)
            .set(i64::from(masters * replicas));
        self.slots_assigned
            .get_or_create(&l)
            .set(i64::from(status.slots_assigned));
        let ready_nodes = status
            .ready_display
            .as_deref()
            .and_then(|d| d.split('/').next())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0);
        self.ready_nodes.get_or_create(&l).set(ready_nodes);
        // Counters exist from the first status on, so rate()/increase() see their first step.
        drop(self.slots_migrated.get_or_create(&l));
        drop(self.keys_migrated.get_or_create(&l));
        for mode in FAILOVER_MODES {
            drop(self.failovers.get_or_create(&FailoverLabels {
                namespace: namespace.into(),
                name: name.into(),
                mode: mode.into(),
            }));
        }
        if let Some(phase) = status.phase {
            self.set_phase(namespace, name, Some(phase));
        }
    }

    /// Sets the phase gauge (None: the cluster is gone, remove its series).
    pub fn set_phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        let current = phase.map(phase_value);
        for p in PHASES {
            let l = PhaseLabels {
                namespace: namespace.into(),
                name: name.into(),
                phase: p,
            };
            match current {
                Some(c) => {
                    self.phase.get_or_create(&l).set(i64::from(c == p));
                }
                None => {
                    self.phase.remove(&l);
                }
            }
        }
    }

    /// Removes every per-cluster gauge: a replica that stopped leading no longer knows the
    /// clusters' state, and stale values would mix with the new leader's.
    pub fn forget_all_clusters(&self) {
        for f in self.cluster_gauges() {
            f.clear();
        }
        self.phase.clear();
    }

    /// Every per-cluster gauge family.
    fn cluster_gauges(&self) -> [&Family<ClusterLabels, Gauge>; 6] {
        [
            &self.ready_masters,
            &self.ready_replicas,
            &self.desired_masters,
            &self.desired_replicas,
            &self.slots_assigned,
            &self.ready_nodes,
        ]
    }

    /// Removes every per-cluster series of a deleted cluster.
    pub fn forget_cluster(&self, namespace: &str, name: &str) {
        let l = ClusterLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        for f in self.cluster_gauges() {
            f.remove(&l);
        }
        self.slots_migrated.remove(&l);
        self.keys_migrated.remove(&l);
        for mode in FAILOVER_MODES {
            self.failovers.remove(&FailoverLabels {
                namespace: namespace.into(),
                name: name.into(),
                mode: mode.into(),
            });
        }
        self.set_phase(namespace, name, None);
    }
}

/// Counts moved keys between two reads of the engine's progress counters.
#[derive(Debug, Default)]
pub struct Delta(AtomicU64);

impl Delta {
    /// How much `now` grew since the last call.
    pub fn take(&self, now: u64) -> u64 {
        let before = self.0.swap(now, std::sync::atomic::Ordering::Relaxed);
        now.saturating_sub(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_and_labels() {
        let m = Metrics::new();
        m.reconcile_runs.inc();
        let status = KRedisStatus {
            phase: Some(Phase::Ready),
            ready_masters: 3,
            ready_replicas: 3,
            slots_assigned: 16384,
            ready_display: Some("6/6".into()),
            ..KRedisStatus::default()
        };
        m.record_status("default", "cache", &status, 3, 1);
        let text = m.encode();
        for needle in [
            "kredis_reconcile_runs_total 1",
            "kredis_cluster_slots_assigned{namespace=\"default\",name=\"cache\"} 16384",
            "kredis_cluster_phase{namespace=\"default\",name=\"cache\",phase=\"Ready\"} 1",
            "kredis_cluster_phase{namespace=\"default\",name=\"cache\",phase=\"Healing\"} 0",
            "kredis_cluster_ready_nodes{namespace=\"default\",name=\"cache\"} 6",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
        m.forget_cluster("default", "cache");
        assert!(!m.encode().contains("name=\"cache\""));
    }
}
