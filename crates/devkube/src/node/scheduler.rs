//! The scheduler: binds each unbound pod to a node honouring cordons (`spec.unschedulable`),
//! `nodeSelector`, host-port conflicts and required/preferred pod (anti-)affinity over any
//! topology key (in practice `kubernetes.io/hostname`); spreads by pod count otherwise. A pod
//! that fits nowhere gets `PodScheduled=False` (reason Unschedulable) and a FailedScheduling
//! Event. Talks to the store in-process; no network.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::meta;
use crate::selector::LabelSelector;
use crate::store::{Store, WriteOptions};

/// Runs until aborted.
pub async fn run(store: Arc<Store>) {
    let mut changed = store.subscribe();
    let mut reported: HashSet<(String, String)> = HashSet::new();
    loop {
        changed.borrow_and_update();
        schedule_all(&store, &mut reported);
        tokio::select! {
            res = changed.changed() => if res.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_active(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed"
}

fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Host ports a pod claims (hostNetwork claims its container ports).
fn host_ports(pod: &Value) -> Vec<(i64, String)> {
    let host_net = pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
    let mut out = Vec::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_owned();
            let hp = p.get("hostPort").and_then(Value::as_i64).filter(|x| *x > 0);
            let port = match (hp, host_net) {
                (Some(h), _) => Some(h),
                (None, true) => p.get("containerPort").and_then(Value::as_i64),
                (None, false) => None,
            };
            if let Some(port) = port {
                out.push((port, proto));
            }
        }
    }
    out
}

struct Term {
    selector: LabelSelector,
    namespaces: Vec<String>,
    topology: String,
    weight: i64,
}

fn terms(pod: &Value, path: &str, preferred: bool) -> Vec<Term> {
    let list = pod
        .pointer(path)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|t| {
            let (term, weight) = if preferred {
                (
                    t.get("podAffinityTerm")?,
                    t.get("weight").and_then(Value::as_i64).unwrap_or(1),
                )
            } else {
                (t, 1)
            };
            let selector =
                LabelSelector::from_object(term.get("labelSelector").unwrap_or(&json!({}))).ok()?;
            let mut namespaces: Vec<String> = term
                .get("namespaces")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if namespaces.is_empty() {
                namespaces.push(meta::namespace(pod).to_owned());
            }
            let topology = term
                .get("topologyKey")
                .and_then(Value::as_str)
                .unwrap_or("kubernetes.io/hostname")
                .to_owned();
            Some(Term {
                selector,
                namespaces,
                topology,
                weight,
            })
        })
        .collect()
}

impl Term {
    fn matches(&self, other: &Value) -> bool {
        self.namespaces.iter().any(|n| n == meta::namespace(other)) && self.selector.matches(other)
    }
}

fn domain<'a>(nodes: &'a BTreeMap<String, Arc<Value>>, node: &str, key: &str) -> Option<&'a str> {
    let n = nodes.get(node)?;
    if key == "kubernetes.io/hostname" {
        return Some(meta::label(n, key).unwrap_or(meta::name(n)));
    }
    meta::label(n, key)
}

/// Pods sharing `node`'s topology domain for `key`.
fn in_domain<'a>(
    nodes: &BTreeMap<String, Arc<Value>>,
    placed: &'a [(String, Arc<Value>)],
    node: &str,
    key: &str,
) -> Vec<&'a Value> {
    let Some(d) = domain(nodes, node, key) else {
        return Vec::new();
    };
    placed
        .iter()
        .filter(|(n, _)| domain(nodes, n, key) == Some(d))
        .map(|(_, p)| p.as_ref())
        .collect()
}

fn schedule_all(store: &Store, reported: &mut HashSet<(String, String)>) {
    let Some(pods_info) = store.registry.by_key("pods") else {
        return;
    };
    let (node_list, _) = store.snapshot("nodes", None);
    let nodes: BTreeMap<String, Arc<Value>> = node_list
        .iter()
        .filter(|n| !meta::is_deleting(n))
        .map(|n| (meta::name(n).to_owned(), n.clone()))
        .collect();
    let (pods, _) = store.snapshot("pods", None);
    let mut placed: Vec<(String, Arc<Value>)> = pods
        .iter()
        .filter(|p| !node_of(p).is_empty() && is_active(p) && !meta::is_deleting(p))
        .map(|p| (node_of(p).to_owned(), p.clone()))
        .collect();
    let pending: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| node_of(p).is_empty() && !meta::is_deleting(p) && is_active(p))
        .filter(|p| {
            p.pointer("/spec/schedulerName")
                .and_then(Value::as_str)
                .is_none_or(|s| s == "default-scheduler")
        })
        .collect();
    for pod in pending {
        let pod_name = meta::name(pod).to_owned();
        let ns = meta::namespace(pod).to_owned();
        match pick(&nodes, &placed, pod) {
            Ok(node) => {
                let node_c = node.clone();
                let res = store.mutate(&pods_info, &ns, &pod_name, &WriteOptions::internal("default-scheduler"), |old| {
                    if !node_of(old).is_empty() || meta::uid(old) != meta::uid(pod) {
                        return Err(crate::error::ApiError::conflict("", "pods", &pod_name, "already bound"));
                    }
                    let mut o = old.clone();
                    o["spec"]["nodeName"] = json!(node_c);
                    set_condition(&mut o, json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": meta::now_rfc3339()}));
                    Ok(o)
                });
                match res {
                    Ok(bound) => {
                        tracing::info!(pod = %pod_name, namespace = %ns, node = %node, "scheduled");
                        emit_event(
                            store,
                            &bound,
                            "Normal",
                            "Scheduled",
                            &format!("Successfully assigned {ns}/{pod_name} to {node}"),
                        );
                        placed.push((node, Arc::new(bound)));
                        reported.remove(&(ns, pod_name));
                    }
                    Err(e) => tracing::debug!(pod = %pod_name, error = %e, "bind failed"),
                }
            }
            Err(message) => {
                let _ = store.mutate(&pods_info, &ns, &pod_name, &WriteOptions::internal("default-scheduler"), |old| {
                    let mut o = old.clone();
                    set_condition(&mut o, json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": meta::now_rfc3339()}));
                    Ok(o)
                });
                if reported.insert((ns.clone(), pod_name.clone())) {
                    tracing::info!(pod = %pod_name, namespace = %ns, %message, "unschedulable");
                    emit_event(store, pod, "Warning", "FailedScheduling", &message);
                }
            }
        }
    }
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change.
pub fn set_condition(obj: &mut Value, mut cond: Value) {
    let Some(status) = obj
        .as_object_mut()
        .map(|o| o.entry("status").or_insert(json!({})))
    else {
        return;
    };
    if !status.is_object() {
        *status = json!({});
    }
    let list = status
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert(json!([])));
    let Some(Value::Array(list)) = list else {
        return;
    };
    let t = cond["type"].clone();
    match list.iter_mut().find(|c| c["type"] == t) {
        Some(existing) => {
            if existing["status"] == cond["status"] {
                if let Some(lt) = existing.get("lastTransitionTime") {
                    cond["lastTransitionTime"] = lt.clone();
                }
            }
            *existing = cond;
        }
        None => list.push(cond),
    }
}

/// Creates a core/v1 Event about an object.
pub fn emit_event(store: &Store, obj: &Value, type_: &str, reason: &str, message: &str) {
    emit_event_from(store, obj, type_, reason, message, "default-scheduler");
}

/// Creates a core/v1 Event about an object, reported by `component`.
pub fn emit_event_from(
    store: &Store,
    obj: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Some(info) = store.registry.by_key("events") else {
        return;
    };
    let now = meta::now_rfc3339();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", meta::name(obj)), "namespace": meta::namespace(obj)},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta::name(obj), "namespace": meta::namespace(obj), "uid": meta::uid(obj), "resourceVersion": meta::meta_str(obj, "resourceVersion")},
        "reason": reason, "message": message, "type": type_, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": component}, "reportingComponent": component,
    });
    let ns = meta::namespace(obj).to_owned();
    let _ = store.create(&info, &ns, ev, &WriteOptions::internal(component));
}

/// Chooses a node or explains why none fits.
fn pick(
    nodes: &BTreeMap<String, Arc<Value>>,
    placed: &[(String, Arc<Value>)],
    pod: &Value,
) -> Result<String, String> {
    let selector: Vec<(String, String)> = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let ports = host_ports(pod);
    let anti_req = terms(
        pod,
        "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        false,
    );
    let aff_req = terms(
        pod,
        "/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        false,
    );
    let anti_pref = terms(
        pod,
        "/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        true,
    );
    let aff_pref = terms(
        pod,
        "/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        true,
    );
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut best: Option<(i64, usize, String)> = None;
    for (name, node) in nodes {
        let reason = (|| {
            if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                return Some("node(s) were unschedulable");
            }
            if !selector
                .iter()
                .all(|(k, v)| meta::label(node, k) == Some(v.as_str()))
            {
                return Some("node(s) didn't match Pod's node affinity/selector");
            }
            let on_node: Vec<&Value> = placed
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, p)| p.as_ref())
                .collect();
            if on_node
                .iter()
                .any(|p| host_ports(p).iter().any(|hp| ports.contains(hp)))
            {
                return Some("node(s) didn't have free ports for the requested pod ports");
            }
            for t in &anti_req {
                if in_domain(nodes, placed, name, &t.topology)
                    .iter()
                    .any(|p| t.matches(p))
                {
                    return Some("node(s) didn't match pod anti-affinity rules");
                }
            }
            // Symmetry: existing pods' required anti-affinity against this pod.
            for (other_node, other) in placed {
                for t in terms(
                    other,
                    "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                    false,
                ) {
                    if t.matches(pod)
                        && domain(nodes, other_node, &t.topology).is_some()
                        && domain(nodes, other_node, &t.topology)
                            == domain(nodes, name, &t.topology)
                    {
                        return Some("node(s) didn't match pod anti-affinity rules");
                    }
                }
            }
            for t in &aff_req {
                let here = in_domain(nodes, placed, name, &t.topology)
                    .iter()
                    .any(|p| t.matches(p));
                let anywhere = placed.iter().any(|(_, p)| t.matches(p));
                // The first pod of a group that matches its own affinity term may go anywhere.
                if !here && (anywhere || !t.matches(pod)) {
                    return Some("node(s) didn't match pod affinity rules");
                }
            }
            None
        })();
        if let Some(r) = reason {
            *reasons.entry(r).or_default() += 1;
            continue;
        }
        let mut score = 0i64;
        for t in &anti_pref {
            score -= t.weight
                * in_domain(nodes, placed, name, &t.topology)
                    .iter()
                    .filter(|p| t.matches(p))
                    .count() as i64;
        }
        for t in &aff_pref {
            score += t.weight
                * in_domain(nodes, placed, name, &t.topology)
                    .iter()
                    .filter(|p| t.matches(p))
                    .count() as i64;
        }
        let count = placed.iter().filter(|(n, _)| n == name).count();
        let better = match &best {
            None => true,
            Some((s, c, _)) => score > *s || (score == *s && count < *c),
        };
        if better {
            best = Some((score, count, name.clone()));
        }
    }
    match best {
        Some((_, _, n)) => Ok(n),
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            Err(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                if detail.is_empty() {
                    "no nodes registered".to_owned()
                } else {
                    detail.join(", ")
                }
            ))
        }
    }
}
