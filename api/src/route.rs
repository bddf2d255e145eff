//! Request paths and query strings: `/v1.41/containers/abc/start?t=5` becomes the version
//! `1.41`, the segments `["containers", "abc", "start"]` and the query `{t: 5}`.

use std::collections::HashMap;

use crate::error::ApiError;

/// The API version the path names (if any) and its segments.
pub fn split(path: &str) -> (Option<&str>, Vec<&str>) {
    let mut segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let version = match segs.first().and_then(|s| s.strip_prefix('v')) {
        Some(v)
            if v.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            segs.remove(0);
            Some(v)
        }
        _ => None,
    };
    (version, segs)
}

/// Whether API version `asked` is newer than husk's.
pub fn too_new(asked: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(asked) > parse(crate::API_VERSION)
}

/// A request's query parameters, in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=x` (absent: empty).
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// A parameter's value (the last, if it is repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`names=a&names=b`).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean parameter (docker's clients send `1`/`0` or `true`/`false`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("1" | "true" | "True" | "TRUE"))
    }

    /// An integer parameter (absent or empty: `None`).
    pub fn int(&self, name: &'static str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| ApiError::BadParam {
                name,
                value: v.to_owned(),
            }),
        }
    }

    /// A Unix time parameter (`1700000000` or `1700000000.123456789`) in nanoseconds
    /// (absent or empty: `None`).
    pub fn unix_nanos(&self, name: &'static str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(text) => nanos(name, text).map(Some),
        }
    }

    /// `filters={"label":["a=b"],"status":{"running":true}}` as name -> values (both of
    /// docker's encodings: lists and maps of `true`).
    pub fn filters(&self) -> Result<HashMap<String, Vec<String>>, ApiError> {
        let Some(text) = self.get("filters").filter(|t| !t.is_empty()) else {
            return Ok(HashMap::new());
        };
        let bad = || ApiError::BadParam {
            name: "filters",
            value: text.to_owned(),
        };
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|_| bad())?;
        let mut out = HashMap::new();
        for (name, v) in raw {
            let values = match v {
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                serde_json::Value::Object(m) => m.into_iter().map(|(k, _)| k).collect(),
                _ => return Err(bad()),
            };
            out.insert(name, values);
        }
        Ok(out)
    }
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_and_segments() {
        assert_eq!(
            split("/v1.41/containers/abc/start"),
            (Some("1.41"), vec!["containers", "abc", "start"])
        );
        assert_eq!(split("/_ping"), (None, vec!["_ping"]));
        assert_eq!(split("/volumes/vx"), (None, vec!["volumes", "vx"]));
        assert!(too_new("1.50") && !too_new("1.41") && !too_new("1.24"));
    }

    #[test]
    fn unix_times_as_clients_send_them() {
        assert_eq!(nanos("since", "12").unwrap(), 12_000_000_000);
        assert_eq!(nanos("since", "12.5").unwrap(), 12_500_000_000);
        assert_eq!(nanos("since", "1.000000001").unwrap(), 1_000_000_001);
        assert!(nanos("since", "x").is_err());
        assert!(nanos("since", "1.0000000001").is_err());
    }

    #[test]
    fn queries_and_filters() {
        let q = Query::parse(Some(
            "all=1&t=5&filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%2C%22name%22%3A%5B%22web%22%5D%7D",
        ));
        assert!(q.flag("all") && !q.flag("force"));
        assert_eq!(q.int("t").unwrap(), Some(5));
        let f = q.filters().unwrap();
        assert_eq!(f["label"], ["a=b"]);
        assert_eq!(f["name"], ["web"]);
        assert!(Query::parse(Some("t=x")).int("t").is_err());
        let many = Query::parse(Some("names=a&names=b%2Fc&t=1&t=2"));
        assert_eq!(many.all("names"), ["a", "b/c"]);
        assert_eq!(many.get("t"), Some("2"));
        assert!(Query::parse(Some("filters=nope")).filters().is_err());
    }
}
