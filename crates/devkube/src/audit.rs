//! The audit log: for every HTTP request, who asked (the bearer token *is* the user name) and
//! what RBAC would have to allow — verb, API group, resource, subresource, namespace, name —
//! plus the response code. Nothing is enforced; tests compare the recorded calls with
//! hand-written RBAC rules. Request attributes are parsed from the URL alone, exactly as the
//! real API server's `RequestInfoFactory` does before authorization, so calls to resources this
//! server does not serve are recorded too; a server-side apply that creates its object is
//! recorded twice, as `patch` and as `create`, because the real server authorizes both. Pure
//! data and a bounded ring buffer; no network.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap, Method};

/// The user of a request without a bearer token (the real server's anonymous user).
pub const ANONYMOUS: &str = "system:anonymous";

/// Entries kept by default: the newest 100,000 requests (about 15 MB when full).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuditEntry {
    /// The bearer token of the request, or [`ANONYMOUS`].
    pub user: String,
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection` for resource requests; the lower-case HTTP method for the others.
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource name (empty for non-resource requests).
    pub resource: String,
    /// Subresource (`status`, `log`, `eviction`, `binding`, ...), or empty.
    pub subresource: String,
    /// Namespace of the request, or empty for cluster-scoped and all-namespace requests.
    pub namespace: String,
    /// Object name (from the URL, or a `metadata.name=` field selector on lists/watches).
    pub name: String,
    /// The path of a non-resource request (`/api`, `/apis/apps/v1`, `/version`), else `None`.
    pub non_resource_url: Option<String>,
    /// The response's HTTP status code.
    pub code: u16,
}

/// What authorization sees of a request, before the response code is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    /// See [`AuditEntry::user`].
    pub user: String,
    /// See [`AuditEntry::verb`].
    pub verb: String,
    /// See [`AuditEntry::group`].
    pub group: String,
    /// See [`AuditEntry::resource`].
    pub resource: String,
    /// See [`AuditEntry::subresource`].
    pub subresource: String,
    /// See [`AuditEntry::namespace`].
    pub namespace: String,
    /// See [`AuditEntry::name`].
    pub name: String,
    /// See [`AuditEntry::non_resource_url`].
    pub non_resource_url: Option<String>,
}

/// The user a request authenticates as: the token of `Authorization: Bearer <token>` (any
/// token is accepted), else [`ANONYMOUS`].
pub fn user(headers: &HeaderMap) -> String {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = auth.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() =>
        {
            token.to_owned()
        }
        _ => ANONYMOUS.to_owned(),
    }
}

/// Parses a request the way the API server's `RequestInfoFactory` does: `/api/v1/...` and
/// `/apis/<group>/<version>/...` with at least a resource are resource requests (an optional
/// `watch/` prefix, `namespaces/<ns>/`, then `resource[/name[/subresource]]`); a GET without a
/// name is `list`, or `watch` with `watch=true`; a DELETE without a name is
/// `deletecollection`. `query` holds the decoded query parameters.
pub fn attributes(
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> RequestAttributes {
    let mut a = RequestAttributes {
        user: user(headers),
        verb: method.as_str().to_ascii_lowercase(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        non_resource_url: Some(path.to_owned()),
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => rest,
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => {
            a.group = (*group).to_owned();
            rest
        }
        _ => return a,
    };
    a.non_resource_url = None;
    let rest = match rest {
        ["watch", tail @ ..] if !tail.is_empty() => {
            a.verb = "watch".into();
            tail
        }
        _ => {
            a.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .into();
            rest
        }
    };
    // `namespaces/<ns>/<resource>...` is relative to the resource; `namespaces/<ns>` and
    // `namespaces/<ns>/{status,finalize}` are the namespace object itself.
    let rest = match rest {
        ["namespaces", ns, tail @ ..] => {
            a.namespace = (*ns).to_owned();
            match tail {
                [] | ["status" | "finalize", ..] => rest,
                _ => tail,
            }
        }
        _ => rest,
    };
    a.resource = rest[0].to_owned();
    if let Some(name) = rest.get(1) {
        a.name = (*name).to_owned();
    }
    if let Some(sub) = rest.get(2) {
        a.subresource = (*sub).to_owned();
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if a.name.is_empty() && a.verb == "get" {
        let watch = matches!(param("watch"), Some("true" | "1"));
        a.verb = if watch { "watch" } else { "list" }.into();
    }
    if a.name.is_empty() && matches!(a.verb.as_str(), "list" | "watch") {
        // A list narrowed to one name is authorized as that name (resourceNames rules).
        if let Some(sel) = param("fieldSelector") {
            if let Some(name) = sel.split(',').find_map(|term| {
                term.strip_prefix("metadata.name==")
                    .or_else(|| term.strip_prefix("metadata.name="))
            }) {
                a.name = name.to_owned();
            }
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

/// The second authorization of a server-side apply that creates its object: the same request
/// as `create` (the real server's `createAuthorizerAttributes` in its patch handler).
pub fn creating_apply(patch: &RequestAttributes) -> RequestAttributes {
    RequestAttributes {
        verb: "create".into(),
        ..patch.clone()
    }
}

/// A stored entry: strings are interned, so the log costs a few pointers per request.
#[derive(Debug)]
struct Record {
    user: Arc<str>,
    verb: Arc<str>,
    group: Arc<str>,
    resource: Arc<str>,
    subresource: Arc<str>,
    namespace: Arc<str>,
    name: Arc<str>,
    non_resource_url: Option<Arc<str>>,
    code: u16,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Record>,
    strings: HashSet<Arc<str>>,
    /// Interned strings after the last prune: the next prune waits until the set doubles.
    pruned_at: usize,
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(new.clone());
        new
    }

    /// Forgets strings no stored entry uses (names of long-gone objects), amortised O(1).
    fn prune(&mut self) {
        if self.strings.len() > (2 * self.pruned_at).max(1024) {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.pruned_at = self.strings.len();
        }
    }
}

/// The bounded audit log: the newest `capacity` requests. Shared through `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl AuditLog {
    /// A log keeping the newest `capacity` entries (0 records nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a request with its response code, dropping the oldest entry when full.
    pub fn record(&self, a: &RequestAttributes, code: u16) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.len() >= self.capacity {
            inner.entries.pop_front();
        }
        let record = Record {
            user: inner.intern(&a.user),
            verb: inner.intern(&a.verb),
            group: inner.intern(&a.group),
            resource: inner.intern(&a.resource),
            subresource: inner.intern(&a.subresource),
            namespace: inner.intern(&a.namespace),
            name: inner.intern(&a.name),
            non_resource_url: a.non_resource_url.as_deref().map(|p| inner.intern(p)),
            code,
        };
        inner.entries.push_back(record);
        inner.prune();
    }

    /// Every kept entry, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.lock()
            .entries
            .iter()
            .map(|r| AuditEntry {
                user: r.user.to_string(),
                verb: r.verb.to_string(),
                group: r.group.to_string(),
                resource: r.resource.to_string(),
                subresource: r.subresource.to_string(),
                namespace: r.namespace.to_string(),
                name: r.name.to_string(),
                non_resource_url: r.non_resource_url.as_ref().map(ToString::to_string),
                code: r.code,
            })
            .collect()
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.strings.clear();
        inner.pruned_at = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn attrs(method: Method, path_and_query: &str) -> RequestAttributes {
        let uri: axum::http::Uri = path_and_query.parse().unwrap();
        let query = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map(|q| q.0)
            .unwrap_or_default();
        attributes(&method, uri.path(), &query, &HeaderMap::new())
    }

    /// (verb, group, resource, subresource, namespace, name)
    fn key(a: &RequestAttributes) -> (&str, &str, &str, &str, &str, &str) {
        (
            &a.verb,
            &a.group,
            &a.resource,
            &a.subresource,
            &a.namespace,
            &a.name,
        )
    }

    #[test]
    fn verbs_and_targets_as_rbac_sees_them() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p",
                ("get", "", "pods", "", "d", "p"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods",
                ("list", "", "pods", "", "d", ""),
            ),
            (
                Method::GET,
                "/api/v1/pods?watch=true&labelSelector=a%3Db",
                ("watch", "", "pods", "", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/d/pods/p",
                ("watch", "", "pods", "", "d", "p"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3Dp&watch=1",
                ("watch", "", "pods", "", "d", "p"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods",
                ("create", "", "pods", "", "d", ""),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
                ("update", "coordination.k8s.io", "leases", "", "s", "l"),
            ),
            (
                Method::PATCH,
                "/apis/kredis.io/v1alpha1/namespaces/d/kredis/c/status",
                ("patch", "kredis.io", "kredis", "status", "d", "c"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods/p",
                ("delete", "", "pods", "", "d", "p"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods",
                ("deletecollection", "", "pods", "", "d", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/log",
                ("get", "", "pods", "log", "d", "p"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods/p/eviction",
                ("create", "", "pods", "eviction", "d", "p"),
            ),
            (
                Method::GET,
                "/api/v1/nodes",
                ("list", "", "nodes", "", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d",
                ("get", "", "namespaces", "", "d", "d"),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/d/finalize",
                ("update", "", "namespaces", "finalize", "d", "d"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                ("list", "", "namespaces", "", "", ""),
            ),
        ];
        for (method, path, want) in cases {
            let a = attrs(method.clone(), path);
            assert_eq!(key(&a), want, "{method} {path}");
            assert_eq!(a.non_resource_url, None, "{path}");
        }
    }

    #[test]
    fn discovery_and_health_are_non_resource_requests() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
            "/healthz",
        ] {
            let a = attrs(Method::GET, path);
            assert_eq!(a.non_resource_url.as_deref(), Some(path));
            assert_eq!((a.verb.as_str(), a.resource.as_str()), ("get", ""));
        }
    }

    #[test]
    fn the_bearer_token_is_the_user() {
        let mut h = HeaderMap::new();
        assert_eq!(user(&h), ANONYMOUS);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer system:serviceaccount:a:b"),
        );
        assert_eq!(user(&h), "system:serviceaccount:a:b");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        assert_eq!(user(&h), ANONYMOUS);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(user(&h), ANONYMOUS);
    }

    #[test]
    fn the_log_keeps_the_newest_entries_and_forgets_unused_strings() {
        let log = AuditLog::new(3);
        for i in 0..5000 {
            log.record(
                &attrs(Method::GET, &format!("/api/v1/namespaces/d/pods/p{i}")),
                200,
            );
        }
        let names: Vec<String> = log.entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["p4997", "p4998", "p4999"]);
        assert!(
            log.lock().strings.len() <= 2100,
            "interned strings are pruned"
        );
        log.clear();
        assert!(log.entries().is_empty());
        let off = AuditLog::new(0);
        off.record(&attrs(Method::GET, "/api/v1/pods"), 200);
        assert!(off.entries().is_empty());
    }
}
