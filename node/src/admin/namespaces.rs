//! `/admin/namespaces`: the namespaces this node knows, created and tuned here, shown
//! with their state (`active` once every owner of the current layout holds them).

use std::collections::BTreeSet;

use dynakv_crdt::ConflictMode;
use dynakv_http_api::ApiError;
use dynakv_http_api::admin::{Namespace, NamespacePatch, NamespaceSpec, Namespaces};
use dynakv_ring::NodeId;
use dynakv_ring::layout::Stamp;
use dynakv_ring::namespace::{self, Conflict, Created, DEFAULT, Entry, Fixed, NamespaceError, State, Tunables};

use super::{Admin, object};
use crate::config::MAX_N;
use crate::roles::edge::{self, namespace_error};
use crate::state::catalog::CatalogError;

fn conflict_name(c: Conflict) -> &'static str {
    match c {
        Conflict::Mv => "mv",
        Conflict::Lww => "lww",
    }
}

impl Admin {
    /// The owners of the current layout: a namespace is active once they all hold it.
    fn owners(&self) -> BTreeSet<NodeId> {
        self.local.cluster.view().current().owners.keys().cloned().collect()
    }

    /// `default`: the nodes' own settings, always active.
    fn default_namespace(&self) -> Namespace {
        let s = &self.local.settings;
        Namespace {
            name: DEFAULT.to_string(),
            n: s.n as u8,
            r: s.r as u8,
            w: s.w as u8,
            pr: s.pr as u8,
            pw: s.pw as u8,
            conflict: s.mode.to_string(),
            datatype: None,
            ttl_s: None,
            state: "active".into(),
        }
    }

    fn shown(name: &str, e: &Entry, state: State) -> Namespace {
        Namespace {
            name: name.to_string(),
            n: e.fixed.n,
            r: e.tunables.r,
            w: e.tunables.w,
            pr: e.tunables.pr,
            pw: e.tunables.pw,
            conflict: conflict_name(e.fixed.conflict).to_string(),
            datatype: e.fixed.datatype.clone(),
            ttl_s: e.tunables.ttl_s,
            state: match state {
                State::Active => "active",
                State::Pending => "pending",
            }
            .to_string(),
        }
    }

    /// `GET /admin/namespaces`: `default` first, then the others by name.
    pub(super) fn list_namespaces(&self) -> Namespaces {
        let table = self.local.catalog.table();
        let owners = self.owners();
        let mut namespaces = vec![self.default_namespace()];
        namespaces.extend(table.iter().map(|(name, e)| {
            let state = table.state(name, &owners).expect("listed");
            Admin::shown(name, e, state)
        }));
        Namespaces { namespaces }
    }

    /// `GET /admin/namespaces/{ns}`.
    pub(super) fn show_namespace(&self, name: &str) -> Result<Namespace, ApiError> {
        namespace::check_name(name).map_err(|e| namespace_error(e.into()))?;
        if name == DEFAULT {
            return Ok(self.default_namespace());
        }
        let table = self.local.catalog.table();
        let owners = self.owners();
        match (table.get(name), table.state(name, &owners)) {
            (Some(e), Some(state)) => Ok(Admin::shown(name, e, state)),
            _ => Err(namespace_error(NamespaceError::Unknown(name.into()).into())),
        }
    }

    /// The namespace a key inspection names (`None`: `default`) and its n: any
    /// namespace in the table, active or not.
    pub(super) fn inspected<'a>(&self, name: Option<&'a str>) -> Result<(&'a str, usize), ApiError> {
        let name = match name {
            None | Some(DEFAULT) => return Ok((DEFAULT, self.local.settings.n)),
            Some(name) => name,
        };
        namespace::check_name(name).map_err(|e| namespace_error(e.into()))?;
        match self.local.catalog.table().get(name) {
            Some(e) => Ok((name, e.fixed.n.into())),
            None => Err(namespace_error(NamespaceError::Unknown(name.into()).into())),
        }
    }

    /// A stamp for a change made here now.
    fn stamp(&self) -> Stamp {
        Stamp {
            at_ms: self.local.clock.wall_ms(),
            by: self.local.id().clone(),
        }
    }

    /// `PUT /admin/namespaces/{ns}`: the namespace, and whether it is new.
    pub(super) async fn make_namespace(&self, name: &str, body: &[u8]) -> Result<(bool, Namespace), ApiError> {
        namespace::check_name(name).map_err(|e| namespace_error(e.into()))?;
        let spec: NamespaceSpec = if body.iter().all(u8::is_ascii_whitespace) {
            NamespaceSpec::default()
        } else {
            object(
                body,
                "a JSON object with any of n, r, w, pr, pw, conflict (\"mv\" or \"lww\"), datatype (null) \
                 and ttl_s",
            )?
        };
        let s = &self.local.settings;
        let conflict = match spec.conflict.as_deref() {
            None => match s.mode {
                ConflictMode::Mv => Conflict::Mv,
                ConflictMode::Lww => Conflict::Lww,
            },
            Some("mv") => Conflict::Mv,
            Some("lww") => Conflict::Lww,
            Some(other) => {
                return Err(ApiError::BadParameter(format!(
                    "conflict must be \"mv\" or \"lww\", got {other:?}"
                )));
            }
        };
        // The settings' n (and so r and w) is at most MAX_N.
        let n = spec.n.unwrap_or(s.n as u8);
        if usize::from(n) > MAX_N {
            return Err(ApiError::BadParameter(format!(
                "n = {n}: at most {MAX_N} replicas per key"
            )));
        }
        let fixed = Fixed {
            n,
            conflict,
            datatype: spec.datatype.clone(),
        };
        // Quorums not given: the nodes' own, within this namespace's n.
        let r = spec.r.unwrap_or(n.min(s.r as u8));
        let w = spec.w.unwrap_or(n.min(s.w as u8));
        let tunables = Tunables {
            r,
            w,
            pr: spec.pr.unwrap_or(r.min(s.pr as u8)),
            pw: spec.pw.unwrap_or(w.min(s.pw as u8)),
            ttl_s: spec.ttl_s,
        };
        if name == DEFAULT {
            let ours = self.default_namespace();
            let same = (
                fixed.n,
                conflict_name(conflict),
                &fixed.datatype,
                r,
                w,
                tunables.pr,
                tunables.pw,
                spec.ttl_s,
            ) == (
                ours.n,
                ours.conflict.as_str(),
                &None,
                ours.r,
                ours.w,
                ours.pr,
                ours.pw,
                None,
            );
            return if same {
                Ok((false, ours))
            } else {
                Err(namespace_error(
                    NamespaceError::Fixed {
                        name: DEFAULT.into(),
                        what: "definition (the default namespace's is the nodes' settings)",
                    }
                    .into(),
                ))
            };
        }
        let owners = self.owners();
        namespace::check(&fixed, &tunables, owners.len()).map_err(|e| namespace_error(e.into()))?;
        if self.local.catalog.table().get(name).is_none() {
            if !owners.contains(self.local.id()) {
                return Err(edge::owner_required(&owners));
            }
            self.hear_every_owner(name).await?;
        }
        let created = self
            .local
            .catalog
            .create(name, fixed, tunables, self.stamp())
            .map_err(namespace_error)?;
        Ok((created == Created::New, self.show_namespace(name)?))
    }

    /// Before a creation: a gossip exchange with every other owner of every layout in
    /// use, so this node knows every namespace they know. A node that became an owner
    /// after a namespace went active, and has not heard of it yet, would otherwise create
    /// a rival with its own stamp, which wins if its clock is behind. Every owner of the
    /// layout the namespace went active in holds it; while that layout is in use, they
    /// are asked here, and an owner kept across layout changes keeps it. (What is left:
    /// every one of those owners replaced, their layout retired, and none of the new
    /// owners having heard of the namespace through gossip in all that time:
    /// docs/design/namespaces.md.) An owner that does not answer fails the creation
    /// (503): the namespace could not become active without it anyway.
    async fn hear_every_owner(&self, name: &str) -> Result<(), ApiError> {
        let owners = self.local.cluster.peers();
        let asks = owners.iter().map(|owner| async move {
            crate::roles::services::gossip::exchange_with(&self.local, &owner.addr)
                .await
                .map_err(|e| format!("{} ({e})", owner.id))
        });
        let silent: Vec<String> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        Err(ApiError::Unavailable(format!(
            "namespace {name:?} is created only once every owner of the layouts in use has told this node the \
             namespaces it knows (so no other creation of the name exists); no answer from {}: retry once they \
             are back, or replace them in the layout",
            silent.join(", ")
        )))
    }

    /// `PATCH /admin/namespaces/{ns}`: new quorums or expiry.
    pub(super) fn set_namespace(&self, name: &str, body: &[u8]) -> Result<Namespace, ApiError> {
        namespace::check_name(name).map_err(|e| namespace_error(e.into()))?;
        let patch: NamespacePatch = object(body, "a JSON object with any of r, w, pr, pw and ttl_s")?;
        for (what, given) in [
            ("n", patch.n.is_some()),
            ("conflict", patch.conflict.is_some()),
            ("datatype", patch.datatype.is_some()),
        ] {
            if given {
                return Err(namespace_error(CatalogError::Refused(NamespaceError::Fixed {
                    name: name.into(),
                    what,
                })));
            }
        }
        if name == DEFAULT {
            return Err(namespace_error(
                NamespaceError::Fixed {
                    name: DEFAULT.into(),
                    what: "definition (the default namespace's is the nodes' settings: --r, --w, --pr, --pw)",
                }
                .into(),
            ));
        }
        let table = self.local.catalog.table();
        let entry = table
            .get(name)
            .ok_or_else(|| namespace_error(NamespaceError::Unknown(name.into()).into()))?;
        let old = &entry.tunables;
        let tunables = Tunables {
            r: patch.r.unwrap_or(old.r),
            w: patch.w.unwrap_or(old.w),
            pr: patch.pr.unwrap_or(old.pr),
            pw: patch.pw.unwrap_or(old.pw),
            ttl_s: patch.ttl_s.unwrap_or(old.ttl_s),
        };
        namespace::check(
            &entry.fixed,
            &tunables,
            self.owners().len().max(usize::from(entry.fixed.n)),
        )
        .map_err(|e| namespace_error(e.into()))?;
        self.local
            .catalog
            .tune(name, tunables, self.stamp())
            .map_err(namespace_error)?;
        self.show_namespace(name)
    }
}
