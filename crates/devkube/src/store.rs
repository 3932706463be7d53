//! The in-memory object store: every object of every resource as `serde_json::Value`, one
//! global increasing resourceVersion, a bounded event history that watches read from, and the
//! write path shared by the HTTP handlers and the in-process controllers (scheduler, kubelets,
//! garbage collector). Writes are serialised under one mutex; nothing here awaits or touches the
//! network.
//!
//! Semantics kept here because every writer must get them: optimistic concurrency (409 on a
//! stale resourceVersion), no-op writes that bump nothing, `generation` bumps on spec changes
//! only, status-subresource separation, finalizers and `deletionTimestamp`, graceful pod
//! deletion, and managedFields bookkeeping.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::admit;
use crate::error::{ApiError, ApiResult};
use crate::fields;
use crate::meta;
use crate::registry::{Registry, ResourceInfo};

/// Default number of events kept for watches.
pub const DEFAULT_HISTORY: usize = 10_000;

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One entry of the event history.
#[derive(Debug)]
pub struct StoredEvent {
    /// The resourceVersion this write produced.
    pub rv: u64,
    /// Resource storage key (`pods`, `kredis.kredis.io`).
    pub key: String,
    /// What happened.
    pub etype: EventType,
    /// The object after the write (for deletes: its last state with the delete's rv).
    pub object: Arc<Value>,
    /// The object before the write, for updates and deletes.
    pub old: Option<Arc<Value>>,
}

/// A watch asked for a version older than the history holds.
#[derive(Debug, Clone, Copy)]
pub struct Expired {
    /// The oldest version still servable.
    pub oldest: u64,
}

/// Which part of the object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The main resource (status changes ignored when a status subresource exists).
    Main,
    /// `/status`: only status changes are kept.
    Status,
    /// In-process controllers: everything may change (e.g. the scheduler binding a pod).
    Internal,
}

/// Options of one write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// `fieldManager` (managedFields owner).
    pub manager: String,
    /// `Update` or `Apply` in managedFields.
    pub operation: &'static str,
    /// For apply: the field set the manager now owns, as computed by the apply logic.
    pub applied: Option<fields::FieldSet>,
    /// Do not persist (`dryRun=All`).
    pub dry_run: bool,
    /// Which part of the object may change.
    pub sub: Subresource,
    /// `fieldValidation=Strict`: fields a custom resource schema does not declare are refused
    /// (otherwise they are pruned silently).
    pub strict: bool,
}

impl WriteOptions {
    /// An `Update` by `manager` on the main resource.
    pub fn update(manager: &str) -> Self {
        Self {
            manager: manager.into(),
            operation: "Update",
            applied: None,
            dry_run: false,
            sub: Subresource::Main,
            strict: false,
        }
    }
    /// An in-process controller write.
    pub fn internal(manager: &str) -> Self {
        Self {
            sub: Subresource::Internal,
            ..Self::update(manager)
        }
    }
}

/// Options of one delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub rv: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Events with rv <= compacted are gone; watches from older versions get 410.
    compacted: u64,
    capacity: usize,
}

/// The store. Shared through `Arc`.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<InnerDebug>,
    changed: watch::Sender<u64>,
    /// The served resources (CRDs register here).
    pub registry: Registry,
}

// Wrapper so `Store` can derive Debug without dumping every object.
struct InnerDebug(Inner);
impl std::fmt::Debug for InnerDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inner {{ rv: {} }}", self.0.rv)
    }
}

impl Store {
    /// A store with the default namespaces and the given history size.
    pub fn new(capacity: usize) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        let store = Arc::new(Self {
            inner: Mutex::new(InnerDebug(Inner {
                capacity: capacity.max(16),
                ..Inner::default()
            })),
            changed,
            registry: Registry::new(),
        });
        if let Some(ns_info) = store.registry.by_key("namespaces") {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                // Cannot conflict: the store is empty.
                let _ = store.create(&ns_info, "", obj, &WriteOptions::internal("kube-apiserver"));
            }
        }
        // The `kubernetes` service every cluster has (nothing routes through it here).
        if let Some(svc_info) = store.registry.by_key("services") {
            let svc = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}});
            let _ = store.create(
                &svc_info,
                "default",
                svc,
                &WriteOptions::internal("kube-apiserver"),
            );
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, InnerDebug> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver notified with the newest resourceVersion after every write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The newest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().0.rv
    }

    /// Drops the whole event history: every watch or list continuation from an older version
    /// now gets 410 Expired (test hook for relist paths).
    pub fn compact(&self) {
        let mut g = self.lock();
        let inner = &mut g.0;
        inner.history.clear();
        inner.compacted = inner.rv;
        drop(g);
        // Wake watchers so they notice they fell behind.
        self.changed.send_replace(self.current_rv());
    }

    /// Events after `rv`, and the version they bring a reader up to.
    pub fn events_since(&self, rv: u64) -> Result<(Vec<Arc<StoredEvent>>, u64), Expired> {
        let g = self.lock();
        let inner = &g.0;
        if rv < inner.compacted {
            return Err(Expired {
                oldest: inner.compacted,
            });
        }
        let start = inner.history.partition_point(|e| e.rv <= rv);
        Ok((
            inner.history.iter().skip(start).cloned().collect(),
            inner.rv.max(rv),
        ))
    }

    /// Whether a watch may start at `rv`.
    pub fn check_watch_rv(&self, rv: u64) -> Result<(), Expired> {
        let g = self.lock();
        if rv < g.0.compacted {
            Err(Expired {
                oldest: g.0.compacted,
            })
        } else {
            Ok(())
        }
    }

    /// All objects of a resource (optionally one namespace), sorted by namespace/name, and the
    /// version they are consistent with.
    pub fn snapshot(&self, key: &str, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let g = self.lock();
        let inner = &g.0;
        let objs = inner
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (objs, inner.rv)
    }

    /// One object.
    pub fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.get_key(&info.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))
    }

    /// One object by storage key.
    pub fn get_key(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let g = self.lock();
        g.0.objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
            .cloned()
    }

    /// Every object of every resource, with its storage key (for the garbage collector).
    pub fn all_objects(&self) -> Vec<(String, Arc<Value>)> {
        let g = self.lock();
        g.0.objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// Creates an object. `ns` is the namespace from the path ("" for cluster-scoped).
    pub fn create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut g = self.lock();
        let inner = &mut g.0;
        if opts.strict {
            check_strict(info, &obj)?;
        }
        let mut obj = admit::prepare_create(info, ns, obj)?;
        let name = meta::name(&obj).to_owned();
        let ns = meta::namespace(&obj).to_owned();
        if info.namespaced {
            match inner.objects.get("namespaces").and_then(|m| m.get(&(String::new(), ns.clone()))) {
                None => return Err(ApiError::not_found("", "namespaces", &ns)),
                Some(n) if meta::is_deleting(n) => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        info.plural
                    )))
                }
                Some(_) => {}
            }
        }
        let key = info.key();
        if inner
            .objects
            .get(&key)
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
        {
            return Err(ApiError::already_exists(&info.group, &info.plural, &name));
        }
        if info.key() == "customresourcedefinitions.apiextensions.k8s.io" {
            admit::validate_crd(&obj, &self.registry)?;
        }
        fields::record(None, &mut obj, opts);
        if opts.dry_run {
            return Ok(obj);
        }
        inner.rv += 1;
        meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(inner.rv.to_string()));
        let obj = Arc::new(obj);
        inner
            .objects
            .entry(key.clone())
            .or_default()
            .insert((ns, name), obj.clone());
        let rv = inner.rv;
        push_event(
            inner,
            StoredEvent {
                rv,
                key,
                etype: EventType::Added,
                object: obj.clone(),
                old: None,
            },
        );
        drop(g);
        self.after_write(info, &obj, false);
        Ok((*obj).clone())
    }

    /// Reads, transforms and writes one object atomically. `f` gets the current object and
    /// returns the desired one (it may carry a resourceVersion precondition).
    pub fn mutate(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &WriteOptions,
        f: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        self.mutate_with(info, ns, name, opts, |old| f(old).map(|v| (v, None)))
    }

    /// Like [`Store::mutate`], where `f` may also return the field set a server-side apply now
    /// owns (recorded in managedFields).
    pub fn mutate_with(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &WriteOptions,
        f: impl FnOnce(&Value) -> ApiResult<(Value, Option<fields::FieldSet>)>,
    ) -> ApiResult<Value> {
        let mut g = self.lock();
        let inner = &mut g.0;
        let key = info.key();
        let id = (ns.to_owned(), name.to_owned());
        let old = inner
            .objects
            .get(&key)
            .and_then(|m| m.get(&id))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        let (desired, applied) = f(&old)?;
        if let Some(want) = desired
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if !want.is_empty() && want != meta::meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(&info.group, &info.plural, name));
            }
        }
        if opts.strict {
            check_strict(info, &desired)?;
        }
        let mut new = admit::prepare_update(info, &old, desired, opts.sub)?;
        if info.key() == "customresourcedefinitions.apiextensions.k8s.io" {
            admit::validate_crd(&new, &self.registry)?;
        }
        // No-op writes bump nothing (managedFields timestamps included).
        if strip_volatile(&new) == strip_volatile(&old) {
            return Ok((*old).clone());
        }
        match applied {
            Some(set) => {
                let mut o = opts.clone();
                o.applied = Some(set);
                fields::record(Some(&old), &mut new, &o);
            }
            None => fields::record(Some(&old), &mut new, opts),
        }
        if opts.dry_run {
            return Ok(new);
        }
        inner.rv += 1;
        let rv = inner.rv;
        meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let removed = ready_to_remove(&new);
        let new = Arc::new(new);
        let bucket = inner.objects.entry(key.clone()).or_default();
        let etype = if removed {
            bucket.remove(&id);
            EventType::Deleted
        } else {
            bucket.insert(id, new.clone());
            EventType::Modified
        };
        push_event(
            inner,
            StoredEvent {
                rv,
                key,
                etype,
                object: new.clone(),
                old: Some(old),
            },
        );
        drop(g);
        self.after_write(info, &new, removed);
        Ok((*new).clone())
    }

    /// Deletes an object: removes it, or marks it deleting while finalizers (or a pod's graceful
    /// termination) remain. Returns the object and whether it is gone.
    pub fn delete(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let mut g = self.lock();
        let inner = &mut g.0;
        let key = info.key();
        let id = (ns.to_owned(), name.to_owned());
        let old = inner
            .objects
            .get(&key)
            .and_then(|m| m.get(&id))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        if let Some(uid) = &opts.uid {
            if uid != meta::uid(&old) {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&old)
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.rv {
            if rv != meta::meta_str(&old, "resourceVersion") {
                return Err(ApiError::conflict(&info.group, &info.plural, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta::meta_str(&old, "resourceVersion"))));
            }
        }
        let mut new = (*old).clone();
        let grace = self.grace_for(inner, info, &old, opts.grace);
        let m = meta::metadata_mut(&mut new);
        let mut finalizers: Vec<Value> = m
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let already = m.get("deletionTimestamp").is_some_and(|v| !v.is_null());
        match opts.propagation.as_deref() {
            Some("Foreground")
                if !already && !finalizers.contains(&json!("foregroundDeletion")) =>
            {
                finalizers.push(json!("foregroundDeletion"))
            }
            Some("Orphan") if !already && !finalizers.contains(&json!("orphan")) => {
                finalizers.push(json!("orphan"))
            }
            Some("Foreground" | "Orphan" | "Background") | None => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported propagation policy {other:?}"
                )));
            }
        }
        // The namespace controller empties a namespace before it goes.
        if info.key() == "namespaces" && !already && !finalizers.contains(&json!("kubernetes")) {
            finalizers.push(json!("kubernetes"));
        }
        if !finalizers.is_empty() {
            m.insert("finalizers".into(), Value::Array(finalizers));
        }
        if !already {
            let when = std::time::SystemTime::now()
                + std::time::Duration::from_secs(grace.clamp(0, 86_400) as u64);
            m.insert("deletionTimestamp".into(), json!(meta::rfc3339(when)));
        }
        let old_grace = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
        // A later delete may only shorten the grace period.
        let grace = old_grace.map_or(grace, |g| g.min(grace));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        if opts.dry_run {
            return Ok((new, false));
        }
        let removed = ready_to_remove(&new);
        if !removed && already && strip_volatile(&new) == strip_volatile(&old) {
            return Ok(((*old).clone(), false));
        }
        inner.rv += 1;
        let rv = inner.rv;
        meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let new = Arc::new(new);
        let bucket = inner.objects.entry(key.clone()).or_default();
        let etype = if removed {
            bucket.remove(&id);
            EventType::Deleted
        } else {
            bucket.insert(id, new.clone());
            EventType::Modified
        };
        push_event(
            inner,
            StoredEvent {
                rv,
                key,
                etype,
                object: new.clone(),
                old: Some(old),
            },
        );
        drop(g);
        self.after_write(info, &new, removed);
        Ok(((*new).clone(), removed))
    }

    /// The grace period a delete gets: pods bound to an existing node terminate gracefully
    /// (the kubelet finishes the delete); everything else goes at once.
    fn grace_for(
        &self,
        inner: &Inner,
        info: &ResourceInfo,
        obj: &Value,
        asked: Option<i64>,
    ) -> i64 {
        if info.key() != "pods" {
            return 0;
        }
        let node = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let node_exists = inner
            .objects
            .get("nodes")
            .is_some_and(|m| m.contains_key(&(String::new(), node.to_owned())));
        if node.is_empty() || !node_exists || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        asked
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// Side effects of writes on the registry: CRDs define resources.
    fn after_write(&self, info: &ResourceInfo, obj: &Value, removed: bool) {
        if info.key() != "customresourcedefinitions.apiextensions.k8s.io" {
            self.notify();
            return;
        }
        if removed {
            if let Ok(ri) = ResourceInfo::from_crd(obj) {
                self.registry.remove(&ri.key());
                // Stored custom objects go with their definition.
                let mut g = self.lock();
                g.0.objects.remove(&ri.key());
            }
        } else if let Ok(ri) = ResourceInfo::from_crd(obj) {
            self.registry.put(ri);
        }
        self.changed.send_replace(self.current_rv());
    }
}

fn push_event(inner: &mut Inner, ev: StoredEvent) {
    inner.history.push_back(Arc::new(ev));
    while inner.history.len() > inner.capacity {
        if let Some(e) = inner.history.pop_front() {
            inner.compacted = e.rv;
        }
    }
}

impl Store {
    /// Notifies watchers; called by the HTTP layer after a write batch (and by every write).
    pub fn notify(&self) {
        self.changed.send_replace(self.current_rv());
    }
}

/// `fieldValidation=Strict` for custom resources: undeclared fields are a 400, as the real
/// server's strict decoding reports them.
fn check_strict(info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    if !info.custom {
        return Ok(());
    }
    let version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|av| av.rsplit('/').next())
        .unwrap_or("");
    let Some(schema) = info.schemas.get(version) else {
        return Ok(());
    };
    let unknown = crate::schema::unknown_fields(obj, schema);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "{} in version \"{version}\" cannot be handled as a {}: strict decoding error: {}",
        info.kind,
        info.kind,
        list.join(", ")
    )))
}

/// Removal happens once deleting, with no finalizers, and no pending graceful termination.
fn ready_to_remove(obj: &Value) -> bool {
    meta::is_deleting(obj)
        && meta::finalizers(obj).is_empty()
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

/// The object without fields that change on every write, for no-op detection.
fn strip_volatile(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}
