//! `--change` instructions for import (the Dockerfile subset `docker import -c` accepts):
//! CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK.

use std::collections::BTreeMap;

use super::ArchiveError;
use crate::store::config::{ContainerConfig, Healthcheck};

/// Applies one instruction such as `CMD ["sh"]` or `ENV PATH=/bin` to `cfg`.
pub fn apply_change(cfg: &mut ContainerConfig, change: &str) -> Result<(), ArchiveError> {
    let bad = |why: &str| ArchiveError::Change(change.to_owned(), why.to_owned());
    let (word, rest) = change
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("want INSTRUCTION ARGUMENTS"))?;
    let rest = rest.trim();
    match word.to_ascii_uppercase().as_str() {
        "CMD" => cfg.cmd = Some(command(rest).map_err(|e| bad(&e))?),
        "ENTRYPOINT" => cfg.entrypoint = Some(command(rest).map_err(|e| bad(&e))?),
        "WORKDIR" => cfg.working_dir = Some(rest.to_owned()),
        "USER" => cfg.user = Some(rest.to_owned()),
        "STOPSIGNAL" => cfg.stop_signal = Some(rest.to_owned()),
        "ENV" => {
            let env = cfg.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs(rest).map_err(|e| bad(&e))? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |p| p.0) != k);
                env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(pairs(rest).map_err(|e| bad(&e))?);
        }
        "EXPOSE" => {
            let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_owned()
                } else {
                    format!("{p}/tcp")
                };
                ports.insert(p, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols = cfg.volumes.get_or_insert_with(BTreeMap::new);
            let list: Vec<String> = match serde_json::from_str(rest) {
                Ok(v) => v,
                Err(_) => rest.split_whitespace().map(str::to_owned).collect(),
            };
            for v in list {
                vols.insert(v, serde_json::json!({}));
            }
        }
        "HEALTHCHECK" => cfg.healthcheck = Some(healthcheck(rest).map_err(|e| bad(&e))?),
        _ => return Err(bad("unsupported instruction")),
    }
    Ok(())
}

/// `NONE`, or `[--interval=D] [--timeout=D] [--start-period=D] [--start-interval=D]
/// [--retries=N] CMD command` (exec or shell form).
fn healthcheck(s: &str) -> Result<Healthcheck, String> {
    let mut hc = Healthcheck::default();
    let mut rest = s.trim();
    if rest.eq_ignore_ascii_case("NONE") {
        hc.test = vec!["NONE".into()];
        return Ok(hc);
    }
    while let Some(opt) = rest.strip_prefix("--") {
        let (word, after) = opt.split_once(char::is_whitespace).unwrap_or((opt, ""));
        let (name, value) = word.split_once('=').ok_or("want --OPTION=VALUE")?;
        let nanos = || crate::duration::parse_nanos(value).map_err(|e| e.to_string());
        match name {
            "interval" => hc.interval = nanos()?,
            "timeout" => hc.timeout = nanos()?,
            "start-period" => hc.start_period = nanos()?,
            "start-interval" => hc.start_interval = nanos()?,
            "retries" => hc.retries = value.parse().map_err(|_| "bad --retries")?,
            _ => return Err(format!("unknown HEALTHCHECK option --{name}")),
        }
        rest = after.trim_start();
    }
    let (word, cmd) = rest
        .split_once(char::is_whitespace)
        .ok_or("want CMD command")?;
    if !word.eq_ignore_ascii_case("CMD") {
        return Err("want NONE or CMD".into());
    }
    let cmd = cmd.trim();
    hc.test = match cmd.starts_with('[') {
        true => {
            let argv: Vec<String> =
                serde_json::from_str(cmd).map_err(|e| format!("bad JSON array: {e}"))?;
            std::iter::once("CMD".to_owned()).chain(argv).collect()
        }
        false => vec!["CMD-SHELL".into(), cmd.to_owned()],
    };
    Ok(hc)
}

/// Exec form (`["a","b"]`) or shell form (`a b` -> `/bin/sh -c "a b"`).
fn command(s: &str) -> Result<Vec<String>, String> {
    if s.starts_with('[') {
        serde_json::from_str(s).map_err(|e| format!("bad JSON array: {e}"))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), s.to_owned()])
    }
}

/// `K=V K2="v 2"` or the legacy single `K V` form.
fn pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    if !s.split_whitespace().next().is_some_and(|w| w.contains('=')) {
        let (k, v) = s.split_once(char::is_whitespace).ok_or("want KEY=VALUE")?;
        return Ok(vec![(k.to_owned(), v.trim().to_owned())]);
    }
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|&c| c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            return Err("want KEY=VALUE".into());
        }
        let mut val = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => val.extend(chars.next()),
                    Some(c) => val.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
        } else {
            val.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        out.push((key.trim().to_owned(), val));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_changes() {
        let mut c = ContainerConfig::default();
        for ch in [
            r#"CMD ["sh"]"#,
            "ENTRYPOINT echo hi",
            "ENV A=1 B=\"two words\"",
            "ENV A 3",
            "WORKDIR /w",
            "USER nobody",
            "LABEL x=y",
            "EXPOSE 80 53/udp",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        assert_eq!(c.cmd.unwrap(), ["sh"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.env.unwrap(), ["B=two words", "A=3"]);
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.labels.unwrap()["x"], "y");
        let ports: Vec<String> = c.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp"]);
        assert!(apply_change(&mut ContainerConfig::default(), "RUN rm -rf /").is_err());
        assert!(apply_change(&mut ContainerConfig::default(), "CMD [oops").is_err());
    }

    #[test]
    fn healthchecks() {
        let mut c = ContainerConfig::default();
        apply_change(
            &mut c,
            "HEALTHCHECK --interval=1s --retries=2 CMD test -f /ok",
        )
        .unwrap();
        let hc = c.healthcheck.clone().unwrap();
        assert_eq!(hc.test, ["CMD-SHELL", "test -f /ok"]);
        assert_eq!((hc.interval, hc.retries, hc.timeout), (1_000_000_000, 2, 0));
        apply_change(&mut c, r#"HEALTHCHECK CMD ["true"]"#).unwrap();
        assert_eq!(c.healthcheck.clone().unwrap().test, ["CMD", "true"]);
        apply_change(&mut c, "HEALTHCHECK NONE").unwrap();
        assert_eq!(c.healthcheck.unwrap().test, ["NONE"]);
        for bad in [
            "HEALTHCHECK --interval=x CMD true",
            "HEALTHCHECK RUN x",
            "HEALTHCHECK --bogus=1 CMD t",
        ] {
            assert!(
                apply_change(&mut ContainerConfig::default(), bad).is_err(),
                "{bad}"
            );
        }
    }
}
