//! Keeps the template cache (`vm-templates`, docs/warm-starts.md) from growing without
//! end. Templates are keyed by the kernel, initramfs and VMM binary, the machine's shape
//! and the image, so every update of husk and every image run twice leaves a template that
//! may never be restored again. Each restore stamps its template (the modification time of
//! its `used` file); after a template is made, the others go once unused for [`MAX_IDLE`],
//! and beyond [`KEEP`] templates the least recently used go as well. A template whose
//! lock is held (being made) stays, and so does everything a maker has in progress.
//! Removing a template only costs its next user the making of a new one.

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A template not restored for this long is removed.
pub const MAX_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many templates stay, the most recently used.
pub const KEEP: usize = 32;
/// The file whose modification time says when a template was last restored.
const USED: &str = "used";

/// Notes that the template in `dir` is being restored now. Best effort: a template
/// without a stamp counts as used when it was made.
pub(super) fn stamp(dir: &Path) {
    if let Ok(f) = File::options()
        .create(true)
        .append(true)
        .open(dir.join(USED))
    {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// One template found in the cache.
#[derive(Debug)]
struct Found {
    key: String,
    last_used: SystemTime,
}

/// Removes the templates in `templates` that the policy above lets go, never `made` (the
/// one just made); returns their keys.
pub(super) fn prune(templates: &Path, made: &str, now: SystemTime) -> Vec<String> {
    let Ok(entries) = fs::read_dir(templates) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() && !name.starts_with('.') {
            if name != made {
                let last_used = fs::metadata(entry.path().join(USED))
                    .or(Ok::<_, std::io::Error>(meta))
                    .and_then(|m| m.modified())
                    .unwrap_or(now);
                found.push(Found {
                    key: name,
                    last_used,
                });
            }
        } else {
            files.push((entry.path(), meta.modified().unwrap_or(now)));
        }
    }
    let idle = |t: SystemTime| now.duration_since(t).unwrap_or_default() > MAX_IDLE;
    found.sort_by_key(|f| std::cmp::Reverse(f.last_used));
    let mut removed = Vec::new();
    // The one just made counts towards KEEP.
    for (rank, f) in found.iter().enumerate() {
        if (rank + 1 >= KEEP || idle(f.last_used)) && remove(templates, &f.key) {
            removed.push(f.key.clone());
        }
    }
    for (path, modified) in files {
        if idle(modified) && stale_file(&path, templates) {
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
    removed
}

/// Removes template `key` and its console log unless a maker holds its lock. The lock
/// file itself stays: removing it could let two makers lock two different files.
fn remove(templates: &Path, key: &str) -> bool {
    let lock_path = templates.join(format!("{key}.lock"));
    let lock = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(_) => return false,
    };
    if lock.try_lock().is_err() {
        return false;
    }
    let gone = fs::remove_dir_all(templates.join(key)).is_ok();
    let _ = fs::remove_file(templates.join(format!("{key}.console.log")));
    gone
}

/// Whether an old file beside the templates may go: a first-use mark (`<key>.seen`), the
/// console log of a template that is gone, or what a killed maker left (`.<key>.tmp-*`).
fn stale_file(path: &Path, templates: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with('.') {
        return name.contains(".tmp-");
    }
    if name.ends_with(".seen") {
        return true;
    }
    match name.strip_suffix(".console.log") {
        Some(key) => !templates.join(key).exists(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn template(root: &Path, key: &str, used: SystemTime) {
        let dir = root.join(key);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("state"), "s").unwrap();
        File::create(dir.join(USED))
            .unwrap()
            .set_modified(used)
            .unwrap();
        fs::write(root.join(format!("{key}.console.log")), "log").unwrap();
    }

    fn file(root: &Path, name: &str, modified: SystemTime) {
        File::create(root.join(name))
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }

    fn left(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn templates_unused_for_a_week_go_with_their_logs() {
        let t = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        template(t.path(), "fresh", now - DAY);
        template(t.path(), "old", now - 8 * DAY);
        template(t.path(), "made", now - 30 * DAY);
        let removed = prune(t.path(), "made", now);
        assert_eq!(removed, vec!["old"]);
        assert_eq!(
            left(t.path()),
            [
                "fresh",
                "fresh.console.log",
                "made",
                "made.console.log",
                "old.lock"
            ]
        );
    }

    #[test]
    fn beyond_keep_the_least_recently_used_go() {
        let t = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for i in 0..KEEP + 3 {
            template(
                t.path(),
                &format!("t{i:02}"),
                now - Duration::from_secs(i as u64),
            );
        }
        let mut removed = prune(t.path(), "t05", now);
        removed.sort();
        // t05 (just made) stays and counts: KEEP - 1 others stay, the oldest 3 go.
        let want: Vec<String> = (KEEP..KEEP + 3).map(|i| format!("t{i:02}")).collect();
        assert_eq!(removed, want);
        assert!(t.path().join("t05").exists() && t.path().join("t00").exists());
    }

    #[test]
    fn a_template_being_made_stays() {
        let t = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        template(t.path(), "busy", now - 9 * DAY);
        let lock = File::create(t.path().join("busy.lock")).unwrap();
        lock.lock().unwrap();
        assert!(prune(t.path(), "other", now).is_empty());
        assert!(t.path().join("busy").join("state").exists());
    }

    #[test]
    fn old_marks_and_leftovers_go_and_recent_ones_stay() {
        let t = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        file(t.path(), "a-image.seen", now - 8 * DAY);
        file(t.path(), "b-image.seen", now - DAY);
        file(t.path(), ".c.tmp-scratch-7", now - 8 * DAY);
        file(t.path(), ".d.tmp-scratch-8", now);
        file(t.path(), "gone.console.log", now - 8 * DAY);
        file(t.path(), "e.lock", now - 8 * DAY);
        prune(t.path(), "none", now);
        assert_eq!(
            left(t.path()),
            [".d.tmp-scratch-8", "b-image.seen", "e.lock"]
        );
    }

    #[test]
    fn a_stamp_marks_a_template_used_and_never_makes_one() {
        let t = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        template(t.path(), "k", now - 8 * DAY);
        stamp(&t.path().join("k"));
        stamp(&t.path().join("missing"));
        assert!(prune(t.path(), "other", now).is_empty());
        assert!(!t.path().join("missing").exists());
    }
}
