//! `GET /events`: docker's event stream (the state directory's event log, as every husk
//! process records it), from `since` (else from now) until `until` (else until the client
//! goes), one JSON object per line with both docker's fields (`Type`, `Action`, `Actor`)
//! and the older ones (`status`, `id`, `from`) that clients still read.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use runtime::events::{Event, FILTER_KEYS, Query as EventQuery};

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::route::Query;
use crate::server::Daemon;

fn line(e: &Event) -> Bytes {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("status".into(), e.action.clone().into());
        o.insert("id".into(), e.actor.id.clone().into());
        if let Some(image) = e.actor.attributes.get("image") {
            o.insert("from".into(), image.clone().into());
        }
    }
    Bytes::from(v.to_string() + "\n")
}

/// `GET /events?since=&until=&filters=`.
pub fn events(d: &Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    let mut filters = BTreeMap::new();
    for (key, values) in q.filters()? {
        if !FILTER_KEYS.contains(&key.as_str()) {
            return Err(ApiError::BadParam {
                name: "filters",
                value: key,
            });
        }
        filters.insert(key, values);
    }
    let query = EventQuery {
        since: q.unix_nanos("since")?,
        until: q.unix_nanos("until")?,
        filters,
    };
    let (tx, resp) = body::streamed("application/json");
    let engine = d.engine.clone();
    tokio::task::spawn_blocking(move || {
        let open = tx.clone();
        let _ = engine.events(&query, &|| !open.is_closed(), &mut |e| {
            tx.blocking_send(line(e)).is_ok()
        });
    });
    Ok(resp)
}
