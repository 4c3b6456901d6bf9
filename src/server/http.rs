//! The HTTP API (axum): keys are paths, values are bodies, revisions are ETags.
//!
//! | request                            | success                          | otherwise                |
//! |------------------------------------|----------------------------------|--------------------------|
//! | `PUT /{key}` body = value          | 201 created / 200 updated, ETag  | 413 value too large      |
//! | `PUT` + `If-Match: "<rev>"`        | as above (compare-and-swap)      | 412 (also if absent)     |
//! | `PUT` + `If-Match: *`              | as above, only if the key exists | 412                      |
//! | `PUT` + `If-None-Match: *`         | 201, only if the key is absent   | 412                      |
//! | `GET /{key}` (`?stale=true`)       | 200 raw bytes, ETag              | 404                      |
//! | `DELETE /{key}`                    | 204                              | 404                      |
//! | `GET /_status`                     | 200 JSON [`NodeStatus`]          |                          |
//! | `GET /_members`                    | 200 JSON [`MemberList`]          |                          |
//! | `POST /_members` `{"addr": "h:p"}` | 201 JSON [`MemberAdded`]         | 400, 409 refused, 503    |
//! | `POST /_members/{id}/promote`      | 200 JSON `{id, effective_slot}`  | 409 not caught up, 503   |
//! | `DELETE /_members/{id}` (`?force`) | 200 JSON `{id, effective_slot}`  | 409 no majority left, 503|
//! | `GET /_leader`                     | 200 `{"leader": <id or null>}`   |                          |
//! | `POST /_leader` body `{"id": N}`   | 200 `{"leader": N}` once N leads | 400 not a voter, 503     |
//! | `GET /_health`                     | 200 `ok`                         | 503 `no quorum`          |
//!
//! **Keys.** The key is the whole path after the first `/`, percent-decoded to raw bytes (so
//! `/a/b` is the key `a/b`, and `/%00%ff` is two raw bytes); the query string is not part of it.
//! Keys follow [`validate_key`]: a bad one gets 400. Paths starting with `_` (also when written
//! `%5F`) are the endpoint namespace: unknown ones get 404 on GET, 400 "reserved" on writes.
//!
//! **Reads** are linearizable unless the query says `stale=true` (or `stale`, `stale=1`).
//!
//! **Errors.** [`StoreError`]s become 503 with the error's message (with `Retry-After` unless the
//! outcome is unknown), except `TooLarge` which is 413; text bodies end with a newline so that curl output stays readable. An `If-Match: *` is a read followed by a
//! compare-and-swap on the revision read: a concurrent write in between gives 412.

use std::future::Future;
use std::io;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{
    ALLOW, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, RETRY_AFTER,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::LengthLimitError;
use percent_encoding::percent_decode_str;

use crate::line_protocol::members::MemberAdded;
use crate::line_protocol::MemberList;
use crate::paxos::types::{Op, Outcome, Revision};
use crate::server::members::{change_members, MemberRequest, MemberRequestError};
use crate::server::{
    check_transfer_target, validate_key, Consistency, KeyError, NodeStatus, Store, StoreError,
    KEY_RESERVED_PREFIX, VALUE_BYTES_MAX,
};
use axum::serve::ListenerExt;

/// How long a client should wait before retrying after a 503, in seconds.
const RETRY_AFTER_SECS: u64 = 1;
/// The methods a key accepts, for 405 replies.
const KEY_METHODS: &str = "GET, HEAD, PUT, DELETE";
/// The methods an endpoint accepts, for 405 replies.
const ENDPOINT_METHODS: &str = "GET, HEAD";
/// The methods `/_leader` accepts, for 405 replies.
const LEADER_METHODS: &str = "GET, HEAD, POST";
/// The largest body `POST /_leader` reads (`{"id": N}` needs a dozen bytes).
const LEADER_BODY_BYTES_MAX: usize = 1024;
/// The largest body `POST /_members` reads (an address of at most 255 bytes in JSON).
const MEMBER_BODY_BYTES_MAX: usize = 1024;
/// The methods `/_members/{id}` and `/_members/{id}/promote` accept, for 405 replies.
const MEMBER_METHODS: &str = "DELETE";
const PROMOTE_METHODS: &str = "POST";
/// The methods `/_members` accepts, for 405 replies.
const MEMBERS_METHODS: &str = "GET, HEAD, POST";

/// Serves the HTTP API on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve_http<S: Store>(
    listener: tokio::net::TcpListener,
    store: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // TCP_NODELAY: a response must not wait for the client's delayed ACK of the previous one.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "HTTP: TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router(store))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The HTTP API as a router, for [`serve_http`] and for tests.
pub fn router<S: Store>(store: S) -> Router {
    // One handler sees every path: keys may contain `/` and any percent-encoded byte, which
    // route patterns would decode to UTF-8 strings or split.
    Router::new().fallback(dispatch::<S>).with_state(store)
}

/// A plain-text reply ending with a newline.
fn text(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{message}\n"),
    )
        .into_response()
}

fn etag(revision: Revision) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn with_etag(mut response: Response, revision: Revision) -> Response {
    response.headers_mut().insert(ETAG, etag(revision));
    response
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed: use {allow}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn store_error(error: StoreError) -> Response {
    if error == StoreError::TooLarge {
        return text(StatusCode::PAYLOAD_TOO_LARGE, &error);
    }
    let retry = !matches!(error, StoreError::OutcomeUnknown);
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, &error);
    if retry {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

fn unexpected(outcome: Outcome) -> Response {
    tracing::error!(?outcome, "http: unexpected outcome");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: unexpected outcome {outcome:?}"),
    )
}

async fn dispatch<S: Store>(
    State(store): State<S>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path();
    let raw = path.strip_prefix('/').unwrap_or(path);
    let key: Vec<u8> = percent_decode_str(raw).collect();
    if key == b"_leader" {
        return leader(&store, &method, body).await;
    }
    if let Some(rest) = key.strip_prefix(b"_members/") {
        return member(&store, &method, rest, uri.query()).await;
    }
    if key == b"_members" && method == Method::POST {
        return member_add(&store, body).await;
    }
    if key.first() == Some(&KEY_RESERVED_PREFIX) {
        return endpoint(&store, &method, &key);
    }
    if let Err(error) = validate_key(&key) {
        return text(StatusCode::BAD_REQUEST, error);
    }
    let key = Bytes::from(key);
    match method {
        Method::GET | Method::HEAD => get(&store, key, consistency(uri.query())).await,
        Method::PUT => put(&store, key, &headers, body).await,
        Method::DELETE => delete(&store, key, &headers).await,
        _ => method_not_allowed(KEY_METHODS),
    }
}

/// `/_status`, `/_health`, and the rest of the reserved namespace.
fn endpoint<S: Store>(store: &S, method: &Method, name: &[u8]) -> Response {
    let readable = *method == Method::GET || *method == Method::HEAD;
    match name {
        b"_members" if !readable => method_not_allowed(MEMBERS_METHODS),
        b"_status" | b"_health" | b"_metrics" if !readable => {
            method_not_allowed(ENDPOINT_METHODS)
        }
        b"_status" => {
            let status: NodeStatus = store.status();
            Json(status).into_response()
        }
        b"_members" => Json(MemberList::of_node(&store.status())).into_response(),
        b"_metrics" => match store.metrics_text() {
            Some(body) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                body,
            )
                .into_response(),
            None => text(StatusCode::NOT_FOUND, "this node keeps no metrics"),
        },
        b"_health" if store.healthy() => text(StatusCode::OK, "ok"),
        b"_health" => text(StatusCode::SERVICE_UNAVAILABLE, "no quorum"),
        _ if readable => text(
            StatusCode::NOT_FOUND,
            "not found: paths starting with /_ are reserved (endpoints: /_status, /_members, /_leader, /_health, /_metrics)",
        ),
        _ => text(StatusCode::BAD_REQUEST, KeyError::Reserved),
    }
}

/// The body of `POST /_members`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberAdd {
    addr: String,
}

/// The answer to a membership request, or its error as a status code: 400 for a request that
/// is malformed, 409 for a change the cluster refused (nothing changed; the body says why and
/// what to do), 503 otherwise.
fn member_answer(
    result: Result<crate::server::members::MemberChanged, MemberRequestError>,
    ok: impl FnOnce(crate::server::members::MemberChanged) -> Response,
) -> Response {
    match result {
        Ok(changed) => ok(changed),
        Err(MemberRequestError::BadRequest(why)) => {
            text(StatusCode::BAD_REQUEST, format!("bad request: {why}"))
        }
        Err(MemberRequestError::Refused(why)) => text(StatusCode::CONFLICT, why),
        Err(MemberRequestError::Store(error)) => store_error(error),
    }
}

/// `POST /_members` with `{"addr": "host:port"}` (the new member's PORT): adds a learner and
/// answers, once decided, with what the new node needs to join (`consens serve --join` asks
/// this).
async fn member_add<S: Store>(store: &S, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MEMBER_BODY_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request: {e}")),
    };
    let request: MemberAdd = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad request: the body must be JSON like {{\"addr\": \"10.0.0.4:3000\"}} ({e})"
                ),
            )
        }
    };
    let result = change_members(store, MemberRequest::Add { addr: request.addr }).await;
    member_answer(result, |changed| {
        (
            StatusCode::CREATED,
            Json(MemberAdded::of(&changed, &store.status())),
        )
            .into_response()
    })
}

/// `DELETE /_members/{id}` (`?force=true` skips the reachable-majority check) and
/// `POST /_members/{id}/promote`.
async fn member<S: Store>(
    store: &S,
    method: &Method,
    rest: &[u8],
    query: Option<&str>,
) -> Response {
    let text_rest = String::from_utf8_lossy(rest);
    let (id_text, action) = match text_rest.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (text_rest.as_ref(), None),
    };
    let Ok(id) = id_text.parse::<u16>() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found: /_members/{text_rest} (a member is /_members/<id>)"),
        );
    };
    let request = match (method, action) {
        (&Method::DELETE, None) => MemberRequest::Remove {
            id,
            force: query
                .unwrap_or("")
                .split('&')
                .any(|pair| matches!(pair, "force" | "force=true" | "force=1")),
        },
        (&Method::POST, Some("promote")) => MemberRequest::Promote { id },
        (_, None) => return method_not_allowed(MEMBER_METHODS),
        (_, Some("promote")) => return method_not_allowed(PROMOTE_METHODS),
        (_, Some(other)) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("not found: /_members/{id}/{other} (only /_members/{id}/promote)"),
            )
        }
    };
    let result = change_members(store, request).await;
    member_answer(result, |changed| Json(changed).into_response())
}

/// The body of `POST /_leader`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderTransfer {
    id: u16,
}

/// `GET /_leader`: who leads, as this node sees it. `POST /_leader` with `{"id": N}`: move
/// leadership to member N and answer once this node sees N lead (etcd's `move-leader`).
async fn leader<S: Store>(store: &S, method: &Method, body: Body) -> Response {
    let leader_json = |id: Option<u16>| Json(serde_json::json!({ "leader": id })).into_response();
    match *method {
        Method::GET | Method::HEAD => leader_json(store.status().leader_id),
        Method::POST => {
            let bytes = match axum::body::to_bytes(body, LEADER_BODY_BYTES_MAX).await {
                Ok(bytes) => bytes,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request: {e}")),
            };
            let request: LeaderTransfer = match serde_json::from_slice(&bytes) {
                Ok(request) => request,
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("bad request: the body must be JSON like {{\"id\": 2}} ({e})"),
                    )
                }
            };
            if let Err(why) = check_transfer_target(&store.status(), request.id) {
                return text(StatusCode::BAD_REQUEST, format!("bad request: {why}"));
            }
            match store.transfer_leadership(request.id).await {
                Ok(()) => leader_json(Some(request.id)),
                Err(error) => store_error(error),
            }
        }
        _ => method_not_allowed(LEADER_METHODS),
    }
}

/// `stale=true` (or `stale`, `stale=1`) anywhere in the query asks for a stale read.
fn consistency(query: Option<&str>) -> Consistency {
    let stale = query
        .unwrap_or("")
        .split('&')
        .any(|pair| matches!(pair, "stale" | "stale=true" | "stale=1"));
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

async fn get<S: Store>(store: &S, key: Bytes, consistency: Consistency) -> Response {
    match store.read(key, consistency).await {
        Ok(Some(entry)) => with_etag(
            (
                StatusCode::OK,
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )],
                entry.value,
            )
                .into_response(),
            entry.revision,
        ),
        Ok(None) => text(StatusCode::NOT_FOUND, "not found"),
        Err(error) => store_error(error),
    }
}

/// The condition a PUT carries.
#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    None,
    /// `If-Match: "<rev>"`: only if the key's revision is this.
    Revision(Revision),
    /// `If-Match: *`: only if the key exists.
    Exists,
    /// `If-None-Match: *`: only if the key is absent.
    Absent,
}

/// The single value of a header, if present.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("bad request: more than one {name} header"));
    }
    let value = value
        .to_str()
        .map_err(|_| format!("bad request: {name} is not ASCII"))?
        .trim();
    Ok(Some(value))
}

fn precondition(headers: &HeaderMap) -> Result<Precondition, String> {
    let if_match = single_header(headers, IF_MATCH.as_str())?;
    let if_none_match = single_header(headers, IF_NONE_MATCH.as_str())?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => {
            Err("bad request: use either If-Match or If-None-Match, not both".into())
        }
        (None, None) => Ok(Precondition::None),
        (None, Some("*")) => Ok(Precondition::Absent),
        (None, Some(_)) => Err("bad request: If-None-Match supports only *".into()),
        (Some("*"), None) => Ok(Precondition::Exists),
        (Some(tag), None) => {
            let digits = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(tag);
            match digits.parse::<Revision>() {
                Ok(revision) if digits.bytes().all(|b| b.is_ascii_digit()) => {
                    Ok(Precondition::Revision(revision))
                }
                _ => Err(format!(
                    "bad request: If-Match must be one revision such as \"42\" (got {tag})"
                )),
            }
        }
    }
}

fn precondition_failed(current: Revision) -> Response {
    if current == 0 {
        text(
            StatusCode::PRECONDITION_FAILED,
            "precondition failed: the key does not exist",
        )
    } else {
        with_etag(
            text(
                StatusCode::PRECONDITION_FAILED,
                format!("precondition failed: the current revision is {current}"),
            ),
            current,
        )
    }
}

async fn put<S: Store>(store: &S, key: Bytes, headers: &HeaderMap, body: Body) -> Response {
    let precondition = match precondition(headers) {
        Ok(precondition) => precondition,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("value too large: the maximum is {VALUE_BYTES_MAX} bytes"),
        )
    };
    // Refuse a declared oversized body before reading any of it.
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > VALUE_BYTES_MAX as u64) {
        return too_large();
    }
    let value = match axum::body::to_bytes(body, VALUE_BYTES_MAX).await {
        // A body that arrived in one piece is a slice of the connection's read buffer (8 KiB or
        // more): kept as it is, every stored value would pin that whole buffer in the log and
        // the map (427 MB resident on a leader after 250k 100-byte writes, and fresh pages to
        // zero on every allocation). The value gets an allocation of its own size instead.
        Ok(value) => Bytes::copy_from_slice(&value),
        Err(error) => {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<LengthLimitError>());
            if over_limit {
                return too_large();
            }
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad request: could not read the body: {error}"),
            );
        }
    };
    let expect = match precondition {
        Precondition::None => None,
        Precondition::Absent => Some(0),
        // Revision 0 means "absent", which never matches an existing key.
        Precondition::Revision(0) => return precondition_failed(0),
        Precondition::Revision(revision) => Some(revision),
        Precondition::Exists => match store.read(key.clone(), Consistency::Linearizable).await {
            Ok(Some(entry)) => Some(entry.revision),
            Ok(None) => return precondition_failed(0),
            Err(error) => return store_error(error),
        },
    };
    match store.write(Op::Put { key, value, expect }).await {
        Ok(Outcome::Created { revision }) => with_etag(
            text(StatusCode::CREATED, format!("created, revision {revision}")),
            revision,
        ),
        Ok(Outcome::Updated { revision }) => with_etag(
            text(StatusCode::OK, format!("updated, revision {revision}")),
            revision,
        ),
        Ok(Outcome::Conflict { current }) => precondition_failed(current),
        Ok(other) => unexpected(other),
        Err(error) => store_error(error),
    }
}

async fn delete<S: Store>(store: &S, key: Bytes, headers: &HeaderMap) -> Response {
    if headers.contains_key(IF_MATCH) || headers.contains_key(IF_NONE_MATCH) {
        return text(
            StatusCode::BAD_REQUEST,
            "bad request: conditional DELETE is not supported",
        );
    }
    match store.write(Op::Delete { key }).await {
        Ok(Outcome::Deleted) => StatusCode::NO_CONTENT.into_response(),
        Ok(Outcome::NotFound) => text(StatusCode::NOT_FOUND, "not found"),
        Ok(other) => unexpected(other),
        Err(error) => store_error(error),
    }
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
    fn preconditions() {
        assert_eq!(precondition(&headers(&[])), Ok(Precondition::None));
        assert_eq!(
            precondition(&headers(&[("if-match", "\"7\"")])),
            Ok(Precondition::Revision(7))
        );
        assert_eq!(
            precondition(&headers(&[("if-match", "7")])),
            Ok(Precondition::Revision(7))
        );
        assert_eq!(
            precondition(&headers(&[("if-match", "*")])),
            Ok(Precondition::Exists)
        );
        assert_eq!(
            precondition(&headers(&[("if-none-match", "*")])),
            Ok(Precondition::Absent)
        );
        assert!(precondition(&headers(&[("if-match", "\"+7\"")])).is_err());
        assert!(precondition(&headers(&[("if-match", "\"1\", \"2\"")])).is_err());
        assert!(precondition(&headers(&[("if-none-match", "\"1\"")])).is_err());
        assert!(precondition(&headers(&[("if-match", "1"), ("if-none-match", "*")])).is_err());
    }

    #[test]
    fn stale_flag() {
        assert_eq!(consistency(None), Consistency::Linearizable);
        assert_eq!(consistency(Some("stale=true")), Consistency::Stale);
        assert_eq!(consistency(Some("x=1&stale")), Consistency::Stale);
        assert_eq!(consistency(Some("stale=false")), Consistency::Linearizable);
    }
}
