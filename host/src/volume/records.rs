//! The host's record of the volumes it created, kept in the state store under `host/volumes`
//! by request name. It makes CreateVolume idempotent and ALREADY_EXISTS-correct for every
//! backend, stateless ones included: the same name with a compatible request is the recorded
//! volume; with another capacity, capability set, parameters or source it is refused.

use std::collections::BTreeMap;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::state::{Durability, StateStore, StoreError};
use crate::volume::types;

/// The store namespace of the records.
pub const NAMESPACE: &str = "host/volumes";

/// Now, in Unix seconds (what records and the audit's ages count in).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub id: String,
    pub required_bytes: u64,
    pub limit_bytes: u64,
    /// The requested capabilities, each in a canonical text form, sorted.
    pub capabilities: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    /// `snapshot:<id>` or `volume:<id>`.
    pub source: Option<String>,
    pub capacity_bytes: u64,
    pub context: BTreeMap<String, String>,
    pub topology: Vec<BTreeMap<String, String>>,
    /// When the volume was first recorded, in Unix seconds (none in records of hosts before
    /// the audit): how old a volume no PV names is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_unix: Option<i64>,
}

/// The parts of a request that must match a recorded volume of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestShape {
    pub required_bytes: u64,
    pub limit_bytes: u64,
    pub capabilities: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub source: Option<String>,
}

impl RequestShape {
    pub fn of(request: &types::CreateRequest) -> Self {
        let mut capabilities: Vec<String> = request
            .capabilities
            .iter()
            .map(|c| format!("{c:?}"))
            .collect();
        capabilities.sort();
        capabilities.dedup();
        Self {
            required_bytes: request.capacity.required_bytes,
            limit_bytes: request.capacity.limit_bytes,
            capabilities,
            parameters: request.parameters.iter().cloned().collect(),
            source: request.source.as_ref().map(|s| match s {
                types::ContentSource::Snapshot(id) => format!("snapshot:{id}"),
                types::ContentSource::Volume(id) => format!("volume:{id}"),
            }),
        }
    }
}

impl VolumeRecord {
    pub fn new(
        name: &str,
        shape: RequestShape,
        volume: &types::Volume,
        context: &BTreeMap<String, String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            id: volume.id.clone(),
            required_bytes: shape.required_bytes,
            limit_bytes: shape.limit_bytes,
            capabilities: shape.capabilities,
            parameters: shape.parameters,
            source: shape.source,
            capacity_bytes: volume.capacity_bytes,
            context: context.clone(),
            topology: volume
                .topology
                .iter()
                .map(|t| t.iter().cloned().collect())
                .collect(),
            created_unix: Some(now_unix()),
        }
    }

    /// Why a request of the same name is not this volume, or `None` when it is. The recorded
    /// volume satisfies a new capacity range when its size lies inside it.
    pub fn mismatch(&self, shape: &RequestShape) -> Option<String> {
        let fits = self.capacity_bytes >= shape.required_bytes
            && (shape.limit_bytes == 0 || self.capacity_bytes <= shape.limit_bytes);
        if !fits {
            return Some(format!(
                "it has {} bytes, outside the requested range [{}, {}]",
                self.capacity_bytes,
                shape.required_bytes,
                if shape.limit_bytes == 0 {
                    "unbounded".to_owned()
                } else {
                    shape.limit_bytes.to_string()
                }
            ));
        }
        if shape
            .capabilities
            .iter()
            .any(|c| !self.capabilities.contains(c))
        {
            return Some("it was created for other volume capabilities".into());
        }
        if self.parameters != shape.parameters {
            return Some("it was created with other parameters".into());
        }
        if self.source != shape.source {
            return Some("it was created from another content source".into());
        }
        None
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The records in the state store, with an in-memory index of ids and names (one host per
/// state directory, so the index cannot go stale).
///
/// A record is a check, never the answer: CreateVolume still asks the backend (idempotent by
/// contract) and answers with what it says, so the backend stays the source of truth for what
/// exists. That lets every record write happen after the RPC answers: one writer thread takes
/// them in order (with Kubernetes each is an API request, which waits on etcd's disk), and
/// reads see the writes still queued. A record lost in a host crash only forgoes one
/// ALREADY_EXISTS check; a removal lost in one leaves a stale record that the next create of
/// that name with the same request overwrites.
pub struct Records {
    shared: Arc<Shared>,
    writes: std::sync::mpsc::Sender<Write>,
}

struct Shared {
    store: Arc<dyn StateStore>,
    index: Mutex<Index>,
    /// Told when the queue empties.
    settled: std::sync::Condvar,
}

/// One queued write: the record of a name, or its removal (None).
struct Write {
    seq: u64,
    name: String,
    record: Option<VolumeRecord>,
}

#[derive(Default)]
struct Index {
    /// Volume id → request name.
    names: HashMap<String, String>,
    /// Recorded request names.
    recorded: HashSet<String>,
    /// Writes not yet in the store, by name: the newest (its sequence number) wins.
    queued: HashMap<String, (u64, Option<VolumeRecord>)>,
    next: u64,
}

/// Attempts at one write before it is given up (logged).
const ATTEMPTS: u32 = 5;

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, name: &str, record: Option<&VolumeRecord>) -> Result<(), StoreError> {
        let Some(record) = record else {
            return self
                .store
                .delete_with(NAMESPACE, name, None, Durability::Soon);
        };
        // Written as new, without a read first; a conflict gives the version to write at.
        let (value, mut expected) = (record.encode(), None);
        loop {
            match self
                .store
                .put_with(NAMESPACE, name, &value, expected, Durability::Soon)
            {
                Err(StoreError::Conflict { current }) => expected = current,
                other => return other.map(drop),
            }
        }
    }

    /// The writer: each queued write in order, retried a few times when the store cannot
    /// answer, then taken off the queue.
    fn run(&self, queue: std::sync::mpsc::Receiver<Write>) {
        for w in queue {
            let mut attempt = 0;
            while let Err(e) = self.write(&w.name, w.record.as_ref()) {
                attempt += 1;
                if attempt == ATTEMPTS {
                    tracing::error!(name = %w.name, "cannot write the volume record: {e}");
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100 << attempt));
            }
            let mut index = self.lock();
            if index
                .queued
                .get(&w.name)
                .is_some_and(|(seq, _)| *seq == w.seq)
            {
                index.queued.remove(&w.name);
            }
            if index.queued.is_empty() {
                self.settled.notify_all();
            }
        }
    }
}

/// Every volume record in `store` (unreadable ones left out).
pub fn all(store: &dyn StateStore) -> Result<Vec<VolumeRecord>, StoreError> {
    let mut records = vec![];
    let mut after = String::new();
    loop {
        let entries = store.entries(NAMESPACE, "", &after, 10_000)?;
        records.extend(
            entries
                .iter()
                .filter_map(|(_, e)| VolumeRecord::decode(&e.value).ok()),
        );
        match entries.last() {
            Some((last, _)) => after = last.clone(),
            None => return Ok(records),
        }
    }
}

impl Records {
    /// Loads the id index from the store and starts the writer.
    pub fn open(store: Arc<dyn StateStore>) -> Result<Self, StoreError> {
        let mut index = Index::default();
        for record in all(store.as_ref())? {
            index.recorded.insert(record.name.clone());
            index.names.insert(record.id, record.name);
        }
        let shared = Arc::new(Shared {
            store,
            index: Mutex::new(index),
            settled: std::sync::Condvar::new(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("modcsi-records".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("starting the record writer: {e}")))?;
        Ok(Self { shared, writes: tx })
    }

    pub fn by_name(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        {
            let index = self.shared.lock();
            if let Some((_, queued)) = index.queued.get(name) {
                return Ok(queued.clone());
            }
            if !index.recorded.contains(name) {
                return Ok(None);
            }
        }
        Ok(self
            .shared
            .store
            .get(NAMESPACE, name)?
            .and_then(|e| VolumeRecord::decode(&e.value).ok()))
    }

    pub fn knows_id(&self, id: &str) -> bool {
        self.shared.lock().names.contains_key(id)
    }

    /// Queues the write of `name`'s record (None: its removal).
    fn queue(&self, index: &mut Index, name: String, record: Option<VolumeRecord>) {
        index.next += 1;
        let seq = index.next;
        index.queued.insert(name.clone(), (seq, record.clone()));
        let sent = self.writes.send(Write { seq, name, record });
        // The writer lives as long as the shared state; a send cannot fail while it runs.
        debug_assert!(sent.is_ok());
    }

    /// Records (or replaces) the record of a name; written after the call returns.
    pub fn insert(&self, record: VolumeRecord) {
        let mut index = self.shared.lock();
        index.recorded.insert(record.name.clone());
        index.names.insert(record.id.clone(), record.name.clone());
        self.queue(&mut index, record.name.clone(), Some(record));
    }

    /// Forgets the volume `id`, if recorded; removed from the store after the call returns.
    pub fn remove(&self, id: &str) {
        let mut index = self.shared.lock();
        if let Some(name) = index.names.remove(id) {
            index.recorded.remove(&name);
            self.queue(&mut index, name, None);
        }
    }

    /// Waits (at most `limit`) until every queued write is in the store; whether it is.
    pub fn settle(&self, limit: std::time::Duration) -> bool {
        let index = self.shared.lock();
        let (index, _) = self
            .shared
            .settled
            .wait_timeout_while(index, limit, |i| !i.queued.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        index.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(required: u64, limit: u64, params: &[(&str, &str)]) -> types::CreateRequest {
        types::CreateRequest {
            name: "pvc-1".into(),
            capacity: types::CapacityRange {
                required_bytes: required,
                limit_bytes: limit,
            },
            capabilities: vec![types::Capability {
                access_type: types::AccessType::Block,
                access_mode: types::AccessMode::SingleNodeWriter,
            }],
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets: vec![],
            source: None,
            accessibility: None,
        }
    }

    #[test]
    fn writes_follow_the_answer_in_order_and_reads_see_them_queued() {
        let store: Arc<dyn StateStore> = Arc::new(crate::state::MemoryStore::default());
        let records = Records::open(store.clone()).unwrap();
        let shape = RequestShape::of(&request(1 << 20, 0, &[]));
        let volume = types::Volume {
            id: "vol-1".into(),
            capacity_bytes: 1 << 20,
            context: vec![],
            topology: vec![],
            attachment: None,
        };
        let record = VolumeRecord::new("pvc-1", shape, &volume, &BTreeMap::new());
        records.insert(record.clone());
        assert_eq!(records.by_name("pvc-1").unwrap(), Some(record.clone()));
        assert!(records.knows_id("vol-1"));
        assert!(records.settle(std::time::Duration::from_secs(10)));
        let stored = store.get(NAMESPACE, "pvc-1").unwrap().unwrap();
        assert_eq!(VolumeRecord::decode(&stored.value).unwrap(), record);
        // Written again (a conflict on the blind create takes the stored version).
        let again = Records::open(store.clone()).unwrap();
        again.insert(record.clone());
        again.remove("vol-1");
        assert_eq!(again.by_name("pvc-1").unwrap(), None);
        assert!(again.settle(std::time::Duration::from_secs(10)));
        assert!(store.get(NAMESPACE, "pvc-1").unwrap().is_none());
        assert!(!Records::open(store).unwrap().knows_id("vol-1"));
    }

    #[test]
    fn same_name_compatible_or_not() {
        let volume = types::Volume {
            id: "v1".into(),
            capacity_bytes: 1 << 30,
            context: vec![],
            topology: vec![],
            attachment: None,
        };
        let record = VolumeRecord::new(
            "pvc-1",
            RequestShape::of(&request(1 << 30, 0, &[("a", "1")])),
            &volume,
            &BTreeMap::new(),
        );
        assert_eq!(
            record.mismatch(&RequestShape::of(&request(1 << 30, 0, &[("a", "1")]))),
            None
        );
        assert_eq!(
            record.mismatch(&RequestShape::of(&request(1 << 20, 2 << 30, &[("a", "1")]))),
            None
        );
        for (shape, why) in [
            (
                RequestShape::of(&request(2 << 30, 0, &[("a", "1")])),
                "outside",
            ),
            (
                RequestShape::of(&request(1 << 20, 1 << 29, &[("a", "1")])),
                "outside",
            ),
            (
                RequestShape::of(&request(1 << 30, 0, &[("a", "2")])),
                "parameters",
            ),
        ] {
            assert!(record.mismatch(&shape).unwrap().contains(why), "{shape:?}");
        }
        let mut other_cap = request(1 << 30, 0, &[("a", "1")]);
        other_cap.capabilities[0].access_mode = types::AccessMode::MultiNodeMultiWriter;
        assert!(
            record
                .mismatch(&RequestShape::of(&other_cap))
                .unwrap()
                .contains("capabilities")
        );
        assert_eq!(VolumeRecord::decode(&record.encode()).unwrap(), record);
    }
}
