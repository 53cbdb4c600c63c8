//! What the web door answers: the page's files, and at `/ws` the
//! WebSocket upgrade, once the request has passed the origin check and
//! its client (known only now, from `X-Forwarded-For` behind a trusted
//! proxy) has passed the [`Gate`](crate::gate::Gate).
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts,
//! styles and connections only from this server, nothing inline, no
//! framing) and `X-Content-Type-Options: nosniff`. Files are revalidated
//! on every load (`Cache-Control: no-cache`) against their `ETag`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::assets::{self, Asset};
use super::{origin, proxy, HttpConnection, Upgrade, Web};
use crate::metrics::{self, Door};

/// Requests one HTTP connection may make; the answer to the last says
/// `Connection: close`. A page load is three.
const MAX_REQUESTS: u32 = 100;

/// The policy every answer carries; [`policy`] adds the WebSocket's own
/// address to `connect-src`, which not every browser counts as `'self'`.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

type Answer = Response<Full<Bytes>>;

/// Answers one request on a connection of `door` from `peer`.
pub(super) fn answer(
    mut request: Request<Incoming>,
    web: &Web,
    peer: SocketAddr,
    door: Door,
    connection: &HttpConnection,
) -> Answer {
    let scheme = match door {
        Door::WebTls => "https",
        _ => "http",
    };
    let answer = match request.uri().path() {
        "/ws" => websocket(&mut request, web, peer, door, connection),
        path => file(&request, path),
    };
    let switching = answer.status() == StatusCode::SWITCHING_PROTOCOLS;
    let mut answer = answer;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        policy(request.headers(), scheme),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let requests = connection.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if requests >= MAX_REQUESTS && !switching {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// [`POLICY`] with `connect-src` naming this server's WebSocket, when the
/// `Host` is a plain host name or address (it is the client's own to
/// send, so nothing else is put into the header).
fn policy(headers: &HeaderMap, scheme: &str) -> HeaderValue {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
    let connect = match host {
        Some(host) => format!("connect-src 'self' {}://{host}/ws", ws_scheme(scheme)),
        None => "connect-src 'self'".to_owned(),
    };
    HeaderValue::from_str(&format!("{POLICY}; {connect}"))
        .unwrap_or_else(|_| HeaderValue::from_static(POLICY))
}

fn ws_scheme(scheme: &str) -> &'static str {
    if scheme == "https" {
        "wss"
    } else {
        "ws"
    }
}

/// A file of the page, or 404; `GET` and `HEAD` only.
fn file(request: &Request<Incoming>, path: &str) -> Answer {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return not_allowed("GET, HEAD");
    }
    match assets::find(path) {
        Some(asset) => serve(asset, request.headers()),
        None => plain(StatusCode::NOT_FOUND, "not found; the chat is at /\n"),
    }
}

/// A file, gzipped if the client takes it, or 304 if the client has it.
fn serve(asset: &Asset, headers: &HeaderMap) -> Answer {
    let gzipped = asset.gzipped.as_ref().filter(|_| accepts_gzip(headers));
    let (etag, body) = match gzipped {
        Some(gzipped) => (&asset.gzipped_etag, gzipped.clone()),
        None => (&asset.etag, asset.body.clone()),
    };
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, asset.content_type)
        .header(header::ETAG, etag.as_str())
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "accept-encoding");
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|value| matches_etag(value.as_bytes(), &[&asset.etag, &asset.gzipped_etag]));
    let built = if fresh {
        builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::default())
    } else if gzipped.is_some() {
        builder
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Full::new(body))
    } else {
        builder.body(Full::new(body))
    };
    built.unwrap_or_default()
}

/// Whether an `If-None-Match` names one of `etags` (or is `*`); weak
/// tags compare as strong ones, as RFC 9110 says for this header.
fn matches_etag(value: &[u8], etags: &[&str]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    value.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || etags.contains(&tag)
    })
}

/// Whether `Accept-Encoding` takes gzip (not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// The WebSocket upgrade: checked, let in or refused (a refusal is told
/// over the WebSocket, as `ERROR`, like on any door), and switched.
fn websocket(
    request: &mut Request<Incoming>,
    web: &Web,
    peer: SocketAddr,
    door: Door,
    connection: &HttpConnection,
) -> Answer {
    if request.method() != Method::GET {
        return not_allowed("GET");
    }
    let headers = request.headers();
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        let mut answer = plain(
            StatusCode::UPGRADE_REQUIRED,
            "this is the chat's WebSocket; open it with a WebSocket client\n",
        );
        answer
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return answer;
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        let mut answer = plain(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        answer.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return answer;
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| key.len() == 24)
    else {
        return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let trusted = &web.gate.config.trusted_proxies;
    let forwarded = headers
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .iter()
        .map(HeaderValue::as_bytes);
    let Ok(client) = proxy::client_address(peer.ip(), forwarded, trusted) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "X-Forwarded-For names no address\n",
        );
    };
    let client = SocketAddr::new(client, peer.port());
    let scheme = own_scheme(headers, peer, door, trusted);
    let allowed = origin::allowed(
        headers.get(header::ORIGIN).map(HeaderValue::as_bytes),
        headers.get(header::HOST).map(HeaderValue::as_bytes),
        scheme,
        &web.gate.config.web_origins,
    );
    if !allowed {
        metrics::web_origin_refused();
        return plain(
            StatusCode::FORBIDDEN,
            "this page's origin may not open the chat's WebSocket\n",
        );
    }
    let admitted = match web.gate.admit(client.ip(), door) {
        Ok(admission) => Ok(admission),
        Err(refused) => match web.gate.refusal_place(&refused, client) {
            Some(place) => Err((refused.refusal, place)),
            None => {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "too busy; try again\n");
            }
        },
    };
    let upgrade = Upgrade {
        on_upgrade: hyper::upgrade::on(&mut *request),
        client,
        admitted,
    };
    *connection.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some(upgrade);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::default())
        .unwrap_or_default()
}

/// The scheme the page was loaded with: the door's, or, from a trusted
/// proxy that terminates TLS, its `X-Forwarded-Proto`.
fn own_scheme(
    headers: &HeaderMap,
    peer: SocketAddr,
    door: Door,
    trusted: &[proxy::Net],
) -> &'static str {
    if trusted.iter().any(|net| net.contains(peer.ip())) {
        match headers
            .get(HeaderName::from_static("x-forwarded-proto"))
            .map(HeaderValue::as_bytes)
        {
            Some(b"https") => return "https",
            Some(b"http") => return "http",
            _ => {}
        }
    }
    match door {
        Door::WebTls => "https",
        _ => "http",
    }
}

/// Whether a comma-separated header holds `token`, in any case.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut answer = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    answer
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    answer
}

fn plain(status: StatusCode, text: &'static str) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "br")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let tags = ["\"a\"", "\"a-gzip\""];
        assert!(matches_etag(b"\"a\"", &tags));
        assert!(matches_etag(b"\"x\", W/\"a-gzip\"", &tags));
        assert!(matches_etag(b"*", &tags));
        assert!(!matches_etag(b"\"b\"", &tags));
    }

    #[test]
    fn the_policy_names_the_websocket_only_for_a_plain_host() {
        let with = policy(&headers(&[("host", "127.0.0.1:8080")]), "http");
        assert!(with
            .to_str()
            .unwrap()
            .ends_with("connect-src 'self' ws://127.0.0.1:8080/ws"));
        let tls = policy(&headers(&[("host", "chat.example.com")]), "https");
        assert!(tls.to_str().unwrap().contains("wss://chat.example.com/ws"));
        let odd = policy(&headers(&[("host", "x; script-src *")]), "http");
        assert!(odd.to_str().unwrap().ends_with("connect-src 'self'"));
        assert!(odd.to_str().unwrap().contains("default-src 'none'"));
    }
}
