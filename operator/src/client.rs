//! The CLI's side of the daemon API: `get`, `describe`, `logs`, `events`. When no
//! daemon answers, they read the state dir instead: containers outlive the daemon.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use berth_runtime::{Origin, Runtime};

use crate::api::{Detail, Item};
use crate::selector::Selector;

pub struct Client {
    socket: PathBuf,
}

/// The error for a socket this user may not use.
fn denied(socket: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "permission denied on {}: run as root or in group berth",
        socket.display()
    )
}

impl Client {
    pub fn new(state_dir: &Path) -> Client {
        Client {
            socket: state_dir.join("berth.sock"),
        }
    }

    /// Whether a daemon accepts connections on the socket. Refused for lack of
    /// permission is neither: it is said as such, with what to do.
    pub(crate) fn answers(&self) -> anyhow::Result<bool> {
        match berth_runtime::SocketPath::new(&self.socket)
            .and_then(|short| std::os::unix::net::UnixStream::connect(short.as_path()))
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(denied(&self.socket)),
            Err(_) => Ok(false),
        }
    }

    /// GET `path`; `on_chunk` sees the body as it streams. Non-2xx is an error
    /// carrying the daemon's message.
    async fn get(&self, path: &str, mut on_chunk: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let socket = berth_runtime::SocketPath::new(&self.socket);
        let stream = match &socket {
            Ok(short) => tokio::net::UnixStream::connect(short.as_path()).await,
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        if let Err(e) = &stream
            && e.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Err(denied(&self.socket));
        }
        let stream = stream.with_context(|| {
            format!(
                "cannot reach the berth daemon at {} (is `berth daemon` running with this --state-dir?)",
                self.socket.display()
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header("host", "berth")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    // `{"error": {"code", "message"}}`; a bare string from older daemons.
                    let error = &v["error"];
                    error["message"]
                        .as_str()
                        .or(error.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{message}");
        }
        while let Some(frame) = body.frame().await {
            if let Some(chunk) = frame?.data_ref() {
                on_chunk(chunk);
            }
        }
        Ok(())
    }

    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        let mut bytes = Vec::new();
        self.get(path, |chunk| bytes.extend_from_slice(chunk))
            .await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub async fn items(&self) -> anyhow::Result<Vec<Item>> {
        self.get_json("/v1/containers").await
    }

    /// With the manifests that select other devices (`NotSelected`).
    pub async fn all_items(&self) -> anyhow::Result<Vec<Item>> {
        self.get_json("/v1/containers?all=true").await
    }

    pub async fn detail(&self, name: &str) -> anyhow::Result<Detail> {
        self.get_json(&format!("/v1/containers/{name}")).await
    }

    pub async fn stream(&self, path: &str) -> anyhow::Result<()> {
        let mut out = std::io::stdout();
        self.get(path, |chunk| {
            let _ = out.write_all(chunk);
            let _ = out.flush();
        })
        .await
    }
}

fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn age(created_at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(created_at);
    match secs {
        _ if created_at == 0 => "-".to_owned(),
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// Says, once, that what follows comes from the disk rather than the daemon.
fn say_offline(runtime: &Runtime) {
    eprintln!(
        "berth: the daemon is not running; showing containers from {}",
        runtime.state_dir().display()
    );
}

/// A container as the disk shows it: its monitor's status merged with no record.
/// A container the daemon made gets no "created by hand" message.
fn disk_item(runtime: &Runtime, name: &str, now: u64) -> Item {
    let status = runtime.status(name).ok().flatten();
    let mut item = Item::merge(name, None, status.as_ref(), now);
    item.created_at = created_at(runtime, name);
    item.add_config(runtime);
    let origin = runtime
        .config(name)
        .ok()
        .and_then(|c| c.header)
        .map(|h| h.origin);
    if origin == Some(Origin::Manifest) {
        item.message = None;
    }
    item
}

/// When a container was made, for one the daemon has no record of (made by hand,
/// or no daemon): when its config was written, which happens only at create.
fn created_at(runtime: &Runtime, name: &str) -> u64 {
    let Ok(dir) = runtime.dir(name) else {
        return 0;
    };
    std::fs::metadata(dir.config())
        .or_else(|_| std::fs::metadata(&dir.path))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Every container: from the daemon if it answers, else from the state dir.
fn items(runtime: &Runtime, all: bool) -> anyhow::Result<Vec<Item>> {
    let client = Client::new(runtime.state_dir());
    let mut items: Vec<Item> = if client.answers()? {
        let tokio = tokio()?;
        if all {
            tokio.block_on(client.all_items())?
        } else {
            tokio.block_on(client.items())?
        }
    } else {
        say_offline(runtime);
        let now = crate::reconcile::now();
        runtime
            .list()?
            .iter()
            .map(|name| disk_item(runtime, name, now))
            .collect()
    };
    for item in items.iter_mut().filter(|i| i.created_at == 0) {
        item.created_at = created_at(runtime, &item.name);
    }
    Ok(items)
}

/// A container's labels, from the config it was created from.
fn labels(runtime: &Runtime, name: &str) -> BTreeMap<String, String> {
    runtime
        .config(name)
        .map(|c| c.container.labels)
        .unwrap_or_default()
}

/// What `berth get` was asked for, besides its output format.
#[derive(Debug, Default)]
pub struct GetOptions<'a> {
    pub name: Option<&'a str>,
    /// A label selector (`-l`).
    pub selector: Option<&'a str>,
    pub show_labels: bool,
    /// Also what selects other devices (`--all`).
    pub all: bool,
}

/// What `-o json` prints: one item, or a `ContainerList` of them.
fn document(name: Option<&str>, items: &[Item]) -> anyhow::Result<serde_json::Value> {
    Ok(match (name, items.first()) {
        (Some(_), Some(item)) => with_times(item)?,
        _ => serde_json::json!({
            "kind": "ContainerList",
            "items": items.iter().map(with_times).collect::<anyhow::Result<Vec<_>>>()?,
        }),
    })
}

/// kubectl's `-o jsonpath=` templates: text, with `{PATH}` replaced by what the
/// RFC 9535 path `$PATH` selects (strings as they are, anything else as JSON,
/// several separated by spaces) and `{"TEXT"}` by the JSON string TEXT (for
/// `{"\n"}`). kubectl's `range`/`end` are not supported.
fn render_jsonpath(template: &str, document: &serde_json::Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            bail!("jsonpath template {template:?}: a '{{' is never closed");
        };
        let expression = rest[open + 1..open + close].trim();
        rest = &rest[open + close + 1..];
        if expression.starts_with('"') {
            let text: String = serde_json::from_str(expression)
                .with_context(|| format!("jsonpath template: {expression} is not a JSON string"))?;
            out.push_str(&text);
            continue;
        }
        let path = if expression.starts_with('$') {
            expression.to_owned()
        } else {
            format!("${expression}")
        };
        let query = serde_json_path::JsonPath::parse(&path)
            .map_err(|e| anyhow::anyhow!("jsonpath {expression:?}: {e}"))?;
        let values: Vec<String> = query
            .query(document)
            .all()
            .into_iter()
            .map(|value| match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&values.join(" "));
    }
    out.push_str(rest);
    Ok(out)
}

pub fn get(runtime: &Runtime, options: &GetOptions<'_>, output: &str) -> anyhow::Result<()> {
    let name = options.name;
    let selector = options
        .selector
        .map(Selector::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let items = items(runtime, options.all)?;
    let items: Vec<Item> = match name {
        Some(name) => {
            let one: Vec<Item> = items.into_iter().filter(|i| i.name == name).collect();
            if one.is_empty() {
                // A manifest for other devices is not a typo: say so.
                let elsewhere = !options.all
                    && self::items(runtime, true)
                        .is_ok_and(|all| all.iter().any(|i| i.name == name));
                if elsewhere {
                    bail!(
                        "{name} is not selected on this device: its manifest's metadata.selector \
                         does not match this device's labels (`berth get --all` lists it)"
                    );
                }
                bail!("no container {name}");
            }
            one
        }
        None => items,
    };
    let items: Vec<(Item, BTreeMap<String, String>)> = items
        .into_iter()
        .map(|item| {
            // A NotSelected item carries its manifest's labels; the others' are
            // in their config.
            let labels = match item.labels.is_empty() {
                true => labels(runtime, &item.name),
                false => item.labels.clone(),
            };
            (item, labels)
        })
        .filter(|(_, labels)| selector.as_ref().is_none_or(|s| s.selects(labels)))
        .collect();
    if name.is_some() && items.is_empty() {
        bail!(
            "container {} does not match the selector",
            name.unwrap_or_default()
        );
    }
    let (items, labels): (Vec<Item>, Vec<BTreeMap<String, String>>) = items.into_iter().unzip();
    match output {
        "name" => {
            for item in &items {
                println!("container/{}", item.name);
            }
        }
        "json" | "yaml" => {
            let document = document(name, &items)?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&document)?);
            } else {
                print!("{}", serde_yaml::to_string(&document)?);
            }
        }
        jsonpath if jsonpath.starts_with("jsonpath=") => {
            let template = &jsonpath["jsonpath=".len()..];
            println!("{}", render_jsonpath(template, &document(name, &items)?)?);
        }
        "wide" | "" => {
            let wide = output == "wide";
            let mut rows = vec![
                vec!["NAME", "PHASE", "PID", "RESTARTS", "AGE"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            if wide {
                rows[0].extend(
                    [
                        "REBOOTS", "SOURCE", "HASH", "IMAGE", "ADDRESS", "PORTS", "REVISION",
                    ]
                    .map(String::from),
                );
            }
            if options.show_labels {
                rows[0].push("LABELS".to_owned());
            }
            rows[0].push("MESSAGE".to_owned());
            for (item, labels) in items.iter().zip(&labels) {
                let mut row = vec![
                    item.name.clone(),
                    crate::container_health::phase_text(&item.phase, item.health.as_ref()),
                    item.pid.map_or("-".to_owned(), |p| p.to_string()),
                    item.restarts.to_string(),
                    age(item.created_at),
                ];
                if wide {
                    row.push(item.reboots.to_string());
                    row.push(item.source.clone().unwrap_or_else(|| "-".to_owned()));
                    row.push(
                        item.spec_hash
                            .as_deref()
                            .map_or("-".to_owned(), |h| h.chars().take(19).collect()),
                    );
                    row.push(
                        item.image
                            .as_deref()
                            .map_or("-".to_owned(), |h| h.chars().take(19).collect()),
                    );
                    row.push(item.address.clone().unwrap_or_else(|| "-".to_owned()));
                    row.push(if item.ports.is_empty() {
                        "-".to_owned()
                    } else {
                        item.ports.join(",")
                    });
                    // A short SHA, as `git log --oneline` shows it.
                    row.push(
                        item.revision
                            .as_ref()
                            .map_or("-".to_owned(), |r| r.commit.chars().take(7).collect()),
                    );
                }
                if options.show_labels {
                    // Before MESSAGE, the one column that may hold spaces.
                    let text: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    row.push(if text.is_empty() {
                        "<none>".to_owned()
                    } else {
                        text.join(",")
                    });
                }
                row.push(item.message.clone().unwrap_or_default());
                rows.push(row);
            }
            print_table(&rows);
        }
        other => bail!(
            "unknown output format {other:?}; use wide, json, yaml, name or jsonpath=TEMPLATE"
        ),
    }
    Ok(())
}

/// An item as `-o json` and `-o yaml` print it: each time in epoch seconds
/// (`createdAt`, a condition's `since`, `lastExit.at`) gets an RFC 3339 twin
/// (`createdTime`, `sinceTime`, `atTime`), for people and for tools that parse dates.
fn with_times(item: &Item) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(item)?;
    let twin = |object: &mut serde_json::Value, secs: &str, time: &str| {
        if let Some(secs) = object[secs].as_u64().filter(|s| *s > 0) {
            object[time] = serde_json::Value::String(rfc3339(secs));
        }
    };
    twin(&mut value, "createdAt", "createdTime");
    if let Some(conditions) = value["conditions"].as_array_mut() {
        for condition in conditions {
            twin(condition, "since", "sinceTime");
        }
    }
    if value["lastExit"].is_object() {
        twin(&mut value["lastExit"], "at", "atTime");
    }
    Ok(value)
}

/// `2026-11-29T09:30:57Z`: seconds since the epoch as a UTC date and time
/// (Howard Hinnant's days-to-civil; a date crate for this alone is not worth it).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let rem = secs % 86_400;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, value) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(value);
            } else {
                line.push_str(&format!("{value:<width$}   ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `describe` from the state dir: no record and no events, which the daemon keeps.
fn disk_detail(runtime: &Runtime, name: &str) -> anyhow::Result<Detail> {
    if !runtime.dir(name)?.path.is_dir() {
        bail!("no container {name}");
    }
    let item = disk_item(runtime, name, crate::reconcile::now());
    let spec = runtime.config(name).ok().map(|c| c.container.spec);
    let usage = runtime
        .status(name)
        .ok()
        .flatten()
        .and_then(|s| s.cgroups)
        .map(|c| c.usage())
        .unwrap_or_default();
    Ok(Detail {
        item,
        spec,
        events: Vec::new(),
        memory_bytes: usage.memory_bytes,
        pids: usage.pids,
        image_rootfs: crate::api::ImageRootfs::of(runtime, name),
        network: crate::api::Network::of(runtime, name),
    })
}

pub fn describe(runtime: &Runtime, name: &str) -> anyhow::Result<()> {
    let client = Client::new(runtime.state_dir());
    let detail = if client.answers()? {
        tokio()?.block_on(client.detail(name))?
    } else {
        say_offline(runtime);
        disk_detail(runtime, name)?
    };
    let item = &detail.item;
    println!("Name:      {}", item.name);
    println!("Phase:     {}", item.phase);
    if let Some(health) = &item.health {
        crate::container_health::describe(health);
    }
    if let Some(message) = &item.message {
        println!("Message:   {message}");
    }
    println!(
        "PID:       {}",
        item.pid.map_or("-".to_owned(), |p| p.to_string())
    );
    println!("Restarts:  {}", item.restarts);
    println!("Reboots:   {}", item.reboots);
    println!(
        "Source:    {}",
        item.source.as_deref().unwrap_or("- (created by hand)")
    );
    println!("Spec hash: {}", item.spec_hash.as_deref().unwrap_or("-"));
    if let Some(revision) = &item.revision {
        println!(
            "Revision:  {} ({})",
            revision.commit,
            rfc3339(u64::try_from(revision.time).unwrap_or(0))
        );
    }
    if let Some(spec) = &detail.spec {
        println!("Spec:");
        println!("  Command:        {:?}", spec.command);
        println!("  Restart policy: {:?}", spec.restart_policy);
        println!("  Rootfs:         {:?}", spec.rootfs);
        // What was made of the image: an overlay, or a copy and why.
        if let Some(layers) = &detail.image_rootfs {
            let why = layers
                .fallback
                .as_ref()
                .map_or(String::new(), |why| format!(" (not an overlay: {why})"));
            println!("  Image layers:   {} of {}{why}", layers.mode, layers.image);
        }
        println!("  Network:        {:?}", spec.network);
        if let Some(network) = &detail.network {
            let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            println!("  Bridge:         {}", or_dash(&network.bridge));
            println!("  Address:        {}", or_dash(&network.address));
            if let Some(address6) = &network.address6 {
                println!("  IPv6 address:   {address6}");
            }
            println!(
                "  Veth:           {}{}",
                network.veth,
                if network.veth_present {
                    ""
                } else {
                    " (absent)"
                }
            );
            if !item.ports.is_empty() {
                println!("  Ports:          {}", item.ports.join(", "));
            }
            for rule in &network.rules {
                println!("  Rule:           {rule}");
            }
        }
        let r = &spec.resources;
        println!(
            "  Limits:         memory {}, pids {}, cpus {}",
            r.memory_bytes
                .map_or("-".to_owned(), |b| format!("{b} bytes")),
            r.pids.map_or("-".to_owned(), |p| p.to_string()),
            r.millicpus
                .map_or("-".to_owned(), |m| format!("{}", m as f64 / 1000.0)),
        );
    }
    if detail.memory_bytes.is_some() || detail.pids.is_some() {
        println!(
            "Usage:     memory {} bytes, {} processes",
            detail.memory_bytes.unwrap_or(0),
            detail.pids.unwrap_or(0)
        );
    }
    println!("Conditions:");
    if item.conditions.is_empty() {
        println!("  none");
    }
    for condition in &item.conditions {
        println!("  {}: {}", condition.kind, condition.message);
    }
    println!("Events:");
    for event in &detail.events {
        let count = if event.count > 1 {
            format!(" (x{})", event.count)
        } else {
            String::new()
        };
        println!(
            "  {:<8} {:<14} {}{count}",
            age(event.last_seen),
            event.reason,
            event.message
        );
    }
    Ok(())
}

pub fn logs(
    runtime: &Runtime,
    name: &str,
    follow: bool,
    tail: Option<usize>,
) -> anyhow::Result<()> {
    let client = Client::new(runtime.state_dir());
    if !client.answers()? {
        say_offline(runtime);
        return disk_logs(runtime, name, follow, tail);
    }
    let mut path = format!("/v1/containers/{name}/logs?follow={follow}");
    if let Some(n) = tail {
        path.push_str(&format!("&tail={n}"));
    }
    tokio()?.block_on(client.stream(&path))
}

/// `logs` from `console.log` itself, as the daemon serves it: the last `tail`
/// lines, then (following) what is appended, from the start again after a rotation.
fn disk_logs(
    runtime: &Runtime,
    name: &str,
    follow: bool,
    tail: Option<usize>,
) -> anyhow::Result<()> {
    let dir = runtime.dir(name)?;
    if !dir.path.is_dir() {
        bail!("no container {name}");
    }
    let path = dir.console_log();
    let text = std::fs::read(&path).unwrap_or_default();
    let start = tail.map_or(0, |n| crate::api::tail_start(&text, n));
    let mut out = std::io::stdout();
    out.write_all(&text[start..])?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut offset = text.len();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.len() < offset {
            offset = 0;
        }
        out.write_all(&bytes[offset..])?;
        out.flush()?;
        offset = bytes.len();
    }
}

pub fn events(state_dir: &Path, follow: bool) -> anyhow::Result<()> {
    let client = Client::new(state_dir);
    if client.answers()? {
        return tokio()?.block_on(client.stream(&format!("/v1/events?follow={follow}")));
    }
    stored_events(state_dir)?;
    if follow {
        // Holding the database to poll it would keep a starting daemon out.
        bail!("the daemon is not running: printed the events stored so far; -f needs the daemon");
    }
    Ok(())
}

/// The events in the database, read directly: possible only while nobody (no
/// daemon) holds its lock. Each reason it is not is one line.
fn stored_events(state_dir: &Path) -> anyhow::Result<()> {
    let db = state_dir.join("state.db");
    if !db.exists() {
        bail!(
            "the daemon is not running and there are no events: no database at {}",
            db.display()
        );
    }
    let store = berth_state::Store::open(state_dir).map_err(|e| {
        anyhow::anyhow!(
            "the daemon is not running, and its database {} cannot be read: {}",
            db.display(),
            e.to_string().lines().next().unwrap_or_default()
        )
    })?;
    eprintln!(
        "berth: the daemon is not running; showing the events stored in {}",
        db.display()
    );
    let mut out = std::io::stdout().lock();
    for event in store.events(None, 1000)? {
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_templates_select_fields_as_kubectl_does() {
        let list = serde_json::json!({"kind": "ContainerList", "items": [
            {"name": "web", "phase": "Running", "pid": 42},
            {"name": "db", "phase": "Stopped", "pid": null},
        ]});
        assert_eq!(
            render_jsonpath("{.items[*].name}", &list).unwrap(),
            "web db"
        );
        assert_eq!(
            render_jsonpath("first: {.items[0].name}={$.items[0].pid}{\"\\n\"}", &list).unwrap(),
            "first: web=42\n"
        );
        assert_eq!(
            render_jsonpath("{.items[?@.phase=='Stopped'].name}", &list).unwrap(),
            "db"
        );
        assert!(render_jsonpath("{.items[", &list).is_err());
        assert!(render_jsonpath("{.items[*.name}", &list).is_err());
    }

    #[test]
    fn epoch_seconds_become_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_944_657), "2026-11-29T09:30:57Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
