//! The builder's interpreter: the Dockerfile's stages in order up to the target, each
//! instruction one step that either finds its image in the cache or makes it (a new config,
//! or a layer from a [`StepBox`]), printing docker's plain progress.

use std::collections::BTreeMap;

use parse_dockerfile::{Command, Dockerfile, Flag, HealthcheckArguments, Instruction};
use rootfs::store::config::{ContainerConfig, Healthcheck};
use rootfs::store::{ImageRecord, Store};
use sha2::{Digest as _, Sha256};

use super::copy::{self, CopySpec};
use super::step::StepBox;
use super::words;
use super::{BuildError, BuildOptions, Built, Context, Output};
use crate::container::Isolation;
use crate::engine::{Engine, EngineError};

/// A build in progress.
pub(super) struct Build<'a> {
    pub engine: &'a Engine,
    text: &'a str,
    df: Dockerfile<'a>,
    pub escape: char,
    pub context: &'a Context,
    pub opts: &'a BuildOptions,
    pub out: &'a Output,
    pub isolation: Isolation,
    pub store: Store,
    global: BTreeMap<String, Option<String>>,
    total: usize,
    step: usize,
    cached: usize,
    ran: usize,
    /// Built stages: name (lowercase) and image.
    pub stages: Vec<(Option<String>, Option<ImageRecord>)>,
}

/// One stage's state: the image so far and what the next step starts from.
pub(super) struct Stage {
    /// The last step's image (`None`: scratch, nothing made yet).
    pub image: Option<ImageRecord>,
    /// The config the next image gets.
    pub config: ContainerConfig,
    /// ARGs declared in the stage, with their values.
    args: BTreeMap<String, Option<String>>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl Stage {
    /// The variables instructions expand: ENV over ARG.
    pub fn var(&self, name: &str) -> Option<String> {
        let env = self.config.env.iter().flatten();
        env.filter_map(|e| e.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
            .or_else(|| self.args.get(name).cloned().flatten())
    }

    /// The ARGs a RUN sees as environment (`K=V`), sorted.
    fn arg_env(&self) -> Vec<String> {
        self.args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect()
    }

    /// The working directory (`/` by default).
    pub fn workdir(&self) -> String {
        self.config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }
}

impl<'a> Build<'a> {
    pub fn new(
        engine: &'a Engine,
        text: &'a str,
        context: &'a Context,
        opts: &'a BuildOptions,
        out: &'a Output,
    ) -> Result<Self, BuildError> {
        let df = parse_dockerfile::parse(text).map_err(|e| BuildError::Parse(e.to_string()))?;
        let escape = df
            .parser_directives
            .escape
            .as_ref()
            .map_or('\\', |d| d.value.value);
        let isolation = engine
            .isolation(opts.isolation.as_deref())
            .map_err(BuildError::engine)?;
        let store = Store::open(engine.root())?;
        let mut build = Self {
            engine,
            text,
            df,
            escape,
            context,
            opts,
            out,
            isolation,
            store,
            global: BTreeMap::new(),
            total: 0,
            step: 0,
            cached: 0,
            ran: 0,
            stages: Vec::new(),
        };
        build.global_args()?;
        Ok(build)
    }

    /// ARGs before the first FROM: they parameterize FROM lines.
    fn global_args(&mut self) -> Result<(), BuildError> {
        let texts: Vec<String> = self
            .df
            .global_args()
            .map(|a| a.arguments.value.to_string())
            .collect();
        for text in texts {
            let known = self.global.clone();
            let vars = |n: &str| known.get(n).cloned().flatten();
            let pairs = words::pairs("ARG", &text, self.escape, &vars)?;
            for (name, default) in pairs {
                let value = self.opts.build_args.get(&name).cloned().or(default);
                self.global.insert(name, value);
            }
        }
        Ok(())
    }

    fn arg_value(&self, name: &str, args: &BTreeMap<String, Option<String>>) -> Option<String> {
        args.get(name).cloned().flatten()
    }

    /// Builds every stage up to the target; tags and labels the result.
    pub fn run(mut self) -> Result<Built, BuildError> {
        let names: Vec<Option<String>> = self
            .df
            .stages()
            .map(|s| s.from.as_.as_ref().map(|(_, n)| n.value.to_lowercase()))
            .collect();
        let last = match &self.opts.target {
            Some(t) => names
                .iter()
                .position(|n| n.as_deref() == Some(t.to_lowercase().as_str()))
                .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
            None => names.len() - 1,
        };
        let ranges: Vec<(usize, usize)> = self.stage_ranges();
        self.total = ranges[..=last].iter().map(|(a, b)| b - a).sum();
        for (i, (start, end)) in ranges[..=last].iter().enumerate() {
            let image = self.run_stage(*start, *end)?;
            self.stages.push((names[i].clone(), image));
        }
        let Some((_, Some(mut image))) = self.stages.pop() else {
            return Err(BuildError::Unsupported(
                "the build made no image: a stage FROM scratch needs at least one instruction"
                    .into(),
            ));
        };
        if !self.opts.labels.is_empty() {
            let mut config = image.config.config.clone().unwrap_or_default();
            config
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(self.opts.labels.clone());
            let labels: Vec<String> = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let created_by = format!("LABEL {}", labels.join(" "));
            image = self.derive(Some(&image), config, None, created_by)?;
        }
        self.out
            .line(&format!("Successfully built {}", image.id.short()))?;
        for tag in &self.opts.tags {
            self.store.tag(&image.id.to_string(), tag)?;
            self.out
                .line(&format!("Successfully tagged {}", familiar(tag)))?;
        }
        crate::events::record(
            self.engine.root(),
            &crate::events::Event::image("build", &image.id.to_string(), None),
        );
        Ok(Built {
            image: self.store.resolve(&image.id.to_string())?,
            cached: self.cached,
            ran: self.ran,
        })
    }

    /// Each stage's instruction indexes: its FROM and the rest.
    fn stage_ranges(&self) -> Vec<(usize, usize)> {
        let starts: Vec<usize> = self
            .df
            .instructions
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i, Instruction::From(_)))
            .map(|(n, _)| n)
            .collect();
        let mut ranges = Vec::new();
        for (k, s) in starts.iter().enumerate() {
            let end = starts
                .get(k + 1)
                .copied()
                .unwrap_or(self.df.instructions.len());
            ranges.push((*s, end));
        }
        ranges
    }

    fn run_stage(&mut self, start: usize, end: usize) -> Result<Option<ImageRecord>, BuildError> {
        let mut stage = self.from(start)?;
        let triggers = stage.config.on_build.take().unwrap_or_default();
        for trigger in triggers {
            self.trigger(&mut stage, &trigger)?;
        }
        for n in start + 1..end {
            let display = self.display(n);
            self.begin(&display)?;
            self.instruction(&mut stage, n, &display)?;
        }
        Ok(stage.image)
    }

    /// `Step N/M : TEXT`.
    fn begin(&mut self, display: &str) -> Result<(), BuildError> {
        self.step += 1;
        self.out
            .line(&format!("Step {}/{} : {display}", self.step, self.total))
    }

    /// The instruction's text as written, continuation lines joined, comments dropped.
    fn display(&self, n: usize) -> String {
        let start = keyword_start(&self.df.instructions[n]);
        let end = self
            .df
            .instructions
            .get(n + 1)
            .map_or(self.text.len(), keyword_start);
        join_lines(&self.text[start..end], self.escape)
    }

    fn from(&mut self, n: usize) -> Result<Stage, BuildError> {
        let display = self.display(n);
        self.begin(&display)?;
        let Instruction::From(from) = &self.df.instructions[n] else {
            return Err(BuildError::invalid("FROM", "a stage must start with FROM"));
        };
        if let Some(f) = from.options.iter().find(|f| f.name.value != "platform") {
            return Err(BuildError::invalid(
                "FROM",
                format!("unknown flag: --{}", f.name.value),
            ));
        }
        let vars = |n: &str| self.arg_value(n, &self.global);
        let name = words::expand(&from.image.value, self.escape, &vars)?;
        let image = self.base_image(&name)?;
        if let Some(i) = &image {
            self.out.line(&format!(" ---> {}", i.id.short()))?;
        }
        let config = image
            .as_ref()
            .and_then(|i| i.config.config.clone())
            .unwrap_or_default();
        Ok(Stage {
            image,
            config,
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    /// FROM's image: `scratch`, an earlier stage, or a stored (else pulled) image.
    fn base_image(&self, name: &str) -> Result<Option<ImageRecord>, BuildError> {
        if name.eq_ignore_ascii_case("scratch") {
            return Ok(None);
        }
        if let Some(image) = self.stage_image(name) {
            return Ok(image);
        }
        self.image(name).map(Some)
    }

    /// A built stage by name or index.
    pub fn stage_image(&self, name: &str) -> Option<Option<ImageRecord>> {
        let lower = name.to_lowercase();
        if let Some((_, image)) = self
            .stages
            .iter()
            .find(|(n, _)| n.as_deref() == Some(&lower))
        {
            return Some(image.clone());
        }
        let index: usize = name.parse().ok()?;
        self.stages.get(index).map(|(_, image)| image.clone())
    }

    /// A stored image (pulled when missing, or always with `--pull`).
    pub fn image(&self, name: &str) -> Result<ImageRecord, BuildError> {
        if !self.opts.pull {
            match self.store.resolve(name) {
                Ok(image) => return Ok(image),
                Err(rootfs::store::StoreError::NoSuchImage(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let progress = PullLines(self.out.clone());
        self.engine
            .pull(name, &progress)
            .map_err(BuildError::engine)?;
        self.store.resolve(name).map_err(|_| {
            BuildError::engine(EngineError::NoSuchImage(crate::engine::with_latest(name)))
        })
    }

    /// Runs one ONBUILD trigger of the base image.
    fn trigger(&mut self, stage: &mut Stage, trigger: &str) -> Result<(), BuildError> {
        let text = format!("FROM scratch\n{trigger}\n");
        let df = parse_dockerfile::parse(&text).map_err(|e| BuildError::Parse(e.to_string()))?;
        if df.instructions.len() != 2 {
            return Err(BuildError::Parse(format!(
                "bad ONBUILD trigger {trigger:?}"
            )));
        }
        self.out
            .line(&format!("# Executing 1 build trigger: {trigger}"))?;
        let inner = Build {
            engine: self.engine,
            text: &text,
            df,
            escape: self.escape,
            context: self.context,
            opts: self.opts,
            out: self.out,
            isolation: self.isolation,
            store: Store::open(self.engine.root())?,
            global: BTreeMap::new(),
            total: 0,
            step: 0,
            cached: 0,
            ran: 0,
            stages: self.stages.clone(),
        };
        let mut inner = inner;
        inner.instruction(stage, 1, trigger)?;
        self.cached += inner.cached;
        self.ran += inner.ran;
        Ok(())
    }

    fn instruction(&mut self, st: &mut Stage, n: usize, display: &str) -> Result<(), BuildError> {
        let e = self.escape;
        // Instructions borrow the Dockerfile; what they need is copied out first.
        match &self.df.instructions[n] {
            Instruction::Arg(a) => {
                let text = a.arguments.value.to_string();
                self.arg(st, &text)
            }
            Instruction::Env(i) => {
                let pairs = words::pairs("ENV", &i.arguments.value, e, &|n: &str| st.var(n))?;
                let env = st.config.env.get_or_insert_with(Vec::new);
                for (k, v) in pairs {
                    env.retain(|x| x.split_once('=').map_or(x.as_str(), |p| p.0) != k);
                    env.push(format!("{k}={}", v.unwrap_or_default()));
                }
                self.meta(st, display)
            }
            Instruction::Label(i) => {
                let pairs = words::pairs("LABEL", &i.arguments.value, e, &|n: &str| st.var(n))?;
                let labels = st.config.labels.get_or_insert_with(BTreeMap::new);
                labels.extend(pairs.into_iter().map(|(k, v)| (k, v.unwrap_or_default())));
                self.meta(st, display)
            }
            Instruction::Workdir(i) => {
                let dir = words::expand(&i.arguments.value, e, &|n: &str| st.var(n))?;
                st.config.working_dir = Some(absolute(&st.workdir(), &dir));
                self.meta(st, display)
            }
            Instruction::User(i) => {
                st.config.user = Some(words::expand(&i.arguments.value, e, &|n: &str| st.var(n))?);
                self.meta(st, display)
            }
            Instruction::Stopsignal(i) => {
                let sig = words::expand(&i.arguments.value, e, &|n: &str| st.var(n))?;
                crate::signal::parse(&sig)
                    .map_err(|err| BuildError::invalid("STOPSIGNAL", err.to_string()))?;
                st.config.stop_signal = Some(sig);
                self.meta(st, display)
            }
            Instruction::Expose(i) => {
                let mut keys = Vec::new();
                for p in &i.arguments {
                    for word in words::split(&p.value, e, &|n: &str| st.var(n))? {
                        keys.push(expose_key(&word)?);
                    }
                }
                let ports = st.config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for k in keys {
                    ports.insert(k, serde_json::json!({}));
                }
                self.meta(st, display)
            }
            Instruction::Volume(i) => {
                let raw: Vec<String> = match &i.arguments {
                    parse_dockerfile::JsonOrStringArray::Json(a) => {
                        a.value.iter().map(|s| s.value.to_string()).collect()
                    }
                    parse_dockerfile::JsonOrStringArray::String(a) => {
                        a.iter().map(|s| s.value.to_string()).collect()
                    }
                };
                let mut paths = Vec::new();
                for v in raw {
                    let v = words::expand(&v, e, &|n: &str| st.var(n))?;
                    if v.is_empty() {
                        return Err(BuildError::invalid(
                            "VOLUME",
                            "volume paths must not be empty",
                        ));
                    }
                    paths.push(v);
                }
                let vols = st.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in paths {
                    vols.insert(v, serde_json::json!({}));
                }
                self.meta(st, display)
            }
            Instruction::Cmd(i) => {
                st.config.cmd = Some(command(&i.arguments, st, e));
                st.cmd_set = true;
                self.meta(st, display)
            }
            Instruction::Entrypoint(i) => {
                st.config.entrypoint = Some(command(&i.arguments, st, e));
                if !st.cmd_set {
                    st.config.cmd = None;
                }
                self.meta(st, display)
            }
            Instruction::Shell(i) => {
                st.config.shell = Some(i.arguments.iter().map(|s| s.value.to_string()).collect());
                self.meta(st, display)
            }
            Instruction::Healthcheck(i) => {
                st.config.healthcheck = Some(healthcheck(&i.options, &i.arguments, e)?);
                self.meta(st, display)
            }
            Instruction::Onbuild(_) => {
                let trigger = display
                    .split_once(char::is_whitespace)
                    .map_or("", |(_, t)| t.trim())
                    .to_owned();
                st.config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(trigger);
                self.meta(st, display)
            }
            Instruction::Maintainer(_) => self.meta(st, display),
            Instruction::Run(r) => {
                if !r.here_docs.is_empty() {
                    return Err(BuildError::Unsupported(
                        "RUN with here-documents is not supported yet".into(),
                    ));
                }
                if let Some(f) = r.options.first() {
                    return Err(BuildError::Unsupported(format!(
                        "RUN --{} is not supported",
                        f.name.value
                    )));
                }
                let argv = command(&r.arguments, st, e);
                self.run_step(st, argv, display)
            }
            Instruction::Copy(c) => {
                let spec = CopySpec::new("COPY", &c.options, &c.src, &c.dest, st, e)?;
                self.copy_step(st, spec, display)
            }
            Instruction::Add(c) => {
                let spec = CopySpec::new("ADD", &c.options, &c.src, &c.dest, st, e)?;
                self.copy_step(st, spec, display)
            }
            Instruction::From(_) => Err(BuildError::invalid("FROM", "unexpected FROM")),
            _ => Err(BuildError::Unsupported(format!(
                "{display}: an instruction husk does not know"
            ))),
        }
    }

    fn arg(&mut self, st: &mut Stage, text: &str) -> Result<(), BuildError> {
        let pairs = words::pairs("ARG", text, self.escape, &|n: &str| st.var(n))?;
        for (name, default) in pairs {
            let value = self
                .opts
                .build_args
                .get(&name)
                .cloned()
                .or(default)
                .or_else(|| self.global.get(&name).cloned().flatten());
            st.args.insert(name, value);
        }
        Ok(())
    }

    /// A step that changes only the config.
    fn meta(&mut self, st: &mut Stage, display: &str) -> Result<(), BuildError> {
        let key = key(&[display, &config_json(&st.config)]);
        if let Some(hit) = self.cache(st, &key)? {
            st.image = Some(hit);
            return Ok(());
        }
        let image = self.derive_keyed(st.image.as_ref(), st.config.clone(), None, display, &key)?;
        self.out.line(&format!(" ---> {}", image.id.short()))?;
        st.image = Some(image);
        Ok(())
    }

    /// The cached image of a step, if any (and not `--no-cache`).
    fn cache(&mut self, st: &Stage, key: &str) -> Result<Option<ImageRecord>, BuildError> {
        if self.opts.no_cache {
            return Ok(None);
        }
        let parent = st.image.as_ref().map(|i| &i.id);
        let Some(hit) = self.store.built(parent, key)? else {
            return Ok(None);
        };
        self.cached += 1;
        self.out.line(" ---> Using cache")?;
        self.out.line(&format!(" ---> {}", hit.id.short()))?;
        Ok(Some(hit))
    }

    fn run_step(
        &mut self,
        st: &mut Stage,
        argv: Vec<String>,
        display: &str,
    ) -> Result<(), BuildError> {
        let args = st.arg_env();
        let created_by = match args.is_empty() {
            true => format!("RUN {}", argv.join(" ")),
            false => format!("RUN |{} {} {}", args.len(), args.join(" "), argv.join(" ")),
        };
        let key = key(&[display, &created_by, &config_json(&st.config)]);
        if let Some(hit) = self.cache(st, &key)? {
            st.image = Some(hit);
            return Ok(());
        }
        let Some(image) = st.image.clone() else {
            return Err(BuildError::Unsupported(
                "RUN needs an image to run in: this stage is FROM scratch with nothing copied into it yet".into(),
            ));
        };
        let sandbox = StepBox::open(
            self.engine,
            &image,
            self.isolation,
            self.opts.network.as_deref(),
        )?;
        self.out
            .line(&format!(" ---> Running in {}", sandbox.short_id()))?;
        let code = sandbox.run(&argv, &args, self.out)?;
        if code != 0 {
            return Err(BuildError::RunFailed {
                command: argv.join(" "),
                code,
            });
        }
        let layer = copy::clamped(&self.store, sandbox.layer()?, self.opts.source_date_epoch)?;
        let short = sandbox.short_id().to_owned();
        drop(sandbox);
        self.out
            .line(&format!("Removing intermediate container {short}"))?;
        self.ran += 1;
        let image = self.derive_keyed(
            Some(&image),
            st.config.clone(),
            Some(layer),
            &created_by,
            &key,
        )?;
        self.out.line(&format!(" ---> {}", image.id.short()))?;
        st.image = Some(image);
        Ok(())
    }

    fn copy_step(
        &mut self,
        st: &mut Stage,
        spec: CopySpec,
        display: &str,
    ) -> Result<(), BuildError> {
        let sources = copy::Sources::gather(self, &spec)?;
        let key = key(&[display, &sources.digest, &config_json(&st.config)]);
        if let Some(hit) = self.cache(st, &key)? {
            st.image = Some(hit);
            return Ok(());
        }
        let layer = copy::make_layer(self, st, &spec, &sources)?;
        self.ran += 1;
        let image = self.derive_keyed(
            st.image.as_ref(),
            st.config.clone(),
            Some(layer),
            display,
            &key,
        )?;
        self.out.line(&format!(" ---> {}", image.id.short()))?;
        st.image = Some(image);
        Ok(())
    }

    fn derive_keyed(
        &self,
        base: Option<&ImageRecord>,
        config: ContainerConfig,
        layer: Option<(rootfs::digest::Digest, u64)>,
        created_by: &str,
        key: &str,
    ) -> Result<ImageRecord, BuildError> {
        let step = rootfs::archive::Step {
            config,
            layer,
            created_by: created_by.to_owned(),
            created: self.now(),
            key: key.to_owned(),
        };
        Ok(rootfs::archive::derive(&self.store, base, &step, &[])?)
    }

    fn derive(
        &self,
        base: Option<&ImageRecord>,
        config: ContainerConfig,
        layer: Option<(rootfs::digest::Digest, u64)>,
        created_by: String,
    ) -> Result<ImageRecord, BuildError> {
        let k = key(&[&created_by, &config_json(&config)]);
        self.derive_keyed(base, config, layer, &created_by, &k)
    }

    /// The images' time: now, or `SOURCE_DATE_EPOCH`.
    fn now(&self) -> String {
        let t = match self.opts.source_date_epoch {
            Some(s) => chrono::DateTime::from_timestamp(s, 0).unwrap_or_default(),
            None => chrono::Utc::now(),
        };
        t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }
}

/// A cache key: the digest of the parts.
pub(super) fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn config_json(c: &ContainerConfig) -> String {
    serde_json::to_string(c).unwrap_or_default()
}

/// `docker.io/library/x:1` as docker prints it (`x:1`).
fn familiar(r: &rootfs::reference::Reference) -> String {
    let tagged = r
        .with_tag(r.tag().unwrap_or("latest"))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| r.to_string());
    tagged
        .strip_prefix("docker.io/library/")
        .or_else(|| tagged.strip_prefix("docker.io/"))
        .unwrap_or(&tagged)
        .to_owned()
}

/// A CMD/ENTRYPOINT/RUN command: exec form as is, shell form through the stage's SHELL.
fn command(c: &Command<'_>, st: &Stage, escape: char) -> Vec<String> {
    match c {
        Command::Exec(argv) => argv.value.iter().map(|s| s.value.to_string()).collect(),
        Command::Shell(text) => {
            let mut argv = st
                .config
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            argv.push(join_lines(text.value, escape));
            argv
        }
        // A form a newer parser knows: nothing to run (an empty command fails clearly).
        _ => Vec::new(),
    }
}

fn healthcheck(
    options: &[Flag<'_>],
    args: &HealthcheckArguments<'_>,
    escape: char,
) -> Result<Healthcheck, BuildError> {
    let mut hc = Healthcheck::default();
    let cmd = match args {
        HealthcheckArguments::None { .. } => {
            hc.test = vec!["NONE".into()];
            return Ok(hc);
        }
        HealthcheckArguments::Cmd { arguments, .. } => arguments,
        _ => return Err(BuildError::invalid("HEALTHCHECK", "want NONE or CMD")),
    };
    for f in options {
        let value = flag_value(f);
        let nanos = || {
            rootfs::duration::parse_nanos(&value)
                .map_err(|e| BuildError::invalid("HEALTHCHECK", e.to_string()))
        };
        match &*f.name.value {
            "interval" => hc.interval = nanos()?,
            "timeout" => hc.timeout = nanos()?,
            "start-period" => hc.start_period = nanos()?,
            "start-interval" => hc.start_interval = nanos()?,
            "retries" => {
                hc.retries = value.parse().map_err(|_| {
                    BuildError::invalid("HEALTHCHECK", format!("bad --retries {value:?}"))
                })?
            }
            other => {
                return Err(BuildError::invalid(
                    "HEALTHCHECK",
                    format!("unknown flag: --{other}"),
                ));
            }
        }
    }
    hc.test = match cmd {
        Command::Exec(argv) => std::iter::once("CMD".to_owned())
            .chain(argv.value.iter().map(|s| s.value.to_string()))
            .collect(),
        Command::Shell(text) => vec!["CMD-SHELL".into(), join_lines(text.value, escape)],
        _ => return Err(BuildError::invalid("HEALTHCHECK", "want a command")),
    };
    Ok(hc)
}

/// A flag's value as written (`--chown=1:2` -> `1:2`; none: empty).
pub(super) fn flag_value(f: &Flag<'_>) -> String {
    f.value
        .as_ref()
        .map(|v| v.value.to_string())
        .unwrap_or_default()
}

/// `80` -> `80/tcp`; `53/udp` stays; a range or junk is refused.
fn expose_key(word: &str) -> Result<String, BuildError> {
    let (port, proto) = word.split_once('/').unwrap_or((word, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let ok = port.parse::<u16>().is_ok_and(|p| p > 0)
        && matches!(proto.as_str(), "tcp" | "udp" | "sctp");
    match ok {
        true => Ok(format!("{port}/{proto}")),
        false => Err(BuildError::invalid(
            "EXPOSE",
            format!("invalid port {word:?}"),
        )),
    }
}

/// `dir` against the working directory `cwd`.
pub(super) fn absolute(cwd: &str, dir: &str) -> String {
    let joined = match dir.starts_with('/') {
        true => dir.to_owned(),
        false => format!("{}/{dir}", cwd.trim_end_matches('/')),
    };
    format!("/{}", super::context::clean(&joined))
}

/// Source text with continuation lines joined (the escape character before a newline
/// removed) and comment lines inside dropped.
pub(super) fn join_lines(text: &str, escape: char) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match line.trim_end().strip_suffix(escape) {
            Some(body) => out.push_str(body),
            None => {
                out.push_str(line.trim_end());
                break;
            }
        }
    }
    out.trim().to_owned()
}

/// Where an instruction starts in the text.
fn keyword_start(i: &Instruction<'_>) -> usize {
    match i {
        Instruction::Add(x) => x.add.span.start,
        Instruction::Arg(x) => x.arg.span.start,
        Instruction::Cmd(x) => x.cmd.span.start,
        Instruction::Copy(x) => x.copy.span.start,
        Instruction::Entrypoint(x) => x.entrypoint.span.start,
        Instruction::Env(x) => x.env.span.start,
        Instruction::Expose(x) => x.expose.span.start,
        Instruction::From(x) => x.from.span.start,
        Instruction::Healthcheck(x) => x.healthcheck.span.start,
        Instruction::Label(x) => x.label.span.start,
        Instruction::Maintainer(x) => x.maintainer.span.start,
        Instruction::Onbuild(x) => x.onbuild.span.start,
        Instruction::Run(x) => x.run.span.start,
        Instruction::Shell(x) => x.shell.span.start,
        Instruction::Stopsignal(x) => x.stopsignal.span.start,
        Instruction::User(x) => x.user.span.start,
        Instruction::Volume(x) => x.volume.span.start,
        Instruction::Workdir(x) => x.workdir.span.start,
        // One a newer parser knows: shown from where the one before it ends.
        _ => 0,
    }
}

/// Pull progress as build output lines.
struct PullLines(Output);

impl rootfs::registry::Progress for PullLines {
    fn start(&self, _id: &str, _total: u64) {}
    fn advance(&self, _id: &str, _bytes: u64) {}
    fn finish(&self, id: &str, status: &str) {
        let _ = self.0.line(&format!("{id}: {status}"));
    }
    fn message(&self, line: &str) {
        let _ = self.0.line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_join_and_comments_go() {
        assert_eq!(
            join_lines(
                "RUN echo a \\\n  b && \\\n# note\n  c\n\n# trailing\n",
                '\\'
            ),
            "RUN echo a   b &&   c"
        );
        assert_eq!(join_lines("CMD x `\n y\n", '`'), "CMD x  y");
    }

    #[test]
    fn workdirs_resolve_against_the_last() {
        assert_eq!(absolute("/", "app"), "/app");
        assert_eq!(absolute("/app", "../srv/./x/"), "/srv/x");
        assert_eq!(absolute("/app", "/abs"), "/abs");
    }

    #[test]
    fn exposed_ports_are_checked() {
        assert_eq!(expose_key("80").unwrap(), "80/tcp");
        assert_eq!(expose_key("53/UDP").unwrap(), "53/udp");
        assert!(expose_key("http").is_err());
        assert!(expose_key("0").is_err());
    }
}
