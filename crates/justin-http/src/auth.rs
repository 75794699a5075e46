//! API keys: who may call `/api/v1`.
//!
//! The keys come from `auth.api_keys`, each with a name. Only their SHA-256 digests are kept in
//! memory: a request's bearer token is hashed and compared with every digest in constant time,
//! and the matching key's name travels with the request (for the access log). Neither a key nor
//! its digest is ever logged or answered. With no keys configured the API is open, and
//! [`require_key`] lets every request through.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, AUTHORIZATION};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use sha2::{Digest, Sha256};

use crate::config::ApiKeyConfig;
use crate::error::ApiError;

/// The shortest key accepted in `auth.api_keys` or by `justin hash-key`.
pub const MIN_KEY_CHARS: usize = 16;

/// The longest key name.
const MAX_NAME_CHARS: usize = 64;

/// The prefix of every path that needs a key.
const API_PREFIX: &str = "/api/v1";

/// The answer to a request without credentials.
pub const MISSING_MESSAGE: &str =
    "Authentication required: send an API key as Authorization: Bearer <key>.";
/// The answer to an `Authorization` header that is not `Bearer <key>`.
pub const MALFORMED_MESSAGE: &str = "Invalid credentials: Authorization must be Bearer <key>.";
/// The answer to a key that is not configured.
pub const INVALID_MESSAGE: &str = "Invalid credentials: the API key is not valid.";

/// The name of the key a request was made with; stored in the request's extensions by
/// [`require_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(Arc<str>);

impl KeyName {
    /// The name as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

struct Entry {
    name: KeyName,
    digest: [u8; 32],
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
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every digest is compared, each in constant time, so the time taken says nothing
        // about which key, or how much of one, matched.
        let mut found = None;
        for entry in self.entries.iter() {
            if same_digest(&entry.digest, &digest) && found.is_none() {
                found = Some(entry.name.clone());
            }
        }
        found
    }

    /// The name of the key an `Authorization` header carries.
    ///
    /// # Errors
    /// 401 saying whether the credentials are missing, malformed or not a configured key.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Result<KeyName, ApiError> {
        let Some(header) = header else {
            return Err(ApiError::Unauthorized(MISSING_MESSAGE));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized(MALFORMED_MESSAGE))?;
        self.verify(token)
            .ok_or(ApiError::Unauthorized(INVALID_MESSAGE))
    }
}

/// Whether a request to `path` (as the router matches it, percent-decoding done) needs a key:
/// `/api/v1` and everything under it.
pub fn requires_key(path: &str) -> bool {
    path.strip_prefix(API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Middleware: answers 401 to a request under `/api/v1` without a valid key when keys are
/// configured, and records the key's [`KeyName`] in the request's extensions otherwise.
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
    if keys.is_empty() || !requires_key(req.match_info().as_str()) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    match keys.authenticate(req.headers().get(AUTHORIZATION)) {
        Ok(name) => {
            req.extensions_mut().insert(name);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => Ok(req.error_response(e).map_into_right_body()),
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
        for malformed in ["Bearer", "Bearer   ", "Basic abc", KEY, "Token x y"] {
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
        ] {
            assert!(requires_key(path), "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/",
            "/api",
            "/api/v10/action",
            "/api/v2",
        ] {
            assert!(!requires_key(path), "{path}");
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
