//! The gate, attacked: every route of the served OpenAPI document, with every method and many
//! spellings of its path, sent without credentials to a cluster-mode gateway (JWT auth, real
//! NATS and Postgres). None may be answered 2xx (unless the route is public), 5xx, or with a
//! WebSocket upgrade.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{start_gateway, tear_down};
use crate::support::token;

/// The routes anyone may call (`auth::need`); their spellings may answer 200.
const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/v1/openapi.json",
    "/",
    "/docs",
    "/ui/{file}",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A concrete path for a route pattern: each `{parameter}` filled with a plausible value.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment {
            "{id}" => "01a24302-2c67-7605-87bd-0a497841f1fd",
            "{n}" => "0",
            "{node}" => "node-a",
            "{repo}" => "repo",
            "{file}" => "app.js",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `c` percent-encoded, in upper or lower hex.
fn encoded(c: char, upper: bool) -> String {
    let mut bytes = [0u8; 4];
    c.encode_utf8(&mut bytes)
        .bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn join(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}

/// Ways to spell `path` that a careless gate and a router may read differently: encoded
/// letters in each segment (upper and lower hex, one letter or all), dot segments (plain and
/// encoded), doubled and trailing slashes, matrix parameters, encoded and backward slashes,
/// another case, and paths that climb out of a public route.
fn spellings(path: &str) -> Vec<String> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let mut out = vec![path.to_owned(), format!("{path}/"), format!("{path}//")];
    for i in 0..segments.len() {
        let with = |segment: String| {
            let mut s = segments.clone();
            s[i] = segment;
            join(&s)
        };
        let segment = &segments[i];
        for (at, c) in segment
            .char_indices()
            .filter(|(_, c)| c.is_ascii_alphabetic())
        {
            // The first and the last letter of the segment, in both hex cases.
            if at == 0 || at + 1 == segment.len() {
                for upper in [false, true] {
                    let mut spelled = segment.clone();
                    spelled.replace_range(at..at + 1, &encoded(c, upper));
                    out.push(with(spelled.clone()));
                    out.push(format!("{}/", with(spelled)));
                }
            }
        }
        out.push(with(segment.chars().map(|c| encoded(c, true)).collect()));
        out.push(with(segment.to_uppercase()));
        out.push(with(format!("{segment};x=1")));
        out.push(with(format!("{segment};")));
        // Dot segments before this one, plain and encoded.
        for dots in [".", "%2e", "%2E", "x/..", "x/%2e%2e", "x/%2E%2E", "x/.%2e"] {
            out.push(with(format!("{dots}/{segment}")));
        }
        if i > 0 {
            // This segment's separator doubled, encoded, or backward.
            for separator in ["//", "%2f", "%2F", "\\", "%5c", "/./"] {
                let (before, after) = segments.split_at(i);
                out.push(format!(
                    "/{}{separator}{}",
                    before.join("/"),
                    after.join("/")
                ));
            }
        }
    }
    out.push(path.replace('/', "//"));
    out.push(path.to_uppercase());
    // Climbing out of the public routes.
    for public in ["/healthz", "/ui", "/ui/app.js", "/v1/openapi.json"] {
        out.push(format!("{public}/..{path}"));
        out.push(format!("{public}/%2e%2e{path}"));
        out.push(format!("{public}/..%2f{}", &path[1..]));
        out.push(format!("{public}%2f..%2f{}", &path[1..]));
    }
    out.sort();
    out.dedup();
    out
}

/// Sends one request over a fresh connection, as raw HTTP/1.1 so the path goes out exactly as
/// spelled; GETs ask for a WebSocket upgrade. The status, or 0 when none came back.
async fn status_of(addr: &str, method: &str, path: &str, auth: Option<&str>) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the gateway accepts connections");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = auth {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if method == "GET" {
        request.push_str(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
    } else if method == "HEAD" || method == "OPTIONS" {
        request.push_str("\r\n");
    } else {
        request.push_str(
            "Content-Type: application/json\r\nContent-Length: 29\r\n\r\n{\"kind\":\"analyze\",\"repo\":\".\"}",
        );
    }
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn no_spelling_of_any_route_gets_past_the_gate_without_credentials() {
    let (db, prefix, env) = crate::cluster::migrated_cluster("gate").await;
    let (gateway, base) = start_gateway(&env).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let mut response = awc::Client::new()
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let document: Value = response.json().limit(1 << 22).await.unwrap();
    let mut routes: Vec<String> = document["paths"]
        .as_object()
        .expect("the document lists its paths")
        .keys()
        .cloned()
        .collect();
    // The dashboard's routes are served but not part of the API's document.
    routes.extend(["/".to_owned(), "/ui/{file}".to_owned()]);
    assert!(routes.len() >= 25, "{routes:?}");

    let (mut sent, mut through) = (0usize, Vec::new());
    for route in &routes {
        let public = PUBLIC.contains(&route.as_str());
        for spelling in spellings(&concrete(route)) {
            for method in METHODS {
                let status = status_of(&addr, method, &spelling, None).await;
                sent += 1;
                if status == 101 || status >= 500 || (!public && (200..300).contains(&status)) {
                    through.push(format!("{method} {spelling} -> {status}"));
                }
            }
        }
    }
    assert!(
        through.is_empty(),
        "{} of {sent} requests got past the gate:\n{}",
        through.len(),
        through.join("\n")
    );
    // Printed for the record: how hard the gate was tried.
    println!(
        "{sent} requests over {} routes, none past the gate",
        routes.len()
    );
    assert!(sent > 5000, "{sent}");

    // A path no route serves: 401 without credentials, 404 with them; never passed on.
    for path in ["/v1/nope", "/v2/tasks", "/v1/%61udit/x", "/nothing"] {
        assert_eq!(status_of(&addr, "GET", path, None).await, 401, "{path}");
        assert_eq!(
            status_of(&addr, "GET", path, Some(&token("viewer"))).await,
            404,
            "{path}"
        );
    }
    // The spellings of the issue reach the route a valid caller is let into, and no further.
    for path in ["/v1/%61udit", "/v1/%74asks", "/%761/tasks"] {
        let viewer = status_of(&addr, "GET", path, Some(&token("viewer"))).await;
        let admin = status_of(&addr, "GET", path, Some(&token("admin"))).await;
        if path.contains("udit") {
            assert_eq!((viewer, admin), (403, 200), "{path}");
        } else {
            assert_eq!((viewer, admin), (200, 200), "{path}");
        }
    }
    drop(gateway);
    tear_down(prefix, db).await;
}

#[test]
fn the_spellings_cover_what_the_review_found() {
    let audit = spellings("/v1/audit");
    for found in ["/v1/%61udit", "/%761/audit", "/v1/audit/", "/v1//audit"] {
        assert!(audit.contains(&found.to_owned()), "{found}: {audit:?}");
    }
    assert!(audit.len() > 40, "{}", audit.len());
}
