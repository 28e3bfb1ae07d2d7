//! The daemon's HTTP/JSON API on `<state-dir>/berth.sock`, Docker/LXD-style so
//! that `curl --unix-socket /var/lib/berth/berth.sock http://berth/v1/containers`
//! works. Also the types the CLI reads back.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_manifests::RunState;
use berth_runtime::{Phase as RuntimePhase, Status};
use berth_state::{Condition, Event, Phase, Record};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reconcile::Context;

/// One container as `berth get` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub name: String,
    pub phase: String,
    /// Host pid of the container's init.
    pub pid: Option<i32>,
    pub restarts: u32,
    pub reboots: u32,
    pub message: Option<String>,
    /// `FILE#DOCUMENT`.
    pub source: Option<String>,
    pub spec_hash: Option<String>,
    pub created_at: u64,
    pub conditions: Vec<Condition>,
    pub last_exit: Option<serde_json::Value>,
    /// For a container of a registry image: the digest it was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// For a bridged container: the address it holds on the bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// For a bridged container: its published ports, `[HOSTIP:]HOST->PORT/PROTO`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Git source: the commit its spec came from (Flux's lastAppliedRevision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<berth_state::Revision>,
    /// For a `NotSelected` item, which has no config to read them from: its
    /// manifest's `metadata.labels` (for `get -l` and `--show-labels`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// With `spec.healthcheck`, while it runs: what its checks say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::container_health::ItemHealth>,
}

/// `berth describe`: the item, its spec, recent events and cgroup usage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub item: Item,
    /// The spec as in a manifest's `spec:` (see the manifest reference).
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub spec: Option<berth_manifests::ContainerSpec>,
    pub events: Vec<Event>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// How the rootfs of a container made from an image was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_rootfs: Option<ImageRootfs>,
    /// For a bridged container: its bridge, address, veth and nftables rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// A bridged container's network as it stands.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `None` until the state dir's first bridged start records it.
    pub bridge: Option<String>,
    /// `None` before its first start; then its own until it is destroyed.
    pub address: Option<String>,
    /// With `--subnet6`: its IPv6 address, which follows `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    /// The host side of its veth pair, and whether that link exists now.
    pub veth: String,
    pub veth_present: bool,
    /// berth's nftables rules for its published ports, `CHAIN: COMMENT`.
    pub rules: Vec<String>,
}

impl Network {
    /// The container's, if it is bridged (a netlink query and an `nft` run).
    pub fn of(runtime: &berth_runtime::Runtime, name: &str) -> Option<Network> {
        let config = runtime.config(name).ok()?;
        let info = runtime.network(&config, true).ok()??;
        Some(Network {
            bridge: info.bridge,
            address: info.address.map(|a| a.to_string()),
            address6: info.address6.map(|a| a.to_string()),
            veth: info.veth,
            veth_present: info.veth_present,
            rules: info.rules,
        })
    }
}

/// From config.json's `layers`: the image's digest, `overlay`, `idmappedOverlay`
/// or `copy`, and why the layers were copied rather than overlaid.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRootfs {
    pub image: String,
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl ImageRootfs {
    /// The container's, if its rootfs was made from an image's layers.
    pub fn of(runtime: &berth_runtime::Runtime, name: &str) -> Option<ImageRootfs> {
        let layers = runtime.config(name).ok()?.layers?;
        let mode = match layers.mode {
            berth_runtime::RootfsMode::Overlay => "overlay",
            berth_runtime::RootfsMode::IdmappedOverlay => "idmappedOverlay",
            berth_runtime::RootfsMode::Copy => "copy",
        };
        Some(ImageRootfs {
            image: layers.image,
            mode: mode.to_owned(),
            fallback: layers.fallback,
        })
    }
}

impl Item {
    /// The one reading of a container, for `get`, `describe` and the API: what the
    /// daemon knows (its record; none for a container made by hand) merged with
    /// what its monitor knows (its status: pid, reboots, exits, the spec it runs).
    pub fn merge(name: &str, record: Option<&Record>, status: Option<&Status>, now: u64) -> Item {
        let live = status.filter(|s| {
            matches!(
                s.phase,
                RuntimePhase::Starting
                    | RuntimePhase::Running
                    | RuntimePhase::Stopping
                    | RuntimePhase::Orphaned
            )
        });
        let phase = match (record, status) {
            // The monitor's word beats the daemon's last one: it is gone.
            (_, Some(s)) if s.phase == RuntimePhase::Orphaned => "Orphaned".to_owned(),
            (Some(r), _) => r.phase.to_string(),
            (None, Some(s)) => format!("{:?}", s.phase),
            (None, None) => "Created".to_owned(),
        };
        let message = match record {
            Some(r) => match (r.phase, r.backoff_until, r.backoff_delay_secs) {
                (Phase::CrashLoopBackOff, Some(until), Some(delay)) => Some(format!(
                    "back-off {delay}s, restarting in {}s: {}",
                    until.saturating_sub(now),
                    r.message.as_deref().unwrap_or_default()
                )),
                _ => r
                    .message
                    .clone()
                    .or_else(|| r.conditions.first().map(|c| c.message.clone())),
            },
            None => Some("created by hand (not managed)".to_owned()),
        };
        let desired = record.and_then(|r| r.desired.as_ref());
        Item {
            name: name.to_owned(),
            phase,
            pid: live.and_then(|s| s.init_pid),
            restarts: record.map_or(0, |r| r.restarts),
            reboots: status.map_or(0, |s| s.reboots),
            message,
            source: desired.map(|c| format!("{}#{}", c.source.file.display(), c.source.document)),
            spec_hash: status
                .map(|s| s.hash.clone())
                .or_else(|| desired.map(|c| c.hash.clone())),
            created_at: record.map_or(0, |r| r.created_at),
            conditions: crate::container_health::with_condition(
                record.map(|r| r.conditions.clone()).unwrap_or_default(),
                live,
            ),
            last_exit: status
                .and_then(|s| s.last_exit.as_ref())
                .and_then(|e| serde_json::to_value(e).ok()),
            image: None,
            address: None,
            ports: Vec::new(),
            revision: record.and_then(|r| r.revision.clone()),
            labels: std::collections::BTreeMap::new(),
            health: live.and_then(crate::container_health::ItemHealth::of),
        }
    }

    /// What the container's config adds: the image it was made from and, for a
    /// bridged container, its address and published ports.
    pub fn add_config(&mut self, runtime: &berth_runtime::Runtime) {
        let Ok(config) = runtime.config(&self.name) else {
            return;
        };
        if let Ok(Some(network)) = runtime.network(&config, false) {
            self.address = network.address.map(|a| a.to_string());
            self.ports = config.container.spec.ports.iter().map(port_text).collect();
        }
        self.image = config.layers.map(|l| l.image);
    }
}

/// Docker's way: `8080->80/tcp`, or `127.0.0.1:8080->80/tcp` on one address.
fn port_text(port: &berth_manifests::PortMapping) -> String {
    let host_ip = if port.host_ip.is_unspecified() {
        String::new()
    } else {
        format!("{}:", port.host_ip)
    };
    let protocol = match port.protocol {
        berth_manifests::Protocol::Tcp => "tcp",
        berth_manifests::Protocol::Udp => "udp",
    };
    format!("{host_ip}{}->{}/{protocol}", port.host, port.container)
}

/// Every error the API answers, as `{"error": {"code": "...", "message": "..."}}`
/// with its HTTP status; the code names the status so that scripts need not
/// parse messages.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl ApiError {
    fn code(&self) -> &'static str {
        match self.0 {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
            _ => "InternalError",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.1,
            },
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<berth_state::Error> for ApiError {
    fn from(e: berth_state::Error) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/v1/containers", get(list))
        .route("/v1/containers/{name}", get(describe))
        .route("/v1/containers/{name}/logs", get(logs))
        .route("/v1/containers/{name}/reboot", post(reboot))
        .route("/v1/containers/{name}/start", post(start))
        .route("/v1/containers/{name}/stop", post(stop))
        .route("/v1/containers/{name}/restart", post(restart))
        .route("/v1/events", get(events))
        .route("/v1/version", get(version))
        .route("/v1/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/status", get(daemon_status))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ctx)
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version: String,
    /// The commit built (short), as build.rs found it; None when the build had
    /// no git repository (a source tarball).
    pub git_commit: Option<String>,
    pub api_version: String,
}

async fn version() -> Json<Version> {
    Json(version_now())
}

pub fn version_now() -> Version {
    Version {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: Some(env!("BERTH_GIT_COMMIT"))
            .filter(|commit| *commit != "unknown")
            .map(str::to_owned),
        api_version: "v1".to_owned(),
    }
}

/// `GET /v1/status`: the daemon's own health (status.rs).
async fn daemon_status(
    State(ctx): State<Context>,
) -> Result<Json<crate::status::DaemonStatus>, ApiError> {
    let status = tokio::task::spawn_blocking(move || crate::status::collect(&ctx))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(status))
}

/// `GET /v1/healthz`: answered as long as the daemon serves its socket.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The body of every error answer.
#[derive(Serialize, JsonSchema)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, JsonSchema)]
struct ErrorDetail {
    /// `BadRequest`, `NotFound`, `MethodNotAllowed`, `Conflict`, `PayloadTooLarge`
    /// or `InternalError`.
    code: String,
    message: String,
}

/// `GET /v1/openapi.json`: the routes are listed here by hand (`router` is the
/// other place that names them; the e2e test asks every route listed), the
/// schemas are generated from the types the handlers answer.
async fn openapi() -> Json<serde_json::Value> {
    Json(openapi_document())
}

fn openapi_document() -> serde_json::Value {
    use serde_json::json;
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let items = generator.subschema_for::<Vec<Item>>();
    let detail = generator.subschema_for::<Detail>();
    let version = generator.subschema_for::<Version>();
    let daemon_status = generator.subschema_for::<crate::status::DaemonStatus>();
    let error = generator.subschema_for::<ErrorBody>();
    let json_answer = |description: &str, schema: &schemars::Schema| {
        json!({ "200": { "description": description,
            "content": { "application/json": { "schema": schema } } } })
    };
    let errors = json!({ "default": { "description": "an error",
        "content": { "application/json": { "schema": error } } } });
    let with_errors = |mut ok: serde_json::Value| {
        if let (Some(ok), Some(errors)) = (ok.as_object_mut(), errors.as_object()) {
            ok.extend(errors.clone());
        }
        ok
    };
    let name = json!({ "name": "name", "in": "path", "required": true,
        "schema": { "type": "string" } });
    let selector = json!({ "name": "labelSelector", "in": "query",
        "description": "only containers whose labels match, e.g. app=web,tier!=db",
        "schema": { "type": "string" } });
    let all = json!({ "name": "all", "in": "query",
        "description": "also the manifests whose metadata.selector does not select this device (phase NotSelected)",
        "schema": { "type": "boolean" } });
    let follow = json!({ "name": "follow", "in": "query", "schema": { "type": "boolean" } });
    let tail = json!({ "name": "tail", "in": "query",
        "schema": { "type": "integer", "minimum": 0 } });
    let text = |content_type: &str, description: &str| {
        with_errors(json!({ "200": { "description": description,
            "content": { content_type: { "schema": { "type": "string" } } } } }))
    };
    let action = |summary: &str| {
        json!({ "post": { "summary": summary, "parameters": [name],
            "responses": with_errors(json!({ "200": { "description": "done",
                "content": { "application/json": { "schema": { "type": "object" } } } } })) } })
    };
    json!({
        "openapi": "3.0.3",
        "info": { "title": "berth daemon API", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/v1/containers": { "get": { "summary": "every container",
                "parameters": [selector, all],
                "responses": with_errors(json_answer("the containers", &items)) } },
            "/v1/containers/{name}": { "get": { "summary": "one container in detail",
                "parameters": [name], "responses": with_errors(json_answer("the container", &detail)) } },
            "/v1/containers/{name}/logs": { "get": { "summary": "the console output",
                "parameters": [name, follow, tail],
                "responses": text(LOG_TYPE, "the output, streamed with follow=true") } },
            "/v1/containers/{name}/reboot": action("restart init in place through its monitor"),
            "/v1/containers/{name}/start": action("start a stopped container"),
            "/v1/containers/{name}/stop": action("stop a running container"),
            "/v1/containers/{name}/restart": action("restart a running container in place, or start a stopped one"),
            "/v1/events": { "get": { "summary": "the daemon's events, one JSON object a line",
                "parameters": [follow], "responses": text(EVENT_TYPE, "events, streamed with follow=true") } },
            "/v1/version": { "get": { "summary": "berth's version",
                "responses": with_errors(json_answer("the version", &version)) } },
            "/v1/status": { "get": { "summary": "the daemon's version, uptime, source, last sync and counts by phase",
                "responses": with_errors(json_answer("the daemon's status", &daemon_status)) } },
            "/v1/healthz": { "get": { "summary": "ok while the daemon serves",
                "responses": with_errors(json!({ "200": { "description": "serving" } })) } },
            "/v1/openapi.json": { "get": { "summary": "this document",
                "responses": with_errors(json!({ "200": { "description": "OpenAPI 3" } })) } },
        },
        "components": { "schemas": generator.take_definitions(true) },
    })
}

/// A name the runtime refuses is the client's mistake (400), not an absent container.
fn check_name(ctx: &Context, name: &str) -> Result<(), ApiError> {
    ctx.runtime
        .dir(name)
        .map(|_| ())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// How long a client may take to send a request's headers before its
/// connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. At the cap a new client does not queue behind
/// idle ones: the oldest connection with no request in progress (a stalled
/// header, an unused keep-alive) is closed to make room for it, as nginx does
/// when its connections run out; only when every one is busy does it wait.
/// Each holds one fd and at most `MAX_HEAD_BYTES` of buffer.
pub const MAX_CONNECTIONS: usize = 256;
/// The most a request's line and headers may take (hyper's buffer; hyper's
/// own default is ~400 KiB): berth's requests take a few hundred bytes, a
/// label selector a few KiB. Beyond it: 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most headers a request may have (hyper's default 100). Beyond: 431.
pub const MAX_HEADERS: usize = 64;
/// No route takes a body: one declared longer than this is refused with 413
/// before any handler runs (a body is never read into memory either way).
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// How long open connections (a `logs -f`, say) may go on after the stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serve `router` on `listener` until `stop` turns true: at most
/// `MAX_CONNECTIONS` at once (the oldest idle one closed for a newcomer), each
/// closed if its headers take longer than `HEADER_READ_TIMEOUT`, with heads of
/// at most `MAX_HEAD_BYTES` and `MAX_HEADERS` and no body over
/// `MAX_BODY_BYTES` (axum::serve has none of these).
pub async fn serve(
    listener: impl Accept,
    router: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    // Every open connection, oldest first: its requests in progress, and the
    // sender that closes it to make room.
    let mut open: std::collections::VecDeque<(Arc<AtomicUsize>, tokio::sync::oneshot::Sender<()>)> =
        std::collections::VecDeque::new();
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    loop {
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of fds, most likely: let connections finish before retrying.
                    tracing::warn!("cannot accept an API connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(stop.clone()) => break,
        };
        open.retain(|(_, close)| !close.is_closed());
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => break,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let idle = open
                    .iter()
                    .position(|(busy, _)| busy.load(std::sync::atomic::Ordering::Acquire) == 0);
                if let Some((_, close)) = idle.and_then(|at| open.remove(at)) {
                    let _ = close.send(());
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = stopped(stop.clone()) => break,
                }
            }
        };
        let busy = Arc::new(AtomicUsize::new(0));
        let (close, closed) = tokio::sync::oneshot::channel();
        open.push_back((Arc::clone(&busy), close));
        let service = counted_service(router.clone(), busy);
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Closed to make room for a newcomer: dropped, so closed.
                Ok(()) = closed => {}
                () = stopped(stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
        });
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.join_all()).await;
}

/// One request in progress on a connection, from its head to the end of its
/// answer's body (a followed log stays busy): a busy connection is never
/// closed to make room.
struct Busy(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn hold(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Busy {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(std::sync::Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// `router` as one connection's hyper service: its requests counted in `busy`,
/// and a declared body over `MAX_BODY_BYTES` refused with 413.
fn counted_service(
    router: Router,
    busy: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Send
+ 'static {
    use http_body_util::BodyExt;
    let inner = hyper_util::service::TowerToHyperService::new(router);
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let held = Busy::hold(&busy);
        let declared = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let answer = match declared {
            Some(length) if length > MAX_BODY_BYTES => Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a request body of {length} bytes: no route takes one, and at most \
                     {MAX_BODY_BYTES} bytes are accepted"
                ),
            )),
            _ => Ok(hyper::service::Service::call(&inner, request)),
        };
        async move {
            let response = match answer {
                Ok(answer) => answer.await?,
                Err(refused) => refused.into_response(),
            };
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _busy = &held;
                    frame
                }))
            }))
        }
    })
}

/// A listener [`serve`] takes connections from: the API's Unix socket, the
/// metrics' TCP port.
pub trait Accept: Send + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Bind the socket: mode 0660, group `berth` where that group exists.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let short = berth_runtime::SocketPath::new(path)?;
    if std::os::unix::net::UnixStream::connect(short.as_path()).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("another daemon serves {}", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(short.as_path())?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("berth") {
        nix::unistd::chown(path, None, Some(group.gid)).map_err(std::io::Error::from)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

pub(crate) fn all_items(ctx: &Context) -> Result<Vec<Item>, ApiError> {
    let mut items = merged_items(ctx)?;
    for item in &mut items {
        item.add_config(&ctx.runtime);
    }
    Ok(items)
}

/// Every container the daemon knows of or finds in the state dir, its record
/// merged with its monitor's status (what decides the phase), without what its
/// config adds. Asks every monitor: call it off the async threads.
pub(crate) fn merged_items(ctx: &Context) -> Result<Vec<Item>, berth_state::Error> {
    let records = ctx.store.list()?;
    let mut names: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
    // Containers made by hand are shown too, from their status alone.
    names.extend(ctx.runtime.list().unwrap_or_default());
    names.sort();
    names.dedup();
    let now = crate::reconcile::now();
    Ok(names
        .iter()
        .map(|name| {
            let record = records.iter().find(|r| &r.name == name);
            let status = ctx.runtime.status(name).ok().flatten();
            Item::merge(name, record, status.as_ref(), now)
        })
        .collect())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    /// Kubernetes' equality-based syntax: `app=web,tier!=db`.
    label_selector: Option<String>,
    /// Also the manifests whose `metadata.selector` does not select this device.
    #[serde(default)]
    all: bool,
}

/// `NotSelected` items: what this device's manifests define for other devices,
/// unless a container of that name is still here (being removed).
fn not_selected_items(ctx: &Context, items: &mut Vec<Item>) {
    let Ok(set) = ctx.desired.lock() else { return };
    for (name, desired) in set.not_selected() {
        if items.iter().any(|item| &item.name == name) {
            continue;
        }
        let c = &desired.container;
        items.push(Item {
            name: name.clone(),
            phase: "NotSelected".to_owned(),
            pid: None,
            restarts: 0,
            reboots: 0,
            message: Some(desired.problems.first().cloned().unwrap_or_else(|| {
                "metadata.selector does not select this device's labels".to_owned()
            })),
            source: Some(format!("{}#{}", c.source.file.display(), c.source.document)),
            spec_hash: Some(c.hash.clone()),
            created_at: 0,
            conditions: Vec::new(),
            last_exit: None,
            image: None,
            address: None,
            ports: Vec::new(),
            // The commit this definition was read from (Git source).
            revision: set.revision().cloned(),
            labels: c.labels.clone(),
            health: None,
        });
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
}

async fn list(
    State(ctx): State<Context>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Item>>, ApiError> {
    let Query(q) = query?;
    let selector = q
        .label_selector
        .as_deref()
        .map(crate::selector::Selector::parse)
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let mut items = all_items(&ctx)?;
    if q.all {
        not_selected_items(&ctx, &mut items);
    }
    let Some(selector) = selector else {
        return Ok(Json(items));
    };
    // The labels of the manifest, else of the config it was created from.
    let labels = |name: &str| {
        crate::reconcile::desired_container(&ctx, name)
            .map(|c| c.labels)
            .or_else(|| {
                let set = ctx.desired.lock().ok()?;
                set.not_selected()
                    .get(name)
                    .map(|d| d.container.labels.clone())
            })
            .or_else(|| ctx.runtime.config(name).ok().map(|c| c.container.labels))
            .unwrap_or_default()
    };
    Ok(Json(
        items
            .into_iter()
            .filter(|item| selector.selects(&labels(&item.name)))
            .collect(),
    ))
}

async fn describe(
    State(ctx): State<Context>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Detail>, ApiError> {
    let UrlPath(name) = name?;
    check_name(&ctx, &name)?;
    let item = all_items(&ctx)?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no container {name}")))?;
    let spec = crate::reconcile::desired_container(&ctx, &name)
        .map(|c| c.spec)
        .or_else(|| ctx.runtime.config(&name).ok().map(|c| c.container.spec));
    let events = ctx.store.events(Some(&name), 20)?;
    let status = ctx.runtime.status(&name).ok().flatten();
    let usage = status
        .and_then(|s| s.cgroups)
        .map(|c| c.usage())
        .unwrap_or_default();
    Ok(Json(Detail {
        item,
        spec,
        events,
        memory_bytes: usage.memory_bytes,
        pids: usage.pids,
        image_rootfs: ImageRootfs::of(&ctx.runtime, &name),
        network: Network::of(&ctx.runtime, &name),
    }))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
}

async fn logs(
    State(ctx): State<Context>,
    name: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (UrlPath(name), Query(q)) = (name?, query?);
    let dir = ctx
        .runtime
        .dir(&name)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !dir.path.is_dir() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no container {name}"),
        ));
    }
    let path = dir.console_log();
    let text = tokio::fs::read(&path).await.unwrap_or_default();
    let start = match q.tail {
        Some(n) => tail_start(&text, n),
        None => 0,
    };
    let first = Bytes::copy_from_slice(&text[start..]);
    let offset = text.len() as u64;
    if !q.follow {
        return Ok(stream_response(LOG_TYPE, Body::from(first)));
    }
    // Follow: poll for growth; a rotation (smaller file) starts from its beginning.
    let stream = futures::stream::unfold(
        (Some(first), offset, path),
        |(pending, mut offset, path)| async move {
            if let Some(chunk) = pending {
                return Some((Ok::<_, std::io::Error>(chunk), (None, offset, path)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(bytes) = tokio::fs::read(&path).await else {
                    continue;
                };
                let len = bytes.len() as u64;
                if len < offset {
                    offset = 0;
                }
                if len > offset {
                    let chunk =
                        Bytes::copy_from_slice(&bytes[usize::try_from(offset).unwrap_or(0)..]);
                    return Some((Ok(chunk), (None, len, path)));
                }
            }
        },
    );
    Ok(stream_response(LOG_TYPE, Body::from_stream(stream)))
}

/// A container's console output, as `docker logs` gives it.
const LOG_TYPE: &str = "text/plain; charset=utf-8";
/// One JSON event a line.
const EVENT_TYPE: &str = "application/x-ndjson";

fn stream_response(content_type: &'static str, body: Body) -> Response {
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Where the last `n` lines of `text` begin.
pub fn tail_start(text: &[u8], n: usize) -> usize {
    if n == 0 {
        return text.len();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    #[serde(default)]
    follow: bool,
}

async fn events(
    State(ctx): State<Context>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let existing = ctx.store.events(None, 1000)?;
    let last = existing.last().map_or(0, |e| e.seq);
    let mut text = String::new();
    for event in &existing {
        text.push_str(&serde_json::to_string(event).unwrap_or_default());
        text.push('\n');
    }
    if !q.follow {
        return Ok(stream_response(EVENT_TYPE, Body::from(text)));
    }
    let store = ctx.store.clone();
    let stream = futures::stream::unfold(
        (Some(text), last, store),
        |(pending, last, store)| async move {
            if let Some(text) = pending {
                return Some((
                    Ok::<_, std::io::Error>(Bytes::from(text)),
                    (None, last, store),
                ));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let newer = store.events_since(last).unwrap_or_default();
                if let Some(latest) = newer.last().map(|e| e.seq) {
                    let mut text = String::new();
                    for event in &newer {
                        text.push_str(&serde_json::to_string(event).unwrap_or_default());
                        text.push('\n');
                    }
                    return Some((Ok(Bytes::from(text)), (None, latest, store)));
                }
            }
        },
    );
    Ok(stream_response(EVENT_TYPE, Body::from_stream(stream)))
}

async fn reboot(
    State(ctx): State<Context>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let UrlPath(name) = name?;
    let runtime = ctx.runtime.clone();
    let n = name.clone();
    let result = tokio::task::spawn_blocking(move || runtime.reboot(&n))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok(()) => {
            ctx.event(&name, "Rebooting", "reboot requested through the API");
            Ok(Json(serde_json::json!({ "rebooting": name })))
        }
        Err(e) => Err(ApiError(reboot_status(&e), e.to_string())),
    }
}

/// What a start, stop or restart through the API does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Restart,
}

/// Refuse an action its manifest would undo at once: a stop of a container
/// whose manifest says `state: Running`, a start or restart of one whose
/// manifest says `state: Stopped`. The manifest is the truth; the API never
/// fights the reconciler. Containers made by hand have no manifest here.
fn against_manifest(ctx: &Context, name: &str, action: Action) -> Result<(), ApiError> {
    let Some(desired) = crate::reconcile::desired_container(ctx, name) else {
        return Ok(());
    };
    let (says, wanted) = match (desired.state, action) {
        (RunState::Running, Action::Stop) => ("Running", "Stopped"),
        (RunState::Stopped, Action::Start | Action::Restart) => ("Stopped", "Running"),
        _ => return Ok(()),
    };
    Err(ApiError(
        StatusCode::CONFLICT,
        format!(
            "container {name}: its manifest says state: {says}; set state: {wanted} in {}",
            desired.source.file.display()
        ),
    ))
}

async fn start(
    State(ctx): State<Context>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let UrlPath(name) = name?;
    act(&ctx, &name, Action::Start).await
}

async fn stop(
    State(ctx): State<Context>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let UrlPath(name) = name?;
    act(&ctx, &name, Action::Stop).await
}

async fn restart(
    State(ctx): State<Context>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let UrlPath(name) = name?;
    act(&ctx, &name, Action::Restart).await
}

/// Start, stop or restart the live container through the runtime, as `reboot`
/// does. A restart of a running container restarts it in place through its
/// monitor (as a reboot: the daemon's watch on the monitor stays); a restart of
/// a stopped one starts it.
async fn act(
    ctx: &Context,
    name: &str,
    action: Action,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name(ctx, name)?;
    if !ctx.runtime.dir(name).is_ok_and(|d| d.path.is_dir()) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no container {name}"),
        ));
    }
    against_manifest(ctx, name, action)?;
    let runtime = ctx.runtime.clone();
    let n = name.to_owned();
    let done =
        tokio::task::spawn_blocking(move || -> Result<serde_json::Value, berth_runtime::Error> {
            match action {
                Action::Stop => {
                    let status = runtime.stop(&n, None)?;
                    Ok(serde_json::json!({ "stopped": n, "wasRunning": status.is_some() }))
                }
                Action::Restart => match runtime.reboot(&n) {
                    Ok(()) => Ok(serde_json::json!({ "restarted": n })),
                    Err(berth_runtime::Error::NotRunning(_)) => {
                        let pid = runtime.start(&n)?;
                        Ok(serde_json::json!({ "started": n, "pid": pid }))
                    }
                    Err(e) => Err(e),
                },
                Action::Start => {
                    let pid = runtime.start(&n)?;
                    Ok(serde_json::json!({ "started": n, "pid": pid }))
                }
            }
        })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (reason, verb) = match action {
        Action::Start => ("Started", "start"),
        Action::Stop => ("Stopped", "stop"),
        Action::Restart => ("Restarted", "restart"),
    };
    match done {
        Ok(answer) => {
            ctx.event(name, reason, &format!("{verb} requested through the API"));
            Ok(Json(answer))
        }
        Err(berth_runtime::Error::Running(_)) => Err(ApiError(
            StatusCode::CONFLICT,
            format!("container {name} is already running"),
        )),
        Err(e) => Err(ApiError(reboot_status(&e), e.to_string())),
    }
}

/// The client's mistakes are 4xx; only the daemon's own failures are 500.
fn reboot_status(error: &berth_runtime::Error) -> StatusCode {
    match error {
        berth_runtime::Error::BadName(..) => StatusCode::BAD_REQUEST,
        berth_runtime::Error::NotFound(_) => StatusCode::NOT_FOUND,
        berth_runtime::Error::NotRunning(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: RuntimePhase, pid: Option<i32>) -> Status {
        Status {
            phase,
            monitor_pid: None,
            init_pid: pid,
            init_start_time: None,
            started_at: None,
            reboots: 2,
            last_exit: None,
            error: None,
            hash: "sha256:run".to_owned(),
            cgroups: None,
            health: None,
        }
    }

    #[test]
    fn the_merge_takes_pids_from_the_monitor_and_the_phase_from_the_daemon_unless_orphaned() {
        let mut record = Record::new("web");
        record.phase = Phase::Running;
        let running = status(RuntimePhase::Running, Some(42));
        let item = Item::merge("web", Some(&record), Some(&running), 0);
        assert_eq!(
            (item.phase.as_str(), item.pid, item.reboots),
            ("Running", Some(42), 2)
        );
        assert_eq!(item.spec_hash.as_deref(), Some("sha256:run"));
        let orphan = status(RuntimePhase::Orphaned, Some(42));
        let item = Item::merge("web", Some(&record), Some(&orphan), 0);
        assert_eq!((item.phase.as_str(), item.pid), ("Orphaned", Some(42)));
        let exited = status(RuntimePhase::Stopped, Some(42));
        record.phase = Phase::CrashLoopBackOff;
        record.message = Some("exited with code 1".to_owned());
        record.backoff_until = Some(100);
        record.backoff_delay_secs = Some(8);
        let item = Item::merge("web", Some(&record), Some(&exited), 95);
        assert_eq!(item.pid, None);
        assert_eq!(
            item.message.as_deref(),
            Some("back-off 8s, restarting in 5s: exited with code 1")
        );
        let by_hand = Item::merge("web", None, Some(&exited), 0);
        assert_eq!(by_hand.phase, "Stopped");
    }

    #[test]
    fn tail_finds_the_last_lines() {
        let text = b"a\nb\nc\n";
        assert_eq!(&text[tail_start(text, 2)..], b"b\nc\n");
        assert_eq!(&text[tail_start(text, 5)..], b"a\nb\nc\n");
        assert_eq!(&text[tail_start(text, 0)..], b"");
        assert_eq!(&b"x"[tail_start(b"x", 1)..], b"x");
    }
}

#[cfg(test)]
mod serve_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// Reads until `want` has been seen or the stream ends; what was read.
    async fn read_until(stream: &mut UnixStream, want: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains(want) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_cap_the_oldest_idle_connection_makes_room_and_a_busy_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // `/follow` answers a body that never ends, as `logs --follow` does.
        let router = Router::new().route("/", get(|| async { "ok" })).route(
            "/follow",
            get(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, std::convert::Infallible>(Bytes::from_static(b"first\n"))
                });
                Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
            }),
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(listener, router, stopped));

        let mut busy = UnixStream::connect(&path).await.unwrap();
        busy.write_all(b"GET /follow HTTP/1.1\r\nHost: berth\r\n\r\n")
            .await
            .unwrap();
        assert!(read_until(&mut busy, "first").await.contains("first"));
        // The rest of the slots: clients that never send a byte.
        let mut idle = Vec::new();
        for _ in 1..MAX_CONNECTIONS {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }

        // A newcomer is served at once, not after HEADER_READ_TIMEOUT.
        let started = std::time::Instant::now();
        let mut newcomer = UnixStream::connect(&path).await.unwrap();
        newcomer
            .write_all(b"GET / HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(3), read_until(&mut newcomer, "ok"))
            .await
            .unwrap_or_else(|_| panic!("no answer within 3 s at the cap"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() < HEADER_READ_TIMEOUT,
            "{:?}",
            started.elapsed()
        );

        // The oldest idle client made room; the one following a body did not.
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(1), idle[0].read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
        let open = tokio::time::timeout(Duration::from_millis(300), busy.read(&mut buf)).await;
        assert!(open.is_err(), "the busy connection was closed: {open:?}");

        let _ = stop.send(true);
        drop(idle);
        drop(busy);
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
}
