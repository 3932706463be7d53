//! Watch streams: newline-delimited `{"type","object"}` events read from the store's event
//! history. Start points follow the real server: no/`0` resourceVersion sends the current
//! objects as ADDED first; a version older than the history answers 200 with an in-stream
//! ERROR (410 Expired); selector watches turn match changes into ADDED/DELETED; BOOKMARKs carry
//! apiVersion/kind; `timeoutSeconds` (capped by the server) ends the stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::resources::{selectors, with_version, Target};
use super::{AppState, Req};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, Store};
use crate::table::{self, Representation};

/// Buffered events per watch before the writer waits for the client.
const CHANNEL_DEPTH: usize = 256;

struct Filter {
    key: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| meta::namespace(obj) == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

struct Encoder {
    info: Arc<ResourceInfo>,
    version: String,
    repr: Representation,
    include: String,
}

impl Encoder {
    fn line(&self, etype: &str, obj: &Value) -> Bytes {
        let obj = with_version(&self.info, &self.version, obj);
        let object = match self.repr {
            Representation::Full => obj,
            Representation::Metadata => table::partial(&obj),
            Representation::Table => {
                let rv = meta::meta_str(&obj, "resourceVersion").to_owned();
                table::table(&self.info, &[obj], &rv, None, &self.include)
            }
        };
        let mut line = json!({"type": etype, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(&self.version), "metadata": md});
        let mut line = json!({"type": "BOOKMARK", "object": obj}).to_string();
        line.push('\n');
        Bytes::from(line)
    }
}

fn expired_line(asked: u64, oldest: u64) -> Bytes {
    let status =
        ApiError::expired(format!("too old resource version: {asked} ({oldest})")).to_status();
    let mut line = json!({"type": "ERROR", "object": status}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Starts a watch; the response streams until timeout, client disconnect or expiry.
pub(crate) fn watch(state: &AppState, r: &Req, t: &Target<'_>) -> ApiResult<Response> {
    let (labels, fields) = selectors(r, &t.info)?;
    let filter = Filter {
        key: t.info.key(),
        ns: t.ns.map(str::to_owned),
        labels,
        fields,
    };
    let enc = Encoder {
        info: t.info.clone(),
        version: t.version.to_owned(),
        repr: Representation::from_accept(r.header(header::ACCEPT)),
        include: r.q("includeObject").unwrap_or("Metadata").to_owned(),
    };
    let rv = r.q("resourceVersion").unwrap_or("").to_owned();
    let start = match rv.as_str() {
        "" | "0" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))?,
        ),
    };
    let send_initial = r.q_bool("sendInitialEvents") || start.is_none();
    let bookmarks = r.q_bool("allowWatchBookmarks");
    let asked = r
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let timeout = asked
        .unwrap_or(state.config.max_watch)
        .min(state.config.max_watch);
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let store = state.store.clone();
    let interval = state.config.bookmark_interval;
    let initial_end_marker = r.q_bool("sendInitialEvents") && bookmarks;
    tokio::spawn(async move {
        run(
            store,
            filter,
            enc,
            start,
            send_initial,
            initial_end_marker,
            bookmarks,
            interval,
            timeout,
            tx,
        )
        .await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
async fn run(
    store: Arc<Store>,
    filter: Filter,
    enc: Encoder,
    start: Option<u64>,
    send_initial: bool,
    initial_end_marker: bool,
    bookmarks: bool,
    bookmark_interval: Duration,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let mut changed = store.subscribe();
    changed.borrow_and_update();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut cursor = match start {
        Some(rv) => {
            if let Err(e) = store.check_watch_rv(rv) {
                let _ = tx.send(expired_line(rv, e.oldest)).await;
                return;
            }
            rv
        }
        None => 0,
    };
    if send_initial {
        let (objs, rv) = store.snapshot(&filter.key, filter.ns.as_deref());
        for o in objs.iter().filter(|o| filter.matches(o)) {
            if tx.send(enc.line("ADDED", o)).await.is_err() {
                return;
            }
        }
        cursor = rv;
        if initial_end_marker && tx.send(enc.bookmark(cursor, true)).await.is_err() {
            return;
        }
    }
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + bookmark_interval,
        bookmark_interval,
    );
    loop {
        changed.borrow_and_update();
        if store.registry.by_key(&filter.key).is_none() {
            return; // the CRD went away
        }
        match store.events_since(cursor) {
            Err(e) => {
                let _ = tx.send(expired_line(cursor, e.oldest)).await;
                return;
            }
            Ok((events, upto)) => {
                for e in events.iter().filter(|e| e.key == filter.key) {
                    let now = filter.matches(&e.object);
                    let before = e.old.as_deref().is_some_and(|o| filter.matches(o));
                    let etype = match (e.etype, before, now) {
                        (EventType::Added, _, true) => "ADDED",
                        (EventType::Modified, true, true) => "MODIFIED",
                        (EventType::Modified, false, true) => "ADDED",
                        (EventType::Modified, true, false) => "DELETED",
                        (EventType::Deleted, _, _) if before || now => "DELETED",
                        _ => continue,
                    };
                    if tx.send(enc.line(etype, &e.object)).await.is_err() {
                        return;
                    }
                }
                cursor = upto;
            }
        }
        tokio::select! {
            res = changed.changed() => if res.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = ticker.tick(), if bookmarks => {
                if tx.send(enc.bookmark(cursor, false)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}
