//! A stand-in for Elasticsearch and Kibana that stores what `setup.sh` writes and answers its
//! reads, so that a run can be repeated and its writes counted. It keeps the API shapes that
//! setup.sh relies on: 404 for what does not exist, a stored object read back as compact JSON
//! with its keys in another order, an update that keeps what only creation sets (a rule's type
//! and consumer, a connector's type), a password checked by logging in and never returned.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};

use super::repo;

/// One write `setup.sh` made: its method and path (with the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    method: String,
    path: String,
}

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    passwords: BTreeMap<String, String>,
    writes: Vec<Write>,
}

/// The fake Elasticsearch and Kibana (one server for both), on a port of 127.0.0.1.
pub struct Stack {
    url: String,
    store: Arc<Mutex<Store>>,
    /// A folder put first in setup.sh's PATH, with a `curl` that records its arguments.
    shim: PathBuf,
}

const ELASTIC_PASSWORD: &str = "test-elastic";

impl Stack {
    pub async fn start() -> Self {
        let store = Arc::new(Mutex::new(Store::default()));
        store
            .lock()
            .unwrap()
            .passwords
            .insert("elastic".into(), ELASTIC_PASSWORD.into());
        let app = Router::new().fallback(answer).with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let shim = curl_recorder(&url);
        Self { url, store, shim }
    }

    /// Runs `setup.sh all` against this stack with `env` on top of the usual variables, and
    /// returns its writes. Panics unless it succeeds.
    pub async fn run_setup(&self, env: &[(&str, &str)]) -> Vec<Write> {
        self.store.lock().unwrap().writes.clear();
        let output = tokio::process::Command::new("bash")
            .arg(repo("deploy/setup/setup.sh"))
            .arg("all")
            .env("ELASTICSEARCH_URL", &self.url)
            .env("KIBANA_URL", &self.url)
            .env("DEPLOY_DIR", repo("deploy"))
            .env("WAIT_SECONDS", "5")
            .env("ELASTIC_PASSWORD", ELASTIC_PASSWORD)
            .env("KIBANA_SYSTEM_PASSWORD", "test-kibana")
            .env("LOGSTASH_INTERNAL_PASSWORD", "test-logstash")
            .env("ORDERTRAIL_VIEWER_PASSWORD", "test-viewer")
            .env("PATH", search_path(&self.shim))
            .envs(env.iter().copied())
            .output()
            .await
            .expect("bash runs setup.sh");
        assert!(
            output.status.success(),
            "setup.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.store.lock().unwrap().writes.clone()
    }

    /// The object stored at `path`.
    pub fn stored(&self, path: &str) -> Value {
        self.store.lock().unwrap().objects[path].clone()
    }

    /// Drops the object stored at `path`, as if it had never been written.
    pub fn forget(&self, path: &str) {
        self.store.lock().unwrap().objects.remove(path);
    }

    /// The arguments of every curl that setup.sh ran so far, one line per curl: what the
    /// process list shows of it.
    pub fn curl_arguments(&self) -> String {
        std::fs::read_to_string(self.shim.join("argv.log")).unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.shim);
    }
}

/// A new folder with a `curl` that appends its arguments to `argv.log` beside it, then runs
/// the curl found on PATH.
fn curl_recorder(url: &str) -> PathBuf {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("curl"))
        .find(|path| path.is_file())
        .expect("curl on PATH");
    let port = url.rsplit(':').next().unwrap();
    let dir = std::env::temp_dir().join(format!(
        "ordertrail-setup-curl-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("curl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            dir.join("argv.log").display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// PATH with `first` before the rest.
fn search_path(first: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(first.to_owned()).chain(std::env::split_paths(&rest)))
        .unwrap()
}

async fn answer(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut store = store.lock().unwrap();
    let path = uri.path().to_owned();
    let user = authenticated(&store, &headers);
    if path == "/_security/_authenticate" {
        return match user {
            Some(user) => (StatusCode::OK, json!({ "username": user }).to_string()),
            None => (StatusCode::UNAUTHORIZED, "{}".into()),
        };
    }
    if user.as_deref() != Some("elastic") {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    if method == Method::GET {
        return match path.as_str() {
            "/_cluster/health" | "/api/status" => (StatusCode::OK, "{}".into()),
            "/api/data_views/default" => {
                let id = store.objects.get(&path).cloned().unwrap_or(json!({}));
                let id = id["data_view_id"].as_str().unwrap_or("").to_owned();
                (StatusCode::OK, json!({ "data_view_id": id }).to_string())
            }
            // An index's settings, whatever the filter path: those it was created with.
            _ if path.contains("/_settings/") => {
                let index = &path[..path.find("/_settings/").unwrap()];
                match store.objects.get(&format!("{index}/_settings")) {
                    Some(settings) => (StatusCode::OK, settings.to_string()),
                    None => (StatusCode::NOT_FOUND, "{}".into()),
                }
            }
            _ => match store.objects.get(&path) {
                // serde_json writes the keys sorted, not in the order they came.
                Some(object) => (StatusCode::OK, object.to_string()),
                None => (StatusCode::NOT_FOUND, "{}".into()),
            },
        };
    }

    store.writes.push(Write {
        method: method.to_string(),
        path: uri.path_and_query().map_or(path.clone(), |p| p.to_string()),
    });
    if path == "/api/saved_objects/_import" {
        return (StatusCode::OK, json!({"success": true}).to_string());
    }
    if path == "/_data_stream/ordertrail-logs" || path == "/_data_stream/ordertrail-audit" {
        store.objects.insert(path, json!({"data_streams": []}));
        return (StatusCode::OK, "{}".into());
    }
    let mut object: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(object) => object,
            Err(err) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": err.to_string()}).to_string(),
                );
            }
        }
    };
    if let Some(user) = path
        .strip_prefix("/_security/user/")
        .map(|rest| rest.trim_end_matches("/_password").to_owned())
    {
        if let Some(password) = object.as_object_mut().and_then(|o| o.remove("password")) {
            store
                .passwords
                .insert(user, password.as_str().unwrap().to_owned());
        }
        if path.ends_with("/_password") {
            return (StatusCode::OK, "{}".into());
        }
    }
    let creates = method == Method::POST
        && (path.starts_with("/api/alerting/rule/") || path.starts_with("/api/actions/connector/"));
    match (store.objects.get(&path), creates) {
        (Some(_), true) => return (StatusCode::CONFLICT, "{}".into()),
        (None, false)
            if method == Method::PUT
                && path.starts_with("/api/")
                && !path.starts_with("/api/security/") =>
        {
            return (StatusCode::NOT_FOUND, "{}".into());
        }
        _ => {}
    }
    // An update keeps what only creation sets.
    if let Some(Value::Object(existing)) = store.objects.get(&path) {
        for key in ["rule_type_id", "consumer", "enabled", "connector_type_id"] {
            if let Some(value) = existing.get(key) {
                object[key] = value.clone();
            }
        }
    }
    // A plain index gets the settings of the index template naming it, as Elasticsearch's are
    // (`GET /<index>/_settings` answers `{"<index>": {"settings": ...}}`); settings put later
    // replace those.
    let name = path.trim_start_matches('/');
    if method == Method::PUT && !name.contains('/') && !name.starts_with('_') {
        let template = store.objects.values().find(|t| {
            t["index_patterns"]
                .as_array()
                .is_some_and(|patterns| patterns.iter().any(|p| p == name))
        });
        let settings = template.map_or(json!({}), |t| t["template"]["settings"].clone());
        let settings = json!({ name: { "settings": settings } });
        store.objects.insert(format!("{path}/_settings"), settings);
    }
    if let Some(index) = path.strip_suffix("/_settings") {
        let settings = json!({ index.trim_start_matches('/'): { "settings": object } });
        store.objects.insert(path, settings);
        return (StatusCode::OK, "{}".into());
    }
    store.objects.insert(path, object);
    (StatusCode::OK, "{}".into())
}

/// The user whose password the request's basic credentials carry.
fn authenticated(store: &Store, headers: &HeaderMap) -> Option<String> {
    let given = headers.get("authorization")?.to_str().ok()?;
    store
        .passwords
        .iter()
        .find_map(|(user, password)| (basic(user, password) == given).then(|| user.clone()))
}

/// The `Authorization` value of basic credentials, as reqwest encodes them.
fn basic(user: &str, password: &str) -> String {
    let request = reqwest::Client::new()
        .get("http://localhost/")
        .basic_auth(user, Some(password))
        .build()
        .unwrap();
    request.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}
