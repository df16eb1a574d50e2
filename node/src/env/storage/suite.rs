//! One conformance suite, run against every engine.

use super::*;

fn engines() -> Vec<(&'static str, Box<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksStore::open(dir.path(), false, 0).unwrap();
    vec![
        ("memory", Box::new(MemoryStore::new()), None),
        ("rocksdb", Box::new(rocks), Some(dir)),
    ]
}

fn collect(store: &dyn Store, space: Space, from: &[u8], to: Option<&[u8]>) -> Vec<KeyValue> {
    store.scan(space, from, to).collect::<Result<_, _>>().unwrap()
}

#[test]
fn get_put_delete() {
    for (name, s, _dir) in engines() {
        assert_eq!(s.get(Space::Data, b"k").unwrap(), None, "{name}");
        s.put(Space::Data, b"k", b"v1").unwrap();
        assert_eq!(s.get(Space::Data, b"k").unwrap().as_deref(), Some(&b"v1"[..]), "{name}");
        s.put(Space::Data, b"k", b"v2").unwrap();
        assert_eq!(s.get(Space::Data, b"k").unwrap().as_deref(), Some(&b"v2"[..]), "{name}");
        s.delete(Space::Data, b"k").unwrap();
        assert_eq!(s.get(Space::Data, b"k").unwrap(), None, "{name}");
        s.delete(Space::Data, b"never-there").unwrap();
    }
}

#[test]
fn spaces_are_separate() {
    for (name, s, _dir) in engines() {
        s.put(Space::Data, b"k", b"data").unwrap();
        s.put(Space::Meta, b"k", b"meta").unwrap();
        assert_eq!(
            s.get(Space::Data, b"k").unwrap().as_deref(),
            Some(&b"data"[..]),
            "{name}"
        );
        assert_eq!(
            s.get(Space::Meta, b"k").unwrap().as_deref(),
            Some(&b"meta"[..]),
            "{name}"
        );
        assert_eq!(collect(&*s, Space::Meta, b"", None).len(), 1, "{name}");
    }
}

#[test]
fn batches_apply_in_order() {
    for (name, s, _dir) in engines() {
        s.write(vec![
            Op::Put(Space::Data, b"a".to_vec(), b"1".to_vec()),
            Op::Put(Space::Data, b"b".to_vec(), b"2".to_vec()),
            Op::Delete(Space::Data, b"a".to_vec()),
            Op::Put(Space::Meta, b"m".to_vec(), b"3".to_vec()),
        ])
        .unwrap();
        assert_eq!(s.get(Space::Data, b"a").unwrap(), None, "{name}");
        assert_eq!(s.get(Space::Data, b"b").unwrap().as_deref(), Some(&b"2"[..]), "{name}");
        assert_eq!(s.get(Space::Meta, b"m").unwrap().as_deref(), Some(&b"3"[..]), "{name}");
    }
}

#[test]
fn scans_are_ordered_and_bounded() {
    for (name, s, _dir) in engines() {
        for k in [&b"b"[..], b"a", b"c\x00", b"c", b"d", b"\xff\xff"] {
            s.put(Space::Data, k, k).unwrap();
        }
        let keys = |from: &[u8], to: Option<&[u8]>| -> Vec<Vec<u8>> {
            collect(&*s, Space::Data, from, to)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(
            keys(b"", None),
            vec![
                b"a".to_vec(),
                b"b".to_vec(),
                b"c".to_vec(),
                b"c\x00".to_vec(),
                b"d".to_vec(),
                b"\xff\xff".to_vec()
            ],
            "{name}"
        );
        assert_eq!(
            keys(b"b", Some(b"d")),
            vec![b"b".to_vec(), b"c".to_vec(), b"c\x00".to_vec()],
            "{name}"
        );
        assert_eq!(keys(b"bb", Some(b"c")), Vec::<Vec<u8>>::new(), "{name}");
        // Values come back with their keys.
        assert!(
            collect(&*s, Space::Data, b"", None).iter().all(|(k, v)| k == v),
            "{name}"
        );
    }
}

#[test]
fn rocksdb_data_survives_reopen_and_the_directory_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksStore::open(dir.path(), false, 0).unwrap();
        s.put(Space::Data, b"k", b"v").unwrap();
        assert!(matches!(
            RocksStore::open(dir.path(), false, 0),
            Err(StorageError::Locked(_))
        ));
    }
    let s = RocksStore::open(dir.path(), true, 0).unwrap();
    assert_eq!(s.get(Space::Data, b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
