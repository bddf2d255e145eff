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

/// A Unix time as docker's clients send it (`1700000000` or `1700000000.123456789`), in
/// nanoseconds.
fn nanos(name: &'static str, text: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::BadParam {
        name,
        value: text.to_owned(),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut frac = frac.to_owned();
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    while frac.len() < 9 {
        frac.push('0');
    }
    let frac: i64 = frac.parse().map_err(|_| bad())?;
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(frac))
}

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
        since: q
            .get("since")
            .filter(|s| !s.is_empty())
            .map(|s| nanos("since", s))
            .transpose()?,
        until: q
            .get("until")
            .filter(|s| !s.is_empty())
            .map(|s| nanos("until", s))
            .transpose()?,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::nanos;

    #[test]
    fn unix_times_as_clients_send_them() {
        assert_eq!(nanos("since", "12").unwrap(), 12_000_000_000);
        assert_eq!(nanos("since", "12.5").unwrap(), 12_500_000_000);
        assert_eq!(nanos("since", "1.000000001").unwrap(), 1_000_000_001);
        assert!(nanos("since", "x").is_err());
        assert!(nanos("since", "1.0000000001").is_err());
    }
}
