//! Which namespace a data request names, and the settings it runs with: `default` (the
//! node's own settings) or an entry of the namespace table that is active; and the
//! check of an item (a key with its namespace) another node sent ([`check_item`]).
//!
//! A namespace serves data once every owner of the current layout holds its definition
//! (`dynakv_ring::namespace::State::Active`); until then its data routes answer 503
//! `namespace_pending`, so no two owners place or merge its keys by different
//! definitions. Namespaces keep the cluster's N for now: their keys share the replica
//! sets, Merkle trees, transfers and hints of `default`. A namespace created with another
//! n is in the table but serves no data yet (409 `namespace_unsupported`): its keys need
//! replica sets, trees and transfers of their own (docs/design/namespaces.md). Neither
//! does one with an expiry (`ttl_s`): values do not expire yet, and a namespace that
//! kept them past their expiry would break its promise.

use dynakv_crdt::ConflictMode;
use dynakv_http_api::ApiError;
use dynakv_ring::namespace::{self, Conflict, DEFAULT, Entry, NamespaceError, State};

use crate::local::{Local, Settings};
use crate::roles::edge::namespace_error;

/// A data route of a namespace that is not active yet.
pub const NAMESPACE_PENDING: &str = "namespace_pending";
/// A data route of a namespace this build does not serve data in yet: one whose n
/// differs from the cluster's, or one with an expiry.
pub const NAMESPACE_UNSUPPORTED: &str = "namespace_unsupported";

/// What a data request needs of its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The namespace's name (`default` for `/kv`).
    pub name: &'a str,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub pr: usize,
    pub pw: usize,
    pub mode: ConflictMode,
}

impl<'a> Scope<'a> {
    /// `default`: the node's settings.
    pub fn default_of(settings: &Settings) -> Scope<'static> {
        Scope {
            name: DEFAULT,
            n: settings.n,
            r: settings.r,
            w: settings.w,
            pr: settings.pr,
            pw: settings.pw,
            mode: settings.mode,
        }
    }

    fn of(name: &'a str, e: &Entry) -> Scope<'a> {
        Scope {
            name,
            n: e.fixed.n.into(),
            r: e.tunables.r.into(),
            w: e.tunables.w.into(),
            pr: e.tunables.pr.into(),
            pw: e.tunables.pw.into(),
            mode: match e.fixed.conflict {
                Conflict::Mv => ConflictMode::Mv,
                Conflict::Lww => ConflictMode::Lww,
            },
        }
    }
}

/// How a data request for `name` in the table may go on: the pure decision behind
/// [`resolve`]. `owners` are the current layout's; `cluster_n` is the cluster's N.
pub fn decide<'a>(
    name: &'a str,
    entry: Option<&Entry>,
    state: Option<State>,
    cluster_n: usize,
) -> Result<Scope<'a>, ApiError> {
    let (Some(entry), Some(state)) = (entry, state) else {
        return Err(namespace_error(NamespaceError::Unknown(name.into()).into()));
    };
    if usize::from(entry.fixed.n) != cluster_n {
        return Err(ApiError::Namespace {
            status: 409,
            code: NAMESPACE_UNSUPPORTED,
            message: format!(
                "namespace {name:?} keeps n = {} replicas per key; this build serves data only in namespaces with \
                 the cluster's n ({cluster_n}): the table holds it, its data routes do not work yet",
                entry.fixed.n
            ),
        });
    }
    if let Some(ttl) = entry.tunables.ttl_s {
        return Err(ApiError::Namespace {
            status: 409,
            code: NAMESPACE_UNSUPPORTED,
            message: format!(
                "namespace {name:?} has an expiry (ttl_s = {ttl}); this build does not expire values yet, so it \
                 serves no data in such a namespace rather than keep values past their expiry (PATCH ttl_s to null \
                 to use it)"
            ),
        });
    }
    if state == State::Pending {
        return Err(ApiError::Namespace {
            status: 503,
            code: NAMESPACE_PENDING,
            message: format!(
                "namespace {name:?} is not active yet: some owner of the current layout has not heard of it (it \
                 serves data once every owner holds it; an owner that is down holds it up until it is back or \
                 replaced in the layout)"
            ),
        });
    }
    Ok(Scope::of(name, entry))
}

/// The namespace a data request names (`None`: `default`) and its settings, or why the
/// request cannot go on: a bad name (400 `bad_namespace`), an unknown one (404
/// `unknown_namespace`), one not active yet (503 `namespace_pending`), one with another
/// n or an expiry (409 `namespace_unsupported`).
pub fn resolve<'a>(local: &Local, name: Option<&'a str>) -> Result<Scope<'a>, ApiError> {
    let name = match name {
        None | Some(DEFAULT) => return Ok(Scope::default_of(&local.settings)),
        Some(name) => name,
    };
    namespace::check_name(name).map_err(|e| namespace_error(e.into()))?;
    let table = local.catalog.table();
    let view = local.cluster.view();
    decide(
        name,
        table.get(name),
        table.state(name, view.current().owners.keys()),
        local.settings.n,
    )
}

/// An item (a key with its namespace, `dynakv_ring::item`) as a peer sent it: spelled
/// as nodes spell it, so one key never travels under two spellings, with a namespace
/// name and a key a client could have sent.
pub fn check_item(item: &str) -> Result<&str, ApiError> {
    let (ns, key) = dynakv_ring::item::split(item);
    let bad = |why: String| {
        Err(ApiError::BadRequest(format!(
            "malformed key in a replica message: {why}"
        )))
    };
    if !dynakv_ring::item::is_canonical(item) {
        return bad("not spelled as nodes spell it".into());
    }
    if ns != dynakv_ring::namespace::DEFAULT
        && let Err(e) = dynakv_ring::namespace::check_name(ns)
    {
        return bad(e.to_string());
    }
    if key.is_empty() || key.len() > dynakv_http_api::MAX_KEY_BYTES {
        return bad(format!("a key of {} bytes", key.len()));
    }
    Ok(item)
}

/// The error codes of the data routes' namespaces, with their statuses.
pub fn data_codes() -> Vec<(&'static str, u16)> {
    vec![
        (crate::roles::edge::BAD_NAMESPACE, 400),
        (crate::roles::edge::UNKNOWN_NAMESPACE, 404),
        (NAMESPACE_PENDING, 503),
        (NAMESPACE_UNSUPPORTED, 409),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_ring::NodeId;
    use dynakv_ring::layout::Stamp;
    use dynakv_ring::namespace::{Fixed, Tunables};
    use std::collections::BTreeSet;

    fn entry(n: u8, conflict: Conflict) -> Entry {
        let stamp = Stamp {
            at_ms: 1,
            by: NodeId::new("n1").unwrap(),
        };
        Entry {
            fixed: Fixed {
                n,
                conflict,
                datatype: None,
            },
            created: stamp.clone(),
            tunables: Tunables {
                r: 1,
                w: 3,
                pr: 1,
                pw: 2,
                ttl_s: None,
            },
            tuned: stamp,
            holders: BTreeSet::new(),
        }
    }

    #[test]
    fn a_data_request_runs_with_an_active_namespaces_own_settings() {
        let e = entry(3, Conflict::Lww);
        let s = decide("carts", Some(&e), Some(State::Active), 3).unwrap();
        assert_eq!(
            s,
            Scope {
                name: "carts",
                n: 3,
                r: 1,
                w: 3,
                pr: 1,
                pw: 2,
                mode: ConflictMode::Lww
            }
        );
    }

    #[test]
    fn unknown_pending_and_other_n_namespaces_are_refused_with_their_codes() {
        let code = |r: Result<Scope, ApiError>| {
            let e = r.unwrap_err();
            (e.code().to_string(), e.status().as_u16())
        };
        let is = |code: &str, status: u16| (code.to_string(), status);
        assert_eq!(code(decide("x", None, None, 3)), is("unknown_namespace", 404));
        let e = entry(3, Conflict::Mv);
        assert_eq!(
            code(decide("x", Some(&e), Some(State::Pending), 3)),
            is("namespace_pending", 503)
        );
        let two = entry(2, Conflict::Mv);
        assert_eq!(
            code(decide("x", Some(&two), Some(State::Active), 3)),
            is("namespace_unsupported", 409)
        );
        let mut expiring = entry(3, Conflict::Mv);
        expiring.tunables.ttl_s = Some(60);
        assert_eq!(
            code(decide("x", Some(&expiring), Some(State::Active), 3)),
            is("namespace_unsupported", 409)
        );
        for (code, status) in data_codes() {
            assert!(!code.is_empty() && status >= 400);
        }
    }
}
