//! API keys: who may call `/api/v1`, read the dashboard and scrape `/metrics`. The probes and
//! the OpenAPI document (`/api/v1/openapi.json`) stay open.
//!
//! The keys come from `auth.api_keys`, each with a name and what it may do ([`KeyAccess`]:
//! everything, reads only, or the metrics only). Only their SHA-256 digests are kept in memory:
//! a request's token is hashed and compared with every digest in constant time, and the
//! matching key's name travels with the request (for the access log). Neither a key nor its
//! digest is ever logged or answered. With no keys configured everything is open, and
//! [`require_key`] lets every request through.
//!
//! A key comes as `Authorization: Bearer <key>`, or, so that a browser can open the dashboard,
//! as the password of HTTP Basic credentials (the user name is not checked): a 401 under
//! `/dashboard` asks the browser for them.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, AUTHORIZATION};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use sha2::{Digest, Sha256};

use crate::config::{ApiKeyConfig, KeyAccess};
use crate::error::ApiError;

/// The shortest key accepted in `auth.api_keys` or by `justin hash-key`.
pub const MIN_KEY_CHARS: usize = 16;

/// The longest key name.
const MAX_NAME_CHARS: usize = 64;

/// The prefix of the API's paths.
const API_PREFIX: &str = "/api/v1";
/// The prefix of the dashboard's pages.
pub const DASHBOARD_PREFIX: &str = "/dashboard";
/// The metrics' path.
pub const METRICS_PATH: &str = "/metrics";
/// The OpenAPI document's path: under the API's prefix, but open. It describes the routes and
/// holds no study data, and a team generating its client from a keyed service's URL should not
/// have to give the key to the generator.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The answer to a request without credentials.
pub const MISSING_MESSAGE: &str =
    "Authentication required: send an API key as Authorization: Bearer <key>.";
/// The answer to an `Authorization` header that is not `Bearer <key>`.
pub const MALFORMED_MESSAGE: &str = "Invalid credentials: Authorization must be Bearer <key>.";
/// The answer to a key that is not configured.
pub const INVALID_MESSAGE: &str = "Invalid credentials: the API key is not valid.";
/// The answer to a read-only key asking to change something.
pub const READ_ONLY_MESSAGE: &str =
    "Forbidden: this API key may only read (GET), not change anything.";
/// The answer to a metrics key asking for anything but `/metrics`.
pub const METRICS_ONLY_MESSAGE: &str = "Forbidden: this API key may only read /metrics.";

/// The name of the key a request was made with; stored in the request's extensions by
/// [`require_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(Arc<str>);

/// What the key a request was made with may do; stored in the request's extensions by
/// [`require_key`] next to its [`KeyName`] (absent when no keys are configured).
pub type RequestAccess = KeyAccess;

impl KeyName {
    /// The name as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

struct Entry {
    name: KeyName,
    digest: [u8; 32],
    access: KeyAccess,
}

/// The configured keys, as names and SHA-256 digests. Cheap to clone.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Arc<[Entry]>,
}

impl std::fmt::Debug for ApiKeys {
    // Names only: the digests stay out of anything printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl ApiKeys {
    /// Checks and digests `auth.api_keys`.
    ///
    /// # Errors
    /// A message naming the first entry that is not usable: a name that is empty, too long,
    /// has characters other than letters, digits, `-`, `_` and `.`, or is used twice; not
    /// exactly one of `sha256` and `key`; a `sha256` that is not 64 hex digits; a `key` that
    /// is too short or holds whitespace; the same key twice.
    pub fn from_config(config: &[ApiKeyConfig]) -> Result<Self, String> {
        let mut entries: Vec<Entry> = Vec::with_capacity(config.len());
        for (i, entry) in config.iter().enumerate() {
            let at = format!("auth.api_keys[{i}] ({:?})", entry.name);
            check_name(&entry.name).map_err(|why| format!("{at}: {why}"))?;
            let digest = match (&entry.sha256, &entry.key) {
                (Some(hex), None) => parse_digest(hex).ok_or_else(|| {
                    format!(
                        "{at}: sha256 must be 64 hex digits, the SHA-256 digest of the key \
                         (`justin hash-key` prints it)"
                    )
                })?,
                (None, Some(key)) => {
                    check_key(key).map_err(|why| format!("{at}: {why}"))?;
                    Sha256::digest(key.as_bytes()).into()
                }
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: give either sha256 or key, not both"))
                }
                (None, None) => {
                    return Err(format!(
                        "{at}: give the key's SHA-256 digest as sha256 (or the key as key)"
                    ))
                }
            };
            if let Some(j) = entries.iter().position(|e| e.name.as_str() == entry.name) {
                return Err(format!("{at}: auth.api_keys[{j}] has the same name"));
            }
            if let Some(j) = entries.iter().position(|e| e.digest == digest) {
                return Err(format!("{at}: auth.api_keys[{j}] has the same key"));
            }
            entries.push(Entry {
                name: KeyName(entry.name.as_str().into()),
                digest,
                access: entry.access,
            });
        }
        Ok(Self {
            entries: entries.into(),
        })
    }

    /// Whether no key is configured (the API is open).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys' names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The name of the key `token` is, if it is one of them.
    pub fn verify(&self, token: &str) -> Option<KeyName> {
        self.verify_with_access(token).map(|(name, _)| name)
    }

    /// The name of the key `token` is and what it may do, if it is one of them.
    pub fn verify_with_access(&self, token: &str) -> Option<(KeyName, KeyAccess)> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every digest is compared, each in constant time, so the time taken says nothing
        // about which key, or how much of one, matched.
        let mut found = None;
        for entry in self.entries.iter() {
            if same_digest(&entry.digest, &digest) && found.is_none() {
                found = Some((entry.name.clone(), entry.access));
            }
        }
        found
    }

    /// The name of the key an `Authorization` header carries.
    ///
    /// # Errors
    /// 401 saying whether the credentials are missing, malformed or not a configured key.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Result<KeyName, ApiError> {
        self.authenticate_with_access(header).map(|(name, _)| name)
    }

    /// The name of the key an `Authorization` header carries, as `Bearer <key>` or as the
    /// password of `Basic` credentials, and what the key may do.
    ///
    /// # Errors
    /// 401 saying whether the credentials are missing, malformed or not a configured key.
    pub fn authenticate_with_access(
        &self,
        header: Option<&HeaderValue>,
    ) -> Result<(KeyName, KeyAccess), ApiError> {
        let Some(header) = header else {
            return Err(ApiError::Unauthorized(MISSING_MESSAGE));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.trim().split_once(' '))
            .and_then(|(scheme, token)| {
                let token = token.trim();
                if scheme.eq_ignore_ascii_case("bearer") {
                    Some(token.to_owned())
                } else if scheme.eq_ignore_ascii_case("basic") {
                    basic_password(token)
                } else {
                    None
                }
            })
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized(MALFORMED_MESSAGE))?;
        self.verify_with_access(&token)
            .ok_or(ApiError::Unauthorized(INVALID_MESSAGE))
    }
}

/// The password of `Basic` credentials (base64 of `user:password`), when they decode.
fn basic_password(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// What part of the service a path belongs to, for the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/api/v1` and everything under it.
    Api,
    /// `/dashboard` and its pages.
    Dashboard,
    /// `/metrics`.
    Metrics,
    /// Everything else (`/healthz`, `/readyz`, the OpenAPI document, unknown paths): open.
    Open,
}

/// The area of `path` (as the router matches it, percent-decoding done).
pub fn area(path: &str) -> Area {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if path == OPENAPI_PATH {
        Area::Open
    } else if under(API_PREFIX) {
        Area::Api
    } else if under(DASHBOARD_PREFIX) {
        Area::Dashboard
    } else if path == METRICS_PATH {
        Area::Metrics
    } else {
        Area::Open
    }
}

/// Whether a request to `path` (as the router matches it, percent-decoding done) needs a key:
/// `/api/v1` and everything under it but the OpenAPI document, the dashboard and the metrics.
/// The document's `security` follows this rule too ([`crate::openapi`]).
pub fn requires_key(path: &str) -> bool {
    area(path) != Area::Open
}

/// Whether a key with `access` may make a request with `method` in `area`.
///
/// # Errors
/// 403 saying what the key may do.
pub fn permits(
    access: KeyAccess,
    area: Area,
    method: &actix_web::http::Method,
) -> Result<(), ApiError> {
    use actix_web::http::Method;
    match access {
        KeyAccess::Full => Ok(()),
        KeyAccess::Read if method == Method::GET || method == Method::HEAD => Ok(()),
        KeyAccess::Read => Err(ApiError::Forbidden(READ_ONLY_MESSAGE)),
        KeyAccess::Metrics if area == Area::Metrics => Ok(()),
        KeyAccess::Metrics => Err(ApiError::Forbidden(METRICS_ONLY_MESSAGE)),
    }
}

/// Middleware: when keys are configured, answers 401 to a request under `/api/v1`, the
/// dashboard or `/metrics` without a valid key and 403 to one whose key may not make it, and
/// records the key's [`KeyName`] and [`KeyAccess`] in the request's extensions otherwise.
///
/// # Errors
/// Only those of the inner service.
pub async fn require_key<B: MessageBody>(
    keys: ApiKeys,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    // The router's view of the path (percent-decoded), so that an encoded path reaching the
    // API's routes cannot pass as another one.
    let area = area(req.match_info().as_str());
    if keys.is_empty() || area == Area::Open {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let checked = keys
        .authenticate_with_access(req.headers().get(AUTHORIZATION))
        .and_then(|(name, access)| permits(access, area, req.method()).map(|()| (name, access)));
    match checked {
        Ok((name, access)) => {
            req.extensions_mut().insert(name);
            req.extensions_mut().insert(access);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => {
            let mut response = req.error_response(e);
            if area == Area::Dashboard && response.status() == 401 {
                // A browser asks its user for credentials only when offered Basic.
                response.headers_mut().insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="JustIn dashboard", charset="UTF-8""#),
                );
            }
            Ok(response.map_into_right_body())
        }
    }
}

/// The SHA-256 digest of a key, as the 64 lowercase hex digits `auth.api_keys` takes.
pub fn digest_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that a key is long enough and can be sent in a header.
///
/// # Errors
/// A message saying what is wrong with it (never the key).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.chars().count() < MIN_KEY_CHARS {
        return Err(format!(
            "key must be at least {MIN_KEY_CHARS} characters long (use a random one, e.g. \
             `openssl rand -hex 32`)"
        ));
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "key must consist of printable ASCII characters without spaces (it is sent in a \
             header)"
                .into(),
        );
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "name must be at most {MAX_NAME_CHARS} characters long"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("name may hold only letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

/// 64 hex digits, either case, as 32 bytes.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

/// Equality of two digests in time independent of where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "correct-horse-battery-staple";

    fn entry(name: &str, sha256: Option<&str>, key: Option<&str>) -> ApiKeyConfig {
        ApiKeyConfig {
            name: name.into(),
            sha256: sha256.map(Into::into),
            key: key.map(Into::into),
            access: KeyAccess::Full,
        }
    }

    fn error_of(entries: &[ApiKeyConfig]) -> String {
        ApiKeys::from_config(entries).unwrap_err()
    }

    #[test]
    fn a_key_given_plain_or_as_its_digest_is_recognised() {
        let digest = digest_hex(KEY);
        for keys in [
            vec![entry("app", None, Some(KEY))],
            vec![entry("app", Some(&digest), None)],
            vec![entry("app", Some(&digest.to_uppercase()), None)],
        ] {
            let keys = ApiKeys::from_config(&keys).unwrap();
            assert_eq!(keys.verify(KEY).unwrap().as_str(), "app");
            assert!(keys.verify("correct-horse-battery-stapl").is_none());
            assert!(keys.verify(&digest).is_none(), "the digest is not the key");
        }
    }

    #[test]
    fn the_matching_key_names_the_request() {
        let keys = ApiKeys::from_config(&[
            entry("old", None, Some("first-key-of-the-study")),
            entry("new", None, Some("second-key-of-the-study")),
        ])
        .unwrap();
        assert_eq!(
            keys.verify("second-key-of-the-study").unwrap().as_str(),
            "new"
        );
        assert_eq!(
            keys.verify("first-key-of-the-study").unwrap().as_str(),
            "old"
        );
        assert_eq!(keys.names().collect::<Vec<_>>(), ["old", "new"]);
        assert_eq!(format!("{keys:?}"), r#"["old", "new"]"#);
    }

    #[test]
    fn the_authorization_header_is_parsed() {
        let keys = ApiKeys::from_config(&[entry("app", None, Some(KEY))]).unwrap();
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        let message = |r: Result<KeyName, ApiError>| r.unwrap_err().to_string();
        assert_eq!(message(keys.authenticate(None)), MISSING_MESSAGE);
        for malformed in [
            "Bearer",
            "Bearer   ",
            "Basic !!",
            "Basic bm9jb2xvbg==",
            KEY,
            "Token x y",
        ] {
            assert_eq!(
                message(keys.authenticate(Some(&header(malformed)))),
                MALFORMED_MESSAGE,
                "{malformed:?}"
            );
        }
        assert_eq!(
            message(keys.authenticate(Some(&header("Bearer not-the-key")))),
            INVALID_MESSAGE
        );
        for good in [format!("Bearer {KEY}"), format!("bearer  {KEY} ")] {
            assert_eq!(
                keys.authenticate(Some(&header(&good))).unwrap().as_str(),
                "app"
            );
        }
    }

    #[test]
    fn unusable_entries_are_named() {
        let digest = digest_hex(KEY);
        let cases = [
            (vec![entry("", None, Some(KEY))], "name must not be empty"),
            (vec![entry("a b", None, Some(KEY))], "only letters"),
            (vec![entry(&"n".repeat(65), None, Some(KEY))], "at most 64"),
            (vec![entry("app", None, None)], "sha256"),
            (vec![entry("app", Some(&digest), Some(KEY))], "not both"),
            (vec![entry("app", Some("abc"), None)], "64 hex digits"),
            (
                vec![entry("app", Some(&digest.replace('a', "g")), None)],
                "64 hex digits",
            ),
            (vec![entry("app", None, Some("short"))], "at least 16"),
            (
                vec![entry("app", None, Some("has a space in the key"))],
                "without spaces",
            ),
            (
                vec![
                    entry("app", None, Some(KEY)),
                    entry("app", None, Some("another-long-key-1234")),
                ],
                "auth.api_keys[1] (\"app\"): auth.api_keys[0] has the same name",
            ),
            (
                vec![entry("a", None, Some(KEY)), entry("b", Some(&digest), None)],
                "auth.api_keys[1] (\"b\"): auth.api_keys[0] has the same key",
            ),
        ];
        for (entries, expected) in cases {
            let error = error_of(&entries);
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
            assert!(error.starts_with("auth.api_keys["), "{error}");
            assert!(!error.contains(KEY), "{error} shows the key");
        }
    }

    #[test]
    fn only_the_api_needs_a_key() {
        for path in [
            "/api/v1",
            "/api/v1/",
            "/api/v1/action",
            "/api/v1/nope/deeper",
            "/api/v1/openapi.json/",
            "/api/v1/openapi.jsonx",
            "/api/v1/OPENAPI.json",
        ] {
            assert!(requires_key(path), "{path}");
        }
        for path in [
            "/metrics",
            "/dashboard",
            "/dashboard/",
            "/dashboard/updates/x",
        ] {
            assert!(requires_key(path), "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/api/v1/openapi.json",
            "/",
            "/api",
            "/api/v10/action",
            "/api/v2",
            "/metricsx",
            "/metrics/x",
            "/dashboards",
        ] {
            assert!(!requires_key(path), "{path}");
        }
    }

    #[test]
    fn basic_credentials_carry_the_key_as_their_password() {
        use base64::Engine as _;
        let keys = ApiKeys::from_config(&[entry("app", None, Some(KEY))]).unwrap();
        let basic = |text: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
        };
        for user in ["", "team", "any:thing"] {
            let header = basic(&format!("{user}:{KEY}"));
            let found = keys.authenticate_with_access(Some(&header));
            // A user name holding ':' moves the split: the password is what follows the first.
            if user.contains(':') {
                assert!(found.is_err());
            } else {
                assert_eq!(found.unwrap().0.as_str(), "app", "{user:?}");
            }
        }
        let wrong = keys.authenticate_with_access(Some(&basic("team:not-the-key")));
        assert_eq!(wrong.unwrap_err().to_string(), INVALID_MESSAGE);
    }

    #[test]
    fn what_each_access_may_do() {
        use actix_web::http::Method;
        let all = [Area::Api, Area::Dashboard, Area::Metrics];
        for area in all {
            for method in [Method::GET, Method::POST, Method::PATCH] {
                assert!(permits(KeyAccess::Full, area, &method).is_ok());
            }
            assert!(permits(KeyAccess::Read, area, &Method::GET).is_ok());
            assert!(permits(KeyAccess::Read, area, &Method::HEAD).is_ok());
            let refused = permits(KeyAccess::Read, area, &Method::POST).unwrap_err();
            assert_eq!(refused.to_string(), READ_ONLY_MESSAGE);
        }
        assert!(permits(KeyAccess::Metrics, Area::Metrics, &Method::GET).is_ok());
        for area in [Area::Api, Area::Dashboard] {
            let refused = permits(KeyAccess::Metrics, area, &Method::GET).unwrap_err();
            assert_eq!(refused.to_string(), METRICS_ONLY_MESSAGE);
        }
    }

    #[test]
    fn digests_compare_whole() {
        let a: [u8; 32] = Sha256::digest(b"a").into();
        let mut b = a;
        assert!(same_digest(&a, &b));
        b[31] ^= 1;
        assert!(!same_digest(&a, &b));
        assert_eq!(digest_hex("abc").len(), 64);
        assert_eq!(
            parse_digest(&digest_hex("abc")),
            Some(Sha256::digest(b"abc").into())
        );
    }
}
