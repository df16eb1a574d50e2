//! Parsing what clients send: keys, query parameters and context tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dynakv_crdt::Context;
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// Longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest context token accepted, in characters. A token grows with the number of
/// writers of a key; this is far beyond any sane history and bounds decoding work.
pub const MAX_CONTEXT_CHARS: usize = 16 * 1024;
/// Version byte leading every context token.
const CONTEXT_TOKEN_VERSION: u8 = 1;

/// A validated key: non-empty UTF-8, at most [`MAX_KEY_BYTES`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    pub fn new(s: impl Into<String>) -> Result<Key, ApiError> {
        let s = s.into();
        if s.is_empty() {
            return Err(ApiError::BadKey("the key is empty".into()));
        }
        if s.len() > MAX_KEY_BYTES {
            return Err(ApiError::BadKey(format!(
                "the key is {} bytes; the limit is {MAX_KEY_BYTES}",
                s.len()
            )));
        }
        Ok(Key(s))
    }

    /// Decodes a percent-encoded path segment (the part after `/kv/`).
    pub fn from_path(raw: &str) -> Result<Key, ApiError> {
        // A `%` must start an escape (a literal one is `%25`); guessing what a broken
        // escape meant could store the value under a key the client did not name.
        let bytes = raw.as_bytes();
        if let Some(at) = bytes.iter().enumerate().position(|(i, &b)| {
            b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        }) {
            return Err(ApiError::BadKey(format!(
                "malformed percent-encoding at byte {at} of the path's key (a literal % is %25)"
            )));
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ApiError::BadKey("the key is not valid UTF-8 once percent-decoded".into()))?;
        Key::new(decoded.into_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Per-request quorum overrides from the query string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuorumParams {
    pub r: Option<usize>,
    pub w: Option<usize>,
    /// Of the `r` answers, how many must come from the key's own replicas (primaries).
    pub pr: Option<usize>,
    /// Of the `w` acknowledgements, how many must come from primaries.
    pub pw: Option<usize>,
}

/// Parses `r=` and `w=` (each between 1 and `n`) and `pr=` and `pw=` (each between 0 and
/// `n`; whether `pr` is at most the read's `r`, and `pw` at most the write's `w`, the
/// service checks, as it knows their defaults); `allowed` names the parameters this
/// route takes. Anything else is rejected so a typo (`W=1`) cannot silently do nothing.
pub fn parse_quorum_params(query: Option<&str>, n: usize, allowed: &[&str]) -> Result<QuorumParams, ApiError> {
    let mut params = QuorumParams::default();
    let Some(query) = query else {
        return Ok(params);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name).decode_utf8_lossy();
        let value = percent_decode_str(value).decode_utf8_lossy();
        let (slot, least) = match name.as_ref() {
            "r" if allowed.contains(&"r") => (&mut params.r, 1),
            "w" if allowed.contains(&"w") => (&mut params.w, 1),
            "pr" if allowed.contains(&"pr") => (&mut params.pr, 0),
            "pw" if allowed.contains(&"pw") => (&mut params.pw, 0),
            other => {
                return Err(ApiError::BadParameter(format!(
                    "unknown query parameter {other:?}; this route takes {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
        };
        if slot.is_some() {
            return Err(ApiError::BadParameter(format!("{name} is given twice")));
        }
        let parsed: usize = value.parse().map_err(|_| {
            ApiError::BadParameter(format!(
                "{name} must be a whole number between {least} and n ({n}), got {value:?}"
            ))
        })?;
        if parsed < least || parsed > n {
            return Err(ApiError::BadParameter(format!(
                "{name} must be between {least} and n ({n}), got {parsed}"
            )));
        }
        *slot = Some(parsed);
    }
    Ok(params)
}

/// The one query parameter of the key inspection routes: `ns=`, the key's namespace
/// (`None`: the `default` namespace). Anything else is refused.
pub fn parse_namespace_param(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut ns = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name).decode_utf8_lossy();
        if name != "ns" {
            return Err(ApiError::BadParameter(format!(
                "unknown query parameter {name:?}; this route takes ns"
            )));
        }
        if ns.is_some() {
            return Err(ApiError::BadParameter("ns is given twice".into()));
        }
        ns = Some(percent_decode_str(value).decode_utf8_lossy().into_owned());
    }
    Ok(ns)
}

/// Encodes a context as the opaque token clients carry in `X-Dynakv-Context`.
pub fn encode_context(ctx: &Context) -> String {
    let mut bytes = vec![CONTEXT_TOKEN_VERSION];
    bytes.extend(postcard::to_stdvec(ctx).expect("contexts always serialize"));
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_context(token: &str) -> Result<Context, ApiError> {
    let token = token.trim();
    if token.len() > MAX_CONTEXT_CHARS {
        return Err(ApiError::BadContext(format!(
            "token is {} characters; the limit is {MAX_CONTEXT_CHARS}",
            token.len()
        )));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ApiError::BadContext("token is not base64url".into()))?;
    match bytes.split_first() {
        Some((&CONTEXT_TOKEN_VERSION, rest)) => {
            let (ctx, left): (Context, &[u8]) =
                postcard::take_from_bytes(rest).map_err(|_| ApiError::BadContext("token does not decode".into()))?;
            if !left.is_empty() {
                return Err(ApiError::BadContext("token has trailing bytes".into()));
            }
            normalize(ctx)
        }
        Some((v, _)) => Err(ApiError::BadContext(format!("unknown token version {v}"))),
        None => Err(ApiError::BadContext("token is empty".into())),
    }
}

/// Largest counter a context may carry: far beyond any real history, far from overflow.
pub const MAX_CONTEXT_COUNTER: u64 = 1 << 48;
/// Most entries (actors plus loose dots) a context may carry.
pub const MAX_CONTEXT_ENTRIES: usize = 1024;

/// A decoded token comes from outside: check its bounds and rebuild it so internal
/// invariants hold even for a hand-made one.
fn normalize(ctx: Context) -> Result<Context, ApiError> {
    match ctx {
        Context::Mv(cc) => {
            let cloud: Vec<_> = cc.cloud().collect();
            if cc.vv().len() + cloud.len() > MAX_CONTEXT_ENTRIES {
                return Err(ApiError::BadContext("token has too many entries".into()));
            }
            let too_big = cc.vv().iter().any(|(_, c)| c > MAX_CONTEXT_COUNTER)
                || cloud.iter().any(|d| d.counter > MAX_CONTEXT_COUNTER);
            if too_big {
                return Err(ApiError::BadContext("token has an out-of-range counter".into()));
            }
            Ok(Context::Mv(dynakv_crdt::CausalContext::from_parts(
                cc.vv().clone(),
                cloud,
            )))
        }
        lww => Ok(lww),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_crdt::{Actor, CausalContext, Dot, Timestamp, VersionVector};
    use proptest::prelude::*;

    #[test]
    fn keys_are_percent_decoded_and_validated() {
        assert_eq!(Key::from_path("a%2Fb%20c").unwrap().as_str(), "a/b c");
        assert_eq!(Key::from_path("caf%C3%A9").unwrap().as_str(), "café");
        assert_eq!(Key::from_path("").unwrap_err().code(), "bad_key");
        assert_eq!(Key::from_path("%FF").unwrap_err().code(), "bad_key");
        for malformed in ["%", "a%2", "%zz", "100%", "%%41"] {
            let e = Key::from_path(malformed).unwrap_err();
            assert_eq!(e.code(), "bad_key", "{malformed}");
            assert!(e.to_string().contains("percent-encoding"), "{e}");
        }
        assert_eq!(Key::from_path("100%25").unwrap().as_str(), "100%");
        assert!(Key::from_path(&"k".repeat(1024)).is_ok());
        assert_eq!(Key::from_path(&"k".repeat(1025)).unwrap_err().code(), "bad_key");
    }

    #[test]
    fn quorum_params() {
        let ok = parse_quorum_params(Some("r=2"), 3, &["r"]).unwrap();
        assert_eq!(ok.r, Some(2));
        for bad in ["r=0", "r=4", "r=abc", "r=", "r=-1", "r=1&r=2", "x=1", "w=1"] {
            let e = parse_quorum_params(Some(bad), 3, &["r"]).unwrap_err();
            assert_eq!(e.code(), "bad_parameter", "{bad}");
        }
        let ok = parse_quorum_params(Some("w=2&pw=0"), 3, &["w", "pw"]).unwrap();
        assert_eq!((ok.w, ok.pw), (Some(2), Some(0)), "pw may be 0: no primary requirement");
        let ok = parse_quorum_params(Some("pr=3"), 3, &["r", "pr"]).unwrap();
        assert_eq!((ok.r, ok.pr), (None, Some(3)));
        for bad in ["pr=4", "pr=-1", "pr=x", "pw=1", "pr=1&pr=1"] {
            let e = parse_quorum_params(Some(bad), 3, &["r", "pr"]).unwrap_err();
            assert_eq!(e.code(), "bad_parameter", "{bad}");
        }
        assert_eq!(parse_quorum_params(None, 3, &["w"]).unwrap(), QuorumParams::default());
        assert_eq!(
            parse_quorum_params(Some(""), 3, &["w"]).unwrap(),
            QuorumParams::default()
        );
    }

    #[test]
    fn the_namespace_parameter() {
        assert_eq!(parse_namespace_param(None).unwrap(), None);
        assert_eq!(parse_namespace_param(Some("")).unwrap(), None);
        assert_eq!(
            parse_namespace_param(Some("ns=carts")).unwrap().as_deref(),
            Some("carts")
        );
        assert_eq!(parse_namespace_param(Some("ns=a%2Db")).unwrap().as_deref(), Some("a-b"));
        for bad in ["r=1", "ns=a&ns=b", "x"] {
            assert_eq!(
                parse_namespace_param(Some(bad)).unwrap_err().code(),
                "bad_parameter",
                "{bad}"
            );
        }
    }

    #[test]
    fn out_of_range_tokens_are_rejected() {
        let huge: VersionVector = [(Actor(1), u64::MAX)].into_iter().collect();
        let token = encode_context(&Context::Mv(CausalContext::from_vv(huge)));
        assert_eq!(decode_context(&token).unwrap_err().code(), "bad_context");
        let wide: VersionVector = (0..2000).map(|a| (Actor(a), 1)).collect();
        let token = encode_context(&Context::Mv(CausalContext::from_vv(wide)));
        assert_eq!(decode_context(&token).unwrap_err().code(), "bad_context");
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in ["", "!!!", "AA", "AQ", &"A".repeat(MAX_CONTEXT_CHARS + 1)] {
            assert_eq!(decode_context(bad).unwrap_err().code(), "bad_context", "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn context_tokens_round_trip(
            vv in prop::collection::btree_map(any::<u64>(), 1u64..1000, 0..5),
            cloud in prop::collection::vec((any::<u64>(), 1u64..1000), 0..4),
            ts in any::<u64>(),
            lww in any::<bool>(),
        ) {
            let ctx = if lww {
                Context::Lww(Timestamp(ts))
            } else {
                let vv: VersionVector = vv.into_iter().map(|(a, c)| (Actor(a), c)).collect();
                Context::Mv(CausalContext::from_parts(vv, cloud.into_iter().map(|(a, c)| Dot::new(Actor(a), c))))
            };
            let token = encode_context(&ctx);
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode_context(&token).unwrap(), ctx);
        }

        #[test]
        fn arbitrary_tokens_never_panic(s in "\\PC{0,64}") {
            let _ = decode_context(&s);
        }
    }
}
