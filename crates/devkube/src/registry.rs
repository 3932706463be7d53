//! The resource registry: which resources this API server serves (built-in kinds plus every
//! resource a CustomResourceDefinition defines) and the discovery documents describing them.
//! Pure data; no network.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

/// Where a printer column takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// `metadata.name`.
    Name,
    /// Age from `metadata.creationTimestamp`.
    Age,
    /// A CRD `additionalPrinterColumns` JSONPath.
    JsonPath(String),
    /// Pod `READY` (`ready/total`).
    PodReady,
    /// Pod `STATUS` (phase, waiting reason or `Terminating`).
    PodStatus,
    /// Pod `RESTARTS`.
    PodRestarts,
    /// Node `STATUS` (`Ready`, `NotReady`, `,SchedulingDisabled`).
    NodeStatus,
    /// Node `ROLES` from `node-role.kubernetes.io/<role>` labels, or `<none>`.
    NodeRoles,
    /// Number of keys in `data` (configmaps, secrets).
    DataCount,
    /// Service ports as `port/proto`.
    ServicePorts,
    /// Event object reference `kind/name`.
    EventObject,
}

/// One printer column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `date`, ...
    pub type_: String,
    /// 0 shows by default, 1 with `-o wide`.
    pub priority: i64,
    /// The value's source.
    pub source: ColumnSource,
}

impl Column {
    fn new(name: &str, type_: &str, source: ColumnSource) -> Self {
        Self {
            name: name.into(),
            type_: type_.into(),
            priority: 0,
            source,
        }
    }
    fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }
    fn path(name: &str, type_: &str, path: &str) -> Self {
        Self::new(name, type_, ColumnSource::JsonPath(path.into()))
    }
}

/// Everything the server needs to know about one resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group ("" for core).
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    /// Plural resource name (the URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Whether a `status` subresource exists (status is then only writable through it).
    pub status_subresource: bool,
    /// Printer columns.
    pub columns: Vec<Column>,
    /// Structural schema per version (custom resources only).
    pub schemas: BTreeMap<String, Value>,
    /// Whether this comes from a CRD.
    pub custom: bool,
    /// Storage shared with another resource (events.k8s.io Events live with core Events).
    pub storage: Option<String>,
    /// Extra field-selector fields beyond `metadata.name`/`metadata.namespace`.
    pub extra_fields: Vec<&'static str>,
}

impl ResourceInfo {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            status_subresource: false,
            columns: vec![
                Column::new("Name", "string", ColumnSource::Name),
                Column::new("Age", "date", ColumnSource::Age),
            ],
            schemas: BTreeMap::new(),
            custom: false,
            storage: None,
            extra_fields: Vec::new(),
        }
    }
    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    fn status(mut self) -> Self {
        self.status_subresource = true;
        self
    }
    fn columns(mut self, cols: Vec<Column>) -> Self {
        self.columns = cols;
        self
    }

    /// `group/version` (or `version` for core).
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The preferred version.
    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// The registry id: `plural.group` (or `plural` for core).
    pub fn id(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The storage key: the id, unless storage is shared with another resource.
    pub fn key(&self) -> String {
        self.storage.clone().unwrap_or_else(|| self.id())
    }

    /// Field-selector fields this resource accepts.
    pub fn field_selectors(&self) -> Vec<&'static str> {
        let mut v = vec!["metadata.name", "metadata.namespace"];
        v.extend(self.extra_fields.iter().copied());
        v
    }

    /// `List` kind.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Builds the resource a CRD object defines. Errors name the offending field.
    pub fn from_crd(crd: &Value) -> Result<Self, (String, String)> {
        let spec = crd
            .get("spec")
            .ok_or(("spec".to_owned(), "Required value".to_owned()))?;
        let s = |p: &str| {
            spec.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let group = s("/group");
        let plural = s("/names/plural");
        let kind = s("/names/kind");
        if group.is_empty() {
            return Err(("spec.group".into(), "Required value".into()));
        }
        if plural.is_empty() {
            return Err(("spec.names.plural".into(), "Required value".into()));
        }
        if kind.is_empty() {
            return Err(("spec.names.kind".into(), "Required value".into()));
        }
        let expected = format!("{plural}.{group}");
        if crate::meta::name(crd) != expected {
            return Err((
                "metadata.name".into(),
                format!(
                    "Invalid value: {:?}: must be spec.names.plural+\".\"+spec.group",
                    crate::meta::name(crd)
                ),
            ));
        }
        let scope = s("/scope");
        let namespaced = match scope.as_str() {
            "Namespaced" => true,
            "Cluster" => false,
            other => {
                return Err((
                    "spec.scope".into(),
                    format!(
                    "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
                ))
            }
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if versions.is_empty() {
            return Err((
                "spec.versions".into(),
                "Invalid value: must have exactly one version marked as storage version".into(),
            ));
        }
        let mut served = Vec::new();
        let mut schemas = BTreeMap::new();
        let mut status_subresource = false;
        let mut columns = Vec::new();
        let mut storage_first: Option<String> = None;
        for v in &versions {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
                continue;
            }
            if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
                schemas.insert(name.clone(), schema.clone());
            }
            let is_storage = v.get("storage").and_then(Value::as_bool).unwrap_or(false);
            if is_storage || storage_first.is_none() {
                if v.pointer("/subresources/status").is_some() {
                    status_subresource = true;
                }
                columns = v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .map(|cols| {
                        cols.iter()
                            .map(|c| Column {
                                name: c.get("name").and_then(Value::as_str).unwrap_or("").into(),
                                type_: c
                                    .get("type")
                                    .and_then(Value::as_str)
                                    .unwrap_or("string")
                                    .into(),
                                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                                source: ColumnSource::JsonPath(
                                    c.get("jsonPath")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                        .into(),
                                ),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if is_storage {
                    storage_first = Some(name.clone());
                }
            }
            served.push(name);
        }
        // Preferred version first, as discovery reports it: the storage version.
        if let Some(st) = storage_first {
            served.retain(|v| *v != st);
            served.insert(0, st);
        }
        let mut cols = vec![Column::new("Name", "string", ColumnSource::Name)];
        let has_age = columns.iter().any(|c| c.name == "Age");
        cols.extend(columns);
        if !has_age {
            cols.push(Column::new("Age", "date", ColumnSource::Age));
        }
        let list = |p: &str| -> Vec<String> {
            spec.pointer(p)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let singular = s("/names/singular");
        Ok(Self {
            group,
            versions: served,
            singular: if singular.is_empty() {
                kind.to_lowercase()
            } else {
                singular
            },
            plural,
            kind,
            namespaced,
            short_names: list("/names/shortNames"),
            categories: list("/names/categories"),
            status_subresource,
            columns: cols,
            schemas,
            custom: true,
            storage: None,
            extra_fields: Vec::new(),
        })
    }
}

const RBAC: &str = "rbac.authorization.k8s.io";

fn builtins() -> Vec<ResourceInfo> {
    use ColumnSource as S;
    let name = || Column::new("Name", "string", S::Name);
    let age = || Column::new("Age", "date", S::Age);
    let mut pods = ResourceInfo::builtin("", "v1", "pods", "Pod", true)
        .short(&["po"])
        .status()
        .columns(vec![
            name(),
            Column::new("Ready", "string", S::PodReady),
            Column::new("Status", "string", S::PodStatus),
            Column::new("Restarts", "string", S::PodRestarts),
            age(),
            Column::path("IP", "string", ".status.podIP").wide(),
            Column::path("Node", "string", ".spec.nodeName").wide(),
        ]);
    pods.extra_fields = vec![
        "spec.nodeName",
        "status.phase",
        "spec.restartPolicy",
        "status.podIP",
    ];
    pods.categories = vec!["all".into()];
    let mut events = ResourceInfo::builtin("", "v1", "events", "Event", true)
        .short(&["ev"])
        .columns(vec![
            Column::path("Last Seen", "string", ".lastTimestamp"),
            Column::path("Type", "string", ".type"),
            Column::path("Reason", "string", ".reason"),
            Column::new("Object", "string", S::EventObject),
            Column::path("Message", "string", ".message"),
        ]);
    events.extra_fields = vec![
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "involvedObject.uid",
        "reportingComponent",
        "reason",
        "type",
    ];
    let mut new_events =
        ResourceInfo::builtin("events.k8s.io", "v1", "events", "Event", true).short(&["ev"]);
    new_events.extra_fields = vec![
        "regarding.kind",
        "regarding.name",
        "regarding.namespace",
        "regarding.uid",
        "reportingController",
        "reason",
        "type",
    ];
    new_events.storage = Some("events".into());
    let mut services = ResourceInfo::builtin("", "v1", "services", "Service", true)
        .short(&["svc"])
        .status()
        .columns(vec![
            name(),
            Column::path("Type", "string", ".spec.type"),
            Column::path("Cluster-IP", "string", ".spec.clusterIP"),
            Column::new("Port(s)", "string", S::ServicePorts),
            age(),
        ]);
    services.categories = vec!["all".into()];
    vec![
        ResourceInfo::builtin("", "v1", "namespaces", "Namespace", false)
            .short(&["ns"])
            .status()
            .columns(vec![
                name(),
                Column::path("Status", "string", ".status.phase"),
                age(),
            ]),
        ResourceInfo::builtin("", "v1", "nodes", "Node", false)
            .short(&["no"])
            .status()
            .columns(vec![
                name(),
                Column::new("Status", "string", S::NodeStatus),
                Column::path(
                    "Roles",
                    "string",
                    ".metadata.labels.node-role\\.kubernetes\\.io/none",
                ),
                age(),
                Column::path("Version", "string", ".status.nodeInfo.kubeletVersion"),
                Column::path(
                    "Internal-IP",
                    "string",
                    ".status.addresses[?(@.type==\"InternalIP\")].address",
                )
                .wide(),
            ]),
        pods,
        services,
        ResourceInfo::builtin("", "v1", "endpoints", "Endpoints", true).short(&["ep"]),
        ResourceInfo::builtin("", "v1", "configmaps", "ConfigMap", true)
            .short(&["cm"])
            .columns(vec![
                name(),
                Column::new("Data", "integer", S::DataCount),
                age(),
            ]),
        ResourceInfo::builtin("", "v1", "secrets", "Secret", true).columns(vec![
            name(),
            Column::path("Type", "string", ".type"),
            Column::new("Data", "integer", S::DataCount),
            age(),
        ]),
        ResourceInfo::builtin("", "v1", "serviceaccounts", "ServiceAccount", true).short(&["sa"]),
        events,
        new_events,
        ResourceInfo::builtin("coordination.k8s.io", "v1", "leases", "Lease", true).columns(vec![
            name(),
            Column::path("Holder", "string", ".spec.holderIdentity"),
            age(),
        ]),
        ResourceInfo::builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        )
        .short(&["pdb"])
        .status()
        .columns(vec![
            name(),
            Column::path("Min Available", "string", ".spec.minAvailable"),
            Column::path("Max Unavailable", "string", ".spec.maxUnavailable"),
            Column::path(
                "Allowed Disruptions",
                "integer",
                ".status.disruptionsAllowed",
            ),
            age(),
        ]),
        // Stored only: no deployment controller creates ReplicaSets or pods.
        ResourceInfo::builtin("apps", "v1", "deployments", "Deployment", true)
            .short(&["deploy"])
            .status()
            .columns(vec![
                name(),
                Column::path("Replicas", "integer", ".spec.replicas"),
                Column::path("Available", "integer", ".status.availableReplicas"),
                age(),
            ]),
        // Stored only: nothing is authorized against them (the audit log records calls).
        ResourceInfo::builtin(RBAC, "v1", "clusterroles", "ClusterRole", false),
        ResourceInfo::builtin(
            RBAC,
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
        )
        .columns(vec![
            name(),
            Column::path("Role", "string", ".roleRef.name"),
            age(),
        ]),
        ResourceInfo::builtin(RBAC, "v1", "roles", "Role", true),
        ResourceInfo::builtin(RBAC, "v1", "rolebindings", "RoleBinding", true).columns(vec![
            name(),
            Column::path("Role", "string", ".roleRef.name"),
            age(),
        ]),
        ResourceInfo::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )
        .short(&["crd", "crds"])
        .status()
        .columns(vec![
            name(),
            Column::path("Created At", "date", ".metadata.creationTimestamp"),
        ]),
    ]
}

/// The set of served resources. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<String, Arc<ResourceInfo>>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the built-in resources.
    pub fn new() -> Self {
        let map = builtins()
            .into_iter()
            .map(|r| (r.id(), Arc::new(r)))
            .collect();
        Self {
            inner: Arc::new(RwLock::new(map)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<ResourceInfo>>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks up a resource served at `group/version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        let key = if group.is_empty() {
            plural.to_owned()
        } else {
            format!("{plural}.{group}")
        };
        self.read()
            .get(&key)
            .filter(|r| r.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// Looks up by storage key.
    pub fn by_key(&self, key: &str) -> Option<Arc<ResourceInfo>> {
        self.read().get(key).cloned()
    }

    /// Looks up by group and kind (any version).
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.read()
            .values()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// Adds or replaces a custom resource.
    pub fn put(&self, info: ResourceInfo) {
        let mut w = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.insert(info.id(), Arc::new(info));
    }

    /// Removes a custom resource.
    pub fn remove(&self, key: &str) {
        let mut w = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.get(key).is_some_and(|r| r.custom) {
            w.remove(key);
        }
    }

    /// All resources.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.read().values().cloned().collect()
    }

    /// Groups other than core, with their versions (preferred first).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.read().values().filter(|r| !r.group.is_empty()) {
            let e = out.entry(r.group.clone()).or_default();
            for v in &r.versions {
                if !e.contains(v) {
                    e.push(v.clone());
                }
            }
        }
        // Prefer the highest stable-looking version (v1 > v1beta1 > v1alpha1).
        for versions in out.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// `APIGroupList` for `/apis`.
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(g, vs)| group_doc(&g, &vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `APIGroup` for `/apis/<group>`.
    pub fn api_group(&self, group: &str) -> Option<Value> {
        self.groups().get(group).map(|vs| {
            let mut d = group_doc(group, vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
    }

    /// `APIResourceList` for `/api/v1` or `/apis/<group>/<version>`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Arc<ResourceInfo>> = self
            .read()
            .values()
            .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
            .cloned()
            .collect();
        if resources.is_empty() && !(group.is_empty() && version == "v1") {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        let mut list = Vec::new();
        for r in resources {
            let verbs = [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ];
            let mut entry = json!({
                "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": verbs,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            list.push(entry);
            if r.status_subresource {
                list.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
            }
            if r.key() == "pods" {
                list.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
                list.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
            }
        }
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
        )
    }
}

fn version_priority(v: &str) -> i64 {
    // v<major>[alpha|beta<minor>]: stable > beta > alpha, then by numbers.
    let rest = v.trim_start_matches('v');
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: i64 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (level, minor) = if let Some(m) = tail.strip_prefix("beta") {
        (1, m.parse().unwrap_or(0))
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (0, m.parse().unwrap_or(0))
    } else {
        (2, 0)
    };
    level * 1_000_000 + major * 1000 + minor
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(json!({}))})
}
