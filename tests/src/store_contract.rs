//! The [`StateStore`] contract, checked the same way against every implementation (embedded,
//! memory, Kubernetes): compare-and-swap on versions, versions never reused, namespaces apart,
//! listing by prefix in pages.

use modcsi::state::{StateStore, StoreError};

pub fn check(store: &dyn StateStore) {
    // Create only where absent.
    let v1 = store.put("ns", "a/1", b"one", None).unwrap();
    assert!(matches!(
        store.put("ns", "a/1", b"again", None),
        Err(StoreError::Conflict { current: Some(v) }) if v == v1
    ));
    // Replace only at the current version.
    let v2 = store.put("ns", "a/1", b"two", Some(v1)).unwrap();
    assert!(v2 > v1);
    assert!(matches!(
        store.put("ns", "a/1", b"stale", Some(v1)),
        Err(StoreError::Conflict { current: Some(v) }) if v == v2
    ));
    let entry = store.get("ns", "a/1").unwrap().unwrap();
    assert_eq!((entry.value.as_slice(), entry.version), (&b"two"[..], v2));
    // Delete at a version; a key written again gets a new version.
    assert!(matches!(
        store.delete("ns", "a/1", Some(v1)),
        Err(StoreError::Conflict { .. })
    ));
    store.delete("ns", "a/1", Some(v2)).unwrap();
    assert_eq!(store.get("ns", "a/1").unwrap(), None);
    store.delete("ns", "a/1", None).unwrap();
    let v3 = store.put("ns", "a/1", b"three", None).unwrap();
    assert!(v3 > v2, "a version is never reused");
    // Namespaces apart; listing by prefix, in pages.
    for key in ["a/2", "a/3", "b/1"] {
        store.put("ns", key, b"x", None).unwrap();
    }
    store.put("other", "a/9", b"x", None).unwrap();
    assert_eq!(store.get("other", "a/1").unwrap(), None);
    assert_eq!(
        store.list("ns", "a/", "", 10).unwrap(),
        ["a/1", "a/2", "a/3"]
    );
    assert_eq!(store.list("ns", "a/", "", 2).unwrap(), ["a/1", "a/2"]);
    assert_eq!(store.list("ns", "a/", "a/2", 2).unwrap(), ["a/3"]);
    assert_eq!(
        store.list("ns", "", "", 10).unwrap(),
        ["a/1", "a/2", "a/3", "b/1"]
    );
    // Entries: the same keys with their values and versions, in one read where the store can.
    let entries = store.entries("ns", "a/", "a/1", 10).unwrap();
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a/2", "a/3"]);
    assert_eq!(entries[0].1, store.get("ns", "a/2").unwrap().unwrap());
    let first = store.entries("ns", "", "", 1).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1.value, b"three");
    // Limits hold before anything is written.
    assert!(matches!(
        store.put("ns", "", b"x", None),
        Err(StoreError::TooLarge(_))
    ));
    assert!(matches!(
        store.put("ns", "big", &vec![0; modcsi::state::MAX_VALUE + 1], None),
        Err(StoreError::TooLarge(_))
    ));
}
