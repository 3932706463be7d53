//! The HTTP API server: routes requests to discovery, OpenAPI and resource handlers, parses
//! bodies and query parameters, and turns every failure into a `Status` body. Listens on
//! loopback only.

mod discovery;
mod resources;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tracing::Instrument;

use crate::audit::{self, AuditLog};
use crate::error::{ApiError, ApiResult};
use crate::store::Store;

/// Largest request body accepted (the real server's default is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Tunables of the API server (tests shorten them).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Upper bound on any watch's duration (the real server closes watches after a random
    /// 30-60 minutes; tests lower it to exercise re-watching).
    pub max_watch: Duration,
    /// Where kubelets keep pod logs (`pods/log`).
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(10),
            max_watch: Duration::from_secs(1800),
            state_dir: None,
        }
    }
}

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Where every request is recorded (user, verb, resource, code).
    pub audit: Arc<AuditLog>,
    /// Tunables.
    pub config: Arc<ServerConfig>,
    /// The address clients use (for `/api`).
    pub addr: String,
}

/// Builds the router.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
    async move {
        // Attributes come from the URL alone (as authorization sees them), before routing.
        let query = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(req.uri())
            .map(|q| q.0)
            .unwrap_or_default();
        let attrs = audit::attributes(req.method(), req.uri().path(), &query, req.headers());
        let apply = req.method() == Method::PATCH
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/apply-patch"));
        let audit = state.audit.clone();
        let result = dispatch(state, req).await;
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                tracing::debug!(code = err.code, reason = err.reason, message = %err.message, "request failed");
                err.into_response()
            }
        };
        audit.record(&attrs, resp.status().as_u16());
        if apply && resp.status() == StatusCode::CREATED {
            // The real server authorizes an apply that creates its object as create too.
            audit.record(&audit::creating_apply(&attrs), resp.status().as_u16());
        }
        resp
    }
    .instrument(span)
    .await
}

/// A parsed request.
pub(crate) struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: bytes::Bytes,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    pub fn q_bool(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    pub fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn content_type(&self) -> String {
        self.header(header::CONTENT_TYPE)
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }
    /// Parses the body as JSON or YAML according to its content type.
    pub fn body_value(&self) -> ApiResult<Value> {
        let ct = self.content_type();
        parse_body(&ct, &self.body)
    }
    /// The field manager: the query parameter, else the user agent's product token.
    pub fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_owned();
        }
        let ua = self.header(header::USER_AGENT);
        let token = ua.split(['/', ' ']).next().unwrap_or("");
        if token.is_empty() {
            "unknown".into()
        } else {
            token.to_owned()
        }
    }
}

/// Parses a body in one of the accepted media types.
pub(crate) fn parse_body(ct: &str, body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
    match ct {
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" | "application/apply-patch+yaml" | "text/yaml" => {
            // JSON is YAML; try the strict parser first for better error messages on JSON.
            serde_json::from_str(text).or_else(|_| {
                serde_saphyr::from_str::<Value>(text).map_err(|e| {
                    ApiError::bad_request(format!("error converting YAML to JSON: {e}"))
                })
            })
        }
        other => Err(ApiError::unsupported_media(other)),
    }
}

/// JSON response with a status code.
pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn dispatch(state: AppState, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("failed to read the request body: {e}")))?;
    let query: HashMap<String, String> =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| q.0.into_iter().collect())
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let path = parts.uri.path().to_owned();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let r = Req {
        method: parts.method,
        headers: parts.headers,
        query,
        body,
    };
    let registry = &state.store.registry;
    let get_only = |v: Option<Value>| -> ApiResult<Response> {
        if r.method != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                r.method
            )));
        }
        v.map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route)
    };
    match segs.as_slice() {
        ["version"] => get_only(Some(discovery::version())),
        ["healthz" | "livez" | "readyz", ..] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => get_only(Some(discovery::core_versions(&state.addr))),
        ["apis"] => get_only(Some(registry.api_group_list())),
        ["api", v] => get_only(registry.resource_list("", v)),
        ["apis", g] => get_only(registry.api_group(g)),
        ["apis", g, v] => get_only(registry.resource_list(g, v)),
        ["openapi", "v3"] => get_only(Some(discovery::openapi_index(registry))),
        ["openapi", "v3", "api", v] => get_only(discovery::openapi_doc(registry, "", v)),
        ["openapi", "v3", "apis", g, v] => get_only(discovery::openapi_doc(registry, g, v)),
        ["api", v, rest @ ..] => resources::handle(&state, &r, "", v, rest).await,
        ["apis", g, v, rest @ ..] => resources::handle(&state, &r, g, v, rest).await,
        _ => Err(ApiError::no_route()),
    }
}

/// Serves the API on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
