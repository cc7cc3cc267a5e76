//! The host's own domain types: what a backend is asked and what it answers, in the host's
//! words. They mirror the newest backend contract (`modcsi:backend@0.2.x`) field for field,
//! but nothing here depends on wasmtime: `runtime/` converts every contract version to and
//! from them at its edge, so a new contract is one adapter, not a host-wide change.

/// Ordered key-value pairs: parameters, contexts, secrets, node attributes.
pub type KeyValues = Vec<(String, String)>;

/// A map as key-value pairs, sorted, so backends see the same order every time.
pub fn key_values(map: &std::collections::HashMap<String, String>) -> KeyValues {
    let mut pairs: KeyValues = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.sort();
    pairs
}

/// One topology segment set (e.g. `[("zone", "a")]`).
pub type Topology = Vec<(String, String)>;

/// A backend's refusal: the gRPC code it asks for and its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    InvalidArgument(String),
    NotFound(String),
    AlreadyExists(String),
    FailedPrecondition(String),
    ResourceExhausted(String),
    OutOfRange(String),
    Unavailable(String),
    Aborted(String),
    Internal(String),
    Unimplemented(String),
}

impl BackendError {
    /// The kind of refusal, as words, and the backend's message.
    pub fn parts(&self) -> (&'static str, &str) {
        use BackendError as E;
        match self {
            E::InvalidArgument(m) => ("invalid argument", m),
            E::NotFound(m) => ("not found", m),
            E::AlreadyExists(m) => ("already exists", m),
            E::FailedPrecondition(m) => ("failed precondition", m),
            E::ResourceExhausted(m) => ("resource exhausted", m),
            E::OutOfRange(m) => ("out of range", m),
            E::Unavailable(m) => ("unavailable", m),
            E::Aborted(m) => ("aborted", m),
            E::Internal(m) => ("internal error", m),
            E::Unimplemented(m) => ("unimplemented", m),
        }
    }

    /// The same refusal with its message rewritten (scrubbed, bounded).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        use BackendError as E;
        match self {
            E::InvalidArgument(m) => E::InvalidArgument(f(m)),
            E::NotFound(m) => E::NotFound(f(m)),
            E::AlreadyExists(m) => E::AlreadyExists(f(m)),
            E::FailedPrecondition(m) => E::FailedPrecondition(f(m)),
            E::ResourceExhausted(m) => E::ResourceExhausted(f(m)),
            E::OutOfRange(m) => E::OutOfRange(f(m)),
            E::Unavailable(m) => E::Unavailable(f(m)),
            E::Aborted(m) => E::Aborted(f(m)),
            E::Internal(m) => E::Internal(f(m)),
            E::Unimplemented(m) => E::Unimplemented(f(m)),
        }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, message) = self.parts();
        write!(f, "{kind}: {message}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessMode {
    SingleNodeWriter,
    SingleNodeReaderOnly,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
}

impl AccessMode {
    /// The mode's name in the CSI specification, e.g. `SINGLE_NODE_WRITER`.
    pub fn csi_name(self) -> &'static str {
        match self {
            AccessMode::SingleNodeWriter => "SINGLE_NODE_WRITER",
            AccessMode::SingleNodeReaderOnly => "SINGLE_NODE_READER_ONLY",
            AccessMode::MultiNodeReaderOnly => "MULTI_NODE_READER_ONLY",
            AccessMode::MultiNodeSingleWriter => "MULTI_NODE_SINGLE_WRITER",
            AccessMode::MultiNodeMultiWriter => "MULTI_NODE_MULTI_WRITER",
            AccessMode::SingleNodeSingleWriter => "SINGLE_NODE_SINGLE_WRITER",
            AccessMode::SingleNodeMultiWriter => "SINGLE_NODE_MULTI_WRITER",
        }
    }

    /// Whether at most one node may hold the volume at a time.
    pub fn single_node(self) -> bool {
        matches!(
            self,
            AccessMode::SingleNodeWriter
                | AccessMode::SingleNodeReaderOnly
                | AccessMode::SingleNodeSingleWriter
                | AccessMode::SingleNodeMultiWriter
        )
    }

    /// Whether the mode only reads.
    pub fn read_only(self) -> bool {
        matches!(
            self,
            AccessMode::SingleNodeReaderOnly | AccessMode::MultiNodeReaderOnly
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountVolume {
    pub fs_type: String,
    pub mount_flags: Vec<String>,
    pub volume_mount_group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessType {
    Block,
    Mount(MountVolume),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub access_type: AccessType,
    pub access_mode: AccessMode,
}

impl Capability {
    pub fn is_block(&self) -> bool {
        matches!(self.access_type, AccessType::Block)
    }
}

/// Bytes: 0 means "not given" for either bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapacityRange {
    pub required_bytes: u64,
    pub limit_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    Snapshot(String),
    Volume(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopologyRequirement {
    pub requisite: Vec<Topology>,
    pub preferred: Vec<Topology>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub name: String,
    pub capacity: CapacityRange,
    pub capabilities: Vec<Capability>,
    pub parameters: KeyValues,
    pub secrets: KeyValues,
    pub source: Option<ContentSource>,
    pub accessibility: Option<TopologyRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeTarget {
    pub portals: Vec<Portal>,
    pub nqn: String,
    pub namespace_id: Option<u32>,
    pub ctrl_loss_tmo_seconds: Option<i32>,
    pub reconnect_delay_seconds: Option<u32>,
    pub keep_alive_tmo_seconds: Option<u32>,
}

/// How a node finds a disk the backend attached to it: never a free device path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskLocator {
    Serial(String),
    ById(String),
}

/// How a node reaches a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    NvmeTcp(NvmeTarget),
    Disk(DiskLocator),
    LocalDir,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub capacity_bytes: u64,
    pub context: KeyValues,
    pub topology: Vec<Topology>,
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub volume_id: String,
    pub node_id: String,
    pub node_attributes: KeyValues,
    pub capability: Capability,
    pub readonly: bool,
    pub context: KeyValues,
    pub secrets: KeyValues,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    pub context: KeyValues,
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    pub confirmed: bool,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpandResult {
    pub capacity_bytes: u64,
    pub node_expansion_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePage {
    pub volumes: Vec<Volume>,
    pub next_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub source_volume_id: String,
    pub size_bytes: u64,
    pub created_unix_seconds: i64,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    pub snapshots: Vec<Snapshot>,
    pub next_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotFilter {
    pub source_volume_id: String,
    pub snapshot_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub available_bytes: u64,
    pub maximum_volume_bytes: Option<u64>,
    pub minimum_volume_bytes: Option<u64>,
}

/// The storage a class's volumes are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub node_id: Option<String>,
    pub topology: Topology,
    pub max_volumes: u32,
    pub attributes: KeyValues,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCondition {
    pub abnormal: bool,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStatus {
    pub capacity_bytes: u64,
    pub condition: Option<VolumeCondition>,
    pub published_nodes: Vec<String>,
}

/// Which volume modes a backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeModes {
    pub filesystem: bool,
    pub block: bool,
}

/// Which content sources a backend creates volumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentSources {
    pub snapshot: bool,
    pub volume: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
}

/// What a backend says about itself once, at load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendInfo {
    pub name: String,
    pub version: String,
    pub access_modes: Vec<AccessMode>,
    pub volume_modes: VolumeModes,
    pub content_sources: ContentSources,
    pub topology: bool,
    pub parameters: Vec<ParameterSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_sorted() {
        let map = std::collections::HashMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]);
        assert_eq!(
            key_values(&map),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }
}
