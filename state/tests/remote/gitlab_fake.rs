//! An in-process double of GitLab's Terraform state API
//! (`lib/api/terraform/state.rb`, as documented in
//! shared/reference/remote-apis.md §3), on 127.0.0.1:
//!
//! - `GET …/projects/:id/terraform/state/:name`: 200 with the version of
//!   the highest serial, or 204 when there is none;
//! - `POST …/state/:name[?ID=]`: needs a JSON body with an integer top-level
//!   `serial`, else 422; a serial already stored is refused with 422; while
//!   the state is locked the `ID` must be the lock's, and a wrong or missing
//!   one (or an `ID` on an unlocked state) ends in GitLab's catch-all 500;
//! - `POST` (or Terraform's `LOCK`) `…/state/:name/lock` with Terraform's lock
//!   info (all of `ID Operation Info Who Version Created Path` required, else
//!   400): 200, or 409 with the current lock's `ID`, `Who` and `Created` and
//!   the requester's other fields; `Who` is the authenticated GitLab user;
//! - `DELETE` (or `UNLOCK`) `…/state/:name/lock[?ID=]`, the `ID` from the
//!   query or the JSON body: 200; a wrong `ID` → 409 with the current lock;
//!   no `ID` at all force-unlocks;
//! - every request needs HTTP basic auth with the configured user and
//!   password, else 401.
//!
//! `fail_next` makes the next requests answer 500, to exercise retries.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub content_md5: Option<String>,
    pub status: u16,
}

#[derive(Default)]
pub struct Project {
    pub user: String,
    pub password: String,
    /// State name → serial → body.
    pub states: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
    /// State name → lock info as stored.
    pub locks: BTreeMap<String, Value>,
    /// Answer this many requests with 500 before serving again.
    pub fail_next: u32,
    pub seen: Vec<Seen>,
}

pub struct FakeGitlab {
    pub addr: SocketAddr,
    pub project: Arc<Mutex<Project>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitlab {
    pub async fn start(user: &str, password: &str) -> FakeGitlab {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let project = Arc::new(Mutex::new(Project {
            user: user.to_owned(),
            password: password.to_owned(),
            ..Project::default()
        }));
        let shared = project.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeGitlab {
            addr,
            project,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/api/v4`, like `CI_API_V4_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v4", self.addr)
    }

    /// The state address of `name` in project 1 (`{env}` is left for the
    /// backend to fill when `name` is `{env}`).
    pub fn state_url(&self, name: &str) -> String {
        format!("{}/projects/1/terraform/state/{name}", self.api_url())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.project.lock().unwrap().seen.clone()
    }

    /// The stored version with the highest serial, as JSON.
    pub fn latest(&self, name: &str) -> Option<Value> {
        let p = self.project.lock().unwrap();
        p.states
            .get(name)
            .and_then(|v| v.values().next_back())
            .map(|b| serde_json::from_slice(b).unwrap())
    }
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

fn message(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    answer(status, json!({ "message": text }).to_string().into_bytes())
}

fn query_id(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "ID").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn handle(shared: &Mutex<Project>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_md5 = req
        .headers()
        .get("content-md5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();

    let mut p = shared.lock().unwrap();
    let resp = serve(
        &mut p,
        &method,
        &path,
        query.as_deref(),
        auth.as_deref(),
        &body,
    );
    p.seen.push(Seen {
        method,
        target,
        content_md5,
        status: resp.status().as_u16(),
    });
    resp
}

fn serve(
    p: &mut Project,
    method: &str,
    path: &str,
    query: Option<&str>,
    auth: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if p.fail_next > 0 {
        p.fail_next -= 1;
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        );
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", p.user, p.password))
    );
    if auth != Some(expected.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let Some(rest) = path.strip_prefix("/api/v4/projects/1/terraform/state/") else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let (raw_name, is_lock) = match rest.strip_suffix("/lock") {
        Some(name) => (name, true),
        None => (rest, false),
    };
    // A name may not contain `/`: it has to be URL-encoded.
    if raw_name.is_empty() || raw_name.contains('/') {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    }
    let name = percent_decode(raw_name);

    match (is_lock, method) {
        (false, "GET") => match p.states.get(&name).and_then(|v| v.values().next_back()) {
            Some(b) => answer(StatusCode::OK, b.clone()),
            None => answer(StatusCode::NO_CONTENT, Vec::new()),
        },
        (false, "POST") => {
            if body.is_empty() {
                return answer(StatusCode::NO_CONTENT, Vec::new());
            }
            let Ok(doc) = serde_json::from_slice::<Value>(body) else {
                return message(StatusCode::UNPROCESSABLE_ENTITY, "Failed to parse JSON");
            };
            let Some(serial) = doc.get("serial").and_then(Value::as_u64) else {
                return message(StatusCode::UNPROCESSABLE_ENTITY, "No serial in payload");
            };
            let given = query_id(query);
            let held = p
                .locks
                .get(&name)
                .and_then(|l| l["ID"].as_str().map(str::to_owned));
            if given != held {
                // GitLab's handler raises here, and the API answers with its
                // catch-all 500.
                return message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error",
                );
            }
            let versions = p.states.entry(name).or_default();
            if versions.contains_key(&serial) {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Serial already exists for this state",
                );
            }
            versions.insert(serial, body.to_vec());
            answer(StatusCode::OK, b"{}".to_vec())
        }
        (false, "DELETE") => {
            if !p.locks.contains_key(&name) {
                p.states.remove(&name);
            }
            answer(StatusCode::OK, b"{}".to_vec())
        }
        (true, "POST" | "LOCK") => {
            let Ok(info) = serde_json::from_slice::<Value>(body) else {
                return message(StatusCode::BAD_REQUEST, "ID is missing");
            };
            for field in [
                "ID",
                "Operation",
                "Info",
                "Who",
                "Version",
                "Created",
                "Path",
            ] {
                if !info.get(field).is_some_and(Value::is_string) {
                    return message(StatusCode::BAD_REQUEST, &format!("{field} is missing"));
                }
            }
            // Locking a name that does not exist yet creates it, empty.
            p.states.entry(name.clone()).or_default();
            if let Some(current) = p.locks.get(&name) {
                let mut reply = info.clone();
                for field in ["ID", "Who", "Created"] {
                    reply[field] = current[field].clone();
                }
                return answer(StatusCode::CONFLICT, reply.to_string().into_bytes());
            }
            let mut stored = info.clone();
            stored["Who"] = Value::String(p.user.clone());
            p.locks.insert(name, stored.clone());
            answer(StatusCode::OK, stored.to_string().into_bytes())
        }
        (true, "DELETE" | "UNLOCK") => {
            let given = query_id(query).or_else(|| {
                serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["ID"].as_str().map(str::to_owned))
            });
            match (p.locks.get(&name), given) {
                (Some(current), Some(id)) if current["ID"].as_str() != Some(id.as_str()) => {
                    answer(StatusCode::CONFLICT, current.to_string().into_bytes())
                }
                _ => {
                    p.locks.remove(&name);
                    answer(StatusCode::OK, b"{}".to_vec())
                }
            }
        }
        _ => message(StatusCode::METHOD_NOT_ALLOWED, "405 Not Allowed"),
    }
}
