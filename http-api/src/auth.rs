//! Client authentication with API tokens (`Authorization: Bearer <token>`), optional.
//!
//! A tokens file (TOML) lists each token with a name and its scopes:
//!
//! ```toml
//! [[token]]
//! name = "app"
//! secret = "a long random string"   # at least 16 characters
//! scopes = ["read", "write"]
//!
//! [[token]]
//! name = "ops"
//! secret = "another long random string"
//! scopes = ["read", "admin"]
//! ```
//!
//! `read` allows `GET /kv/...`, `GET /ns/{ns}/kv/...` and `/cluster/...`; `write` allows
//! `PUT` and `DELETE` on `/kv/...` and `/ns/{ns}/kv/...`; `admin` allows `/admin/...`. Scopes do not imply each other. `/health` is
//! open to all. Tokens are kept as blake3 hashes and looked up by hash, so the time a
//! check takes says nothing about how close a guess was.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderMap, Method, header};
use serde::Deserialize;

use crate::ApiError;

/// Shortest token secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// The scope a request needs; `None` for the routes open to all.
    pub fn needed(method: &Method, path: &str) -> Option<Scope> {
        // The page and the description hold no data; the page asks for a token itself.
        if matches!(path, "/health" | "/ui" | "/openapi.json") {
            return None;
        }
        if path.starts_with("/admin/") || path == "/admin" || path == "/metrics" {
            return Some(Scope::Admin);
        }
        if crate::is_data_route(path) && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Some(Scope::Write);
        }
        Some(Scope::Read)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    secret: String,
    scopes: Vec<Scope>,
}

/// The tokens a node accepts.
#[derive(Debug)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], (String, Vec<Scope>)>,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    *blake3::hash(secret).as_bytes()
}

impl Tokens {
    /// Reads and checks a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        Tokens::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().replace('\n', " "))?;
        if file.token.is_empty() {
            return Err("no [[token]] in it: every request would be refused".into());
        }
        let mut by_hash = HashMap::new();
        for e in file.token {
            if e.secret.chars().count() < MIN_SECRET_CHARS {
                return Err(format!(
                    "token {:?}: the secret is shorter than {MIN_SECRET_CHARS} characters",
                    e.name
                ));
            }
            if e.scopes.is_empty() {
                return Err(format!("token {:?} has no scopes", e.name));
            }
            if by_hash
                .insert(digest(e.secret.as_bytes()), (e.name.clone(), e.scopes))
                .is_some()
            {
                return Err(format!("token {:?} repeats another token's secret", e.name));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// Whether the request's bearer token grants `needed`; the token's name when it does.
    pub fn check(&self, headers: &HeaderMap, needed: Scope) -> Result<&str, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated(
                "this node requires an API token: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthenticated("the Authorization header is not `Bearer <token>`".into()))?;
        let Some((name, scopes)) = self.by_hash.get(&digest(token.as_bytes())) else {
            return Err(ApiError::Unauthenticated("the API token is not valid".into()));
        };
        if !scopes.contains(&needed) {
            return Err(ApiError::Forbidden(format!(
                "token {name:?} lacks the `{}` scope this request needs",
                needed.as_str()
            )));
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const FILE: &str = r#"
        [[token]]
        name = "app"
        secret = "app-secret-0123456789"
        scopes = ["read", "write"]

        [[token]]
        name = "ops"
        secret = "ops-secret-0123456789"
        scopes = ["admin"]
    "#;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn scopes_are_enforced_per_route() {
        let tokens = Tokens::parse(FILE).unwrap();
        let app = bearer("app-secret-0123456789");
        let ops = bearer("ops-secret-0123456789");
        assert_eq!(tokens.check(&app, Scope::Write).unwrap(), "app");
        assert_eq!(tokens.check(&app, Scope::Admin).unwrap_err().code(), "forbidden");
        assert_eq!(tokens.check(&ops, Scope::Admin).unwrap(), "ops");
        assert_eq!(tokens.check(&ops, Scope::Read).unwrap_err().code(), "forbidden");
        assert_eq!(
            tokens
                .check(&bearer("app-secret-0123456788"), Scope::Read)
                .unwrap_err()
                .code(),
            "unauthenticated"
        );
        assert_eq!(
            tokens.check(&HeaderMap::new(), Scope::Read).unwrap_err().code(),
            "unauthenticated"
        );
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(tokens.check(&basic, Scope::Read).unwrap_err().status(), 401);

        assert_eq!(Scope::needed(&Method::GET, "/health"), None);
        assert_eq!(Scope::needed(&Method::GET, "/ui"), None);
        assert_eq!(Scope::needed(&Method::GET, "/openapi.json"), None);
        assert_eq!(Scope::needed(&Method::GET, "/metrics"), Some(Scope::Admin));
        assert_eq!(Scope::needed(&Method::GET, "/admin/overview"), Some(Scope::Admin));
        assert_eq!(Scope::needed(&Method::GET, "/kv/a"), Some(Scope::Read));
        assert_eq!(Scope::needed(&Method::PUT, "/kv/a"), Some(Scope::Write));
        assert_eq!(Scope::needed(&Method::DELETE, "/kv/a"), Some(Scope::Write));
        assert_eq!(Scope::needed(&Method::GET, "/ns/carts/kv/a"), Some(Scope::Read));
        assert_eq!(Scope::needed(&Method::PUT, "/ns/carts/kv/a"), Some(Scope::Write));
        assert_eq!(Scope::needed(&Method::DELETE, "/ns/carts/kv/a"), Some(Scope::Write));
        assert_eq!(Scope::needed(&Method::GET, "/cluster/members"), Some(Scope::Read));
        assert_eq!(Scope::needed(&Method::GET, "/admin/layout"), Some(Scope::Admin));
        assert_eq!(Scope::needed(&Method::POST, "/admin/layout/commit"), Some(Scope::Admin));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for (text, want) in [
            ("", "no [[token]]"),
            ("[[token]]\nname='a'\nsecret='short'\nscopes=['read']", "shorter"),
            (
                "[[token]]\nname='a'\nsecret='0123456789abcdefg'\nscopes=[]",
                "no scopes",
            ),
            (
                "[[token]]\nname='a'\nsecret='0123456789abcdefg'\nscopes=['root']",
                "unknown variant",
            ),
            (
                "[[token]]\nname='a'\nsecret='0123456789abcdefg'\nscopes=['read']\n[[token]]\nname='b'\nsecret='0123456789abcdefg'\nscopes=['read']",
                "repeats",
            ),
        ] {
            let e = Tokens::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
