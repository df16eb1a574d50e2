//! Items: a key together with its namespace, as the one string the node passes around
//! (coordinator, replica messages, hints, transfers, the replica store).
//!
//! A key of the `default` namespace is its own item, so everything stored and sent
//! before namespaces existed keeps its meaning. A key of another namespace is
//! `NUL ‖ namespace ‖ NUL ‖ key`. Namespace names never hold a NUL
//! ([`crate::namespace::check_name`]), so the second NUL ends the name. A `default` key
//! that itself begins with a NUL is written the long way (`NUL default NUL key`), so no
//! item has two readings.
//!
//! Where an item lives on the ring is [`position`]: the namespace is hashed with the key
//! ([`crate::hash::namespaced_position`]).

use std::borrow::Cow;

use crate::hash::namespaced_position;
use crate::namespace::DEFAULT;

/// Begins the item of a key outside `default`, and ends its namespace.
pub const MARK: char = '\0';

/// The item of `key` in `namespace`.
pub fn item<'a>(namespace: &str, key: &'a str) -> Cow<'a, str> {
    if namespace == DEFAULT && !key.starts_with(MARK) {
        return Cow::Borrowed(key);
    }
    let mut s = String::with_capacity(2 + namespace.len() + key.len());
    s.push(MARK);
    s.push_str(namespace);
    s.push(MARK);
    s.push_str(key);
    Cow::Owned(s)
}

/// The namespace and key of an item. Every string reads as some item: one that does not
/// begin with a marked namespace is a `default` key.
pub fn split(item: &str) -> (&str, &str) {
    if let Some(rest) = item.strip_prefix(MARK)
        && let Some((namespace, key)) = rest.split_once(MARK)
    {
        return (namespace, key);
    }
    (DEFAULT, item)
}

/// Whether `s` is how [`item`] writes its namespace and key (what a node sends; a
/// replica refuses anything else, so one key never travels under two spellings).
pub fn is_canonical(s: &str) -> bool {
    match s.strip_prefix(MARK).map(|rest| rest.split_once(MARK)) {
        // A `default` key that does not begin with a NUL.
        None => true,
        // A NUL with no namespace after it: a `default` key spelled short.
        Some(None) => false,
        // The long spelling is only for a `default` key that begins with a NUL.
        Some(Some((namespace, key))) => namespace != DEFAULT || key.starts_with(MARK),
    }
}

/// The namespace of an item.
pub fn namespace(item: &str) -> &str {
    split(item).0
}

/// Where an item lives on the ring.
pub fn position(item: &str) -> u64 {
    let (namespace, key) = split(item);
    namespaced_position(namespace, key.as_bytes())
}

/// The bytes an item is stored under after its position: the key itself for `default`
/// (as before namespaces, including a key that begins with a NUL), the item otherwise.
pub fn stored(item: &str) -> &[u8] {
    match split(item) {
        (DEFAULT, key) => key.as_bytes(),
        _ => item.as_bytes(),
    }
}

/// The item stored at `position` under `bytes` ([`stored`]), if they are one: a marked
/// namespace whose position matches, else a `default` key whose position matches.
pub fn from_stored(position: u64, bytes: &[u8]) -> Option<Cow<'_, str>> {
    let s = std::str::from_utf8(bytes).ok()?;
    let (namespace, key) = split(s);
    if namespace != DEFAULT && namespaced_position(namespace, key.as_bytes()) == position {
        return Some(Cow::Borrowed(s));
    }
    (crate::hash::key_position(bytes) == position).then(|| item(DEFAULT, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::key_position;
    use proptest::prelude::*;

    #[test]
    fn default_keys_are_their_own_items() {
        for key in ["k", "carts/42", "a\0b", "ünïcode"] {
            assert_eq!(item(DEFAULT, key), key);
            assert_eq!(split(key), (DEFAULT, key));
            assert_eq!(position(key), key_position(key.as_bytes()));
            assert_eq!(stored(key), key.as_bytes());
        }
    }

    #[test]
    fn a_default_key_that_begins_with_a_nul_is_written_the_long_way_and_stored_as_before() {
        let key = "\0carts\0k";
        let it = item(DEFAULT, key);
        assert_eq!(it, "\0default\0\0carts\0k");
        assert_eq!(split(&it), (DEFAULT, key));
        assert_ne!(it, item("carts", "k"), "not the key k of carts");
        assert_eq!(position(&it), key_position(key.as_bytes()));
        assert_eq!(stored(&it), key.as_bytes(), "where builds before namespaces stored it");
        assert_eq!(from_stored(position(&it), stored(&it)).unwrap(), it);
        assert!(is_canonical(&it));
        assert_eq!(
            split(key),
            ("carts", "k"),
            "the short spelling reads as the key k of carts"
        );
        assert!(
            !is_canonical("\0no-second-nul"),
            "a default key with a NUL, spelled short"
        );
        assert!(!is_canonical("\0default\0k"), "k spelled the long way");
    }

    #[test]
    fn namespaced_items_place_and_store_by_namespace_and_key() {
        let it = item("carts", "k");
        assert_eq!(it, "\0carts\0k");
        assert_eq!(split(&it), ("carts", "k"));
        assert_eq!(namespace(&it), "carts");
        assert_eq!(position(&it), namespaced_position("carts", b"k"));
        assert_eq!(stored(&it), it.as_bytes());
        assert_eq!(from_stored(position(&it), stored(&it)).unwrap(), it);
        // Bytes under a position that is not theirs are no item.
        assert_eq!(from_stored(key_position(b"k"), it.as_bytes()), None);
        assert_eq!(from_stored(0, b"k"), None);
        assert_eq!(from_stored(key_position(b"\xff"), b"\xff"), None, "not UTF-8");
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![Just(DEFAULT.to_string()), "[a-z0-9][a-z0-9_-]{0,8}"]
    }

    fn key() -> impl Strategy<Value = String> {
        // NULs and marks anywhere, including first.
        prop::collection::vec(prop_oneof![Just('\0'), Just('a'), Just('/'), any::<char>()], 1..12)
            .prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        /// Every (namespace, key) has one item, read back as itself, stored and found
        /// again under its position; two different pairs never share an item.
        #[test]
        fn items_round_trip_and_never_collide(a in (name(), key()), b in (name(), key())) {
            for (ns, k) in [&a, &b] {
                let it = item(ns, k);
                prop_assert_eq!(split(&it), (ns.as_str(), k.as_str()));
                prop_assert!(is_canonical(&it));
                prop_assert_eq!(position(&it), namespaced_position(ns, k.as_bytes()));
                let back = from_stored(position(&it), stored(&it));
                prop_assert_eq!(back.as_deref(), Some(&*it));
            }
            if a != b {
                prop_assert_ne!(item(&a.0, &a.1), item(&b.0, &b.1));
            }
        }
    }
}
