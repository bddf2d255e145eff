//! docker's events: what happened to containers and images, as a log every husk process
//! appends to (`<root>/events.log`, one JSON object per line, docker's event shape) and
//! `husk events` reads and follows. Recording is best effort: an event that cannot be
//! written is logged and the verb goes on. The log is bounded: past [`MAX_LOG`] bytes it
//! moves to `events.log.1` (replacing the previous one) and a new one starts.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The log's file name under the state root.
pub const LOG: &str = "events.log";
/// Size past which the log moves aside.
pub const MAX_LOG: u64 = 1 << 20;
/// How often a follower looks for more.
const POLL: Duration = Duration::from_millis(100);

/// One event, in docker's shape (`/events` of the Engine API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `container` or `image`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`, `pull`, ...
    #[serde(rename = "Action")]
    pub action: String,
    /// What it happened to.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    pub scope: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// Nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

/// What an event happened to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Container ID, or image ID or reference.
    #[serde(rename = "ID")]
    pub id: String,
    /// `name`, `image`, `exitCode`, `signal`, ... (a container's labels too).
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// A container event, with the container's name, image and labels as attributes.
    pub fn container(
        action: &str,
        config: &crate::container::ContainerConfig,
        extra: &[(&str, String)],
    ) -> Self {
        let mut attributes: BTreeMap<String, String> = config.config.labels.clone();
        attributes.insert("name".into(), config.name.clone());
        attributes.insert("image".into(), config.image_ref.clone());
        for (k, v) in extra {
            attributes.insert((*k).into(), v.clone());
        }
        Self::new("container", action, &config.id, attributes)
    }

    /// An image event (`id` is the image ID or reference docker names).
    pub fn image(action: &str, id: &str, name: Option<&str>) -> Self {
        let mut attributes = BTreeMap::new();
        if let Some(n) = name {
            attributes.insert("name".into(), n.to_owned());
        }
        Self::new("image", action, id, attributes)
    }

    fn new(kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Event {
            kind: kind.into(),
            action: action.into(),
            actor: Actor {
                id: id.into(),
                attributes,
            },
            scope: "local".into(),
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        }
    }

    /// docker's line: `2026-12-05T23:58:05.123456789Z container start ID (image=x, name=y)`.
    pub fn line(&self) -> String {
        let secs = self.time_nano.div_euclid(1_000_000_000);
        let nanos = u32::try_from(self.time_nano.rem_euclid(1_000_000_000)).unwrap_or(0);
        let when = chrono::DateTime::from_timestamp(secs, nanos)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
            .unwrap_or_default();
        let attrs: Vec<String> = self
            .actor
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{when} {} {} {} ({})",
            self.kind,
            self.action,
            self.actor.id,
            attrs.join(", ")
        )
    }
}

/// Appends `event` to the log of `root` (best effort).
pub fn record(root: &Path, event: &Event) {
    if let Err(e) = append(root, event) {
        log::warn!("cannot record the {} event: {e}", event.action);
    }
}

fn append(root: &Path, event: &Event) -> io::Result<()> {
    let path = root.join(LOG);
    if fs::metadata(&path).is_ok_and(|m| m.len() > MAX_LOG) {
        // Moved aside under a lock, checked again there: of two writers that saw it too
        // large, only the first moves it (the second would move the fresh log over it).
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(format!("{LOG}.lock")))?;
        // SAFETY: flock on a descriptor we own; released when `lock` closes.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        if fs::metadata(&path).is_ok_and(|m| m.len() > MAX_LOG) {
            fs::rename(&path, root.join(format!("{LOG}.1")))?;
        }
    }
    let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
    line.push(b'\n');
    // One write of one line on an O_APPEND file: lines from several writers do not mix.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?
        .write_all(&line)
}

/// Which events `events` shows.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// From this time (nanoseconds; `None`: only events from now on).
    pub since: Option<i64>,
    /// Up to this time (nanoseconds; `None`: follow until interrupted).
    pub until: Option<i64>,
    /// docker's filters: `type`, `event`, `container`, `image`, `label`; values of one key
    /// are alternatives, keys combine.
    pub filters: BTreeMap<String, Vec<String>>,
}

impl Query {
    /// Whether `e` passes the filters.
    pub fn matches(&self, e: &Event) -> bool {
        self.filters.iter().all(|(key, values)| {
            values.iter().any(|v| match key.as_str() {
                "type" => e.kind == *v,
                "event" => e.action == *v,
                "container" => {
                    e.kind == "container"
                        && (e.actor.id.starts_with(v.as_str())
                            || e.actor.attributes.get("name") == Some(v))
                }
                "image" => {
                    e.actor.attributes.get("image") == Some(v)
                        || (e.kind == "image"
                            && (e.actor.id == *v || e.actor.attributes.get("name") == Some(v)))
                }
                "label" => match v.split_once('=') {
                    Some((k, val)) => e.actor.attributes.get(k).map(String::as_str) == Some(val),
                    None => e.actor.attributes.contains_key(v.as_str()),
                },
                _ => false,
            })
        })
    }
}

/// The filter keys `events` takes.
pub const FILTER_KEYS: &[&str] = &["type", "event", "container", "image", "label"];

/// Calls `show` for each event `q` selects, in order: the logged ones from `since`, then
/// new ones as they come, until `until` has passed (or forever without it) or `show`
/// returns false.
pub fn follow(root: &Path, q: &Query, show: &mut dyn FnMut(&Event) -> bool) -> io::Result<()> {
    follow_while(root, q, &|| true, show)
}

/// [`follow`], also ending when `wanted` turns false (checked between reads: a client that
/// went away while nothing happened).
pub fn follow_while(
    root: &Path,
    q: &Query,
    wanted: &dyn Fn() -> bool,
    show: &mut dyn FnMut(&Event) -> bool,
) -> io::Result<()> {
    let now = Event::new("", "", "", BTreeMap::new()).time_nano;
    let since = q.since.unwrap_or(now);
    let path = root.join(LOG);
    let mut pass = |e: &Event| -> bool {
        if e.time_nano < since || !q.matches(e) {
            return true;
        }
        if q.until.is_some_and(|u| e.time_nano > u) {
            return true;
        }
        show(e)
    };
    // What is already logged (the moved-aside part first).
    if q.since.is_some() {
        for e in read_all(&root.join(format!("{LOG}.1")))? {
            if !pass(&e) {
                return Ok(());
            }
        }
    }
    let mut reader = Tail::open(path);
    loop {
        for e in reader.more()? {
            if !pass(&e) {
                return Ok(());
            }
        }
        let clock = Event::new("", "", "", BTreeMap::new()).time_nano;
        if q.until.is_some_and(|u| clock > u) || !wanted() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

fn read_all(path: &Path) -> io::Result<Vec<Event>> {
    match File::open(path) {
        Ok(f) => Ok(parse_lines(BufReader::new(f))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Events from lines; a torn or foreign line is skipped.
fn parse_lines(r: impl BufRead) -> Vec<Event> {
    r.lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The log read as it grows, across a move aside.
struct Tail {
    path: PathBuf,
    file: Option<(File, u64)>,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn open(path: PathBuf) -> Self {
        Tail {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Whole lines added since the last call.
    fn more(&mut self) -> io::Result<Vec<Event>> {
        let current = fs::metadata(&self.path).ok().map(|m| m.ino());
        let mut events = Vec::new();
        if self.file.as_ref().map(|(_, ino)| *ino) != current {
            // What was appended to the old file before it moved comes first.
            events = self.read_new()?;
            // New (or first, or moved aside): read it from the start.
            self.file = match File::open(&self.path) {
                Ok(f) => {
                    let ino = f.metadata()?.ino();
                    Some((f, ino))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            self.offset = 0;
            self.partial.clear();
        }
        events.extend(self.read_new()?);
        Ok(events)
    }

    /// Whole lines of the current file past the offset.
    fn read_new(&mut self) -> io::Result<Vec<Event>> {
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        io::Read::read_to_end(file, &mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        Ok(parse_lines(whole.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_events_are_read_back_filtered_and_across_a_move() {
        let dir = tempfile::tempdir().unwrap();
        let start = Event::image("pull", "busybox:latest", Some("busybox:latest"));
        record(dir.path(), &start);
        let mut tag = Event::image("tag", "sha256:ab", Some("x:1"));
        tag.time_nano = start.time_nano + 1;
        record(dir.path(), &tag);
        let q = Query {
            since: Some(0),
            until: Some(tag.time_nano),
            filters: [("event".to_owned(), vec!["tag".to_owned()])].into(),
        };
        let mut seen = Vec::new();
        follow(dir.path(), &q, &mut |e| {
            seen.push(e.clone());
            true
        })
        .unwrap();
        assert_eq!(seen, [tag.clone()]);
        assert!(
            tag.line().contains(" image tag sha256:ab (name=x:1)"),
            "{}",
            tag.line()
        );

        let mut tail = Tail::open(dir.path().join(LOG));
        assert_eq!(tail.more().unwrap().len(), 2);
        fs::rename(dir.path().join(LOG), dir.path().join(format!("{LOG}.1"))).unwrap();
        record(dir.path(), &start);
        assert_eq!(tail.more().unwrap(), [start]);
    }
}
