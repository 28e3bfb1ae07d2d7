//! The CLI's side of the daemon API: `get`, `describe`, `logs`, `events`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::api::{Detail, Item};

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(state_dir: &Path) -> Client {
        Client {
            socket: state_dir.join("berth.sock"),
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

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut bytes = Vec::new();
        self.get(path, |chunk| bytes.extend_from_slice(chunk))
            .await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub async fn items(&self) -> anyhow::Result<Vec<Item>> {
        self.get_json("/v1/containers").await
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

pub fn get(state_dir: &Path, name: Option<&str>, output: &str) -> anyhow::Result<()> {
    let client = Client::new(state_dir);
    let items = tokio()?.block_on(client.items())?;
    let items: Vec<Item> = match name {
        Some(name) => {
            let one: Vec<Item> = items.into_iter().filter(|i| i.name == name).collect();
            if one.is_empty() {
                bail!("no container {name}");
            }
            one
        }
        None => items,
    };
    match output {
        "json" if name.is_some() => println!("{}", serde_json::to_string_pretty(&items[0])?),
        "json" => println!("{}", serde_json::to_string_pretty(&items)?),
        "yaml" if name.is_some() => print!("{}", serde_yaml::to_string(&items[0])?),
        "yaml" => print!("{}", serde_yaml::to_string(&items)?),
        "wide" | "" => {
            let wide = output == "wide";
            let mut rows = vec![
                vec!["NAME", "PHASE", "PID", "RESTARTS", "AGE"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            if wide {
                rows[0].extend(["REBOOTS", "SOURCE", "HASH"].map(String::from));
            }
            rows[0].push("MESSAGE".to_owned());
            for item in &items {
                let mut row = vec![
                    item.name.clone(),
                    item.phase.clone(),
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
                }
                row.push(item.message.clone().unwrap_or_default());
                rows.push(row);
            }
            print_table(&rows);
        }
        other => bail!("unknown output format {other:?}; use wide, json or yaml"),
    }
    Ok(())
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

pub fn describe(state_dir: &Path, name: &str) -> anyhow::Result<()> {
    let detail = tokio()?.block_on(Client::new(state_dir).detail(name))?;
    let item = &detail.item;
    println!("Name:      {}", item.name);
    println!("Phase:     {}", item.phase);
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
    if let Some(spec) = &detail.spec {
        println!("Spec:");
        println!("  Command:        {:?}", spec.command);
        println!("  Restart policy: {:?}", spec.restart_policy);
        println!("  Rootfs:         {:?}", spec.rootfs);
        println!("  Network:        {:?}", spec.network);
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

pub fn logs(state_dir: &Path, name: &str, follow: bool, tail: Option<usize>) -> anyhow::Result<()> {
    let mut path = format!("/v1/containers/{name}/logs?follow={follow}");
    if let Some(n) = tail {
        path.push_str(&format!("&tail={n}"));
    }
    tokio()?.block_on(Client::new(state_dir).stream(&path))
}

pub fn events(state_dir: &Path, follow: bool) -> anyhow::Result<()> {
    tokio()?.block_on(Client::new(state_dir).stream(&format!("/v1/events?follow={follow}")))
}
