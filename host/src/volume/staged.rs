//! The node's record of what it staged: for each staged volume, what it is published from (the
//! staging path, or a block volume's device) and the attachment it was staged from. Unpublish,
//! stats and unstage read it after kubelet has forgotten the contexts; stats re-resolves the
//! attachment to notice a renumbered device; unstage disconnects an NVMe subsystem only when no
//! other staged volume still uses it.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::attachment;
use crate::state::{StateStore, StoreError};
use crate::volume::types::Attachment;

const NAMESPACE: &str = "host/staged";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staged {
    /// The staging path (a filesystem volume) or the device (a block volume).
    pub source: PathBuf,
    /// The attachment, as the host encodes it into contexts.
    pub attachment: HashMap<String, String>,
}

impl Staged {
    pub fn new(source: PathBuf, from: &Attachment) -> Self {
        let mut encoded = HashMap::new();
        attachment::encode(from, &mut encoded);
        Self {
            source,
            attachment: encoded,
        }
    }

    /// The attachment it was staged from (`None` if the record is unreadable).
    pub fn attachment(&self) -> Option<Attachment> {
        attachment::decode(&HashMap::new(), &self.attachment).ok()
    }

    pub fn is_block(&self) -> bool {
        self.source.starts_with("/dev")
    }
}

pub fn load(state: &dyn StateStore, volume: &str) -> Result<Option<Staged>, StoreError> {
    Ok(state
        .get(NAMESPACE, volume)?
        .and_then(|e| serde_json::from_slice(&e.value).ok()))
}

pub fn save(state: &dyn StateStore, volume: &str, staged: &Staged) -> Result<(), StoreError> {
    let value = serde_json::to_vec(staged).expect("a staged record serialises");
    state.put_any(NAMESPACE, volume, &value).map(drop)
}

pub fn remove(state: &dyn StateStore, volume: &str) -> Result<(), StoreError> {
    state.delete(NAMESPACE, volume, None)
}

/// The staged volumes other than `except` whose attachment is the NVMe subsystem `nqn`.
pub fn nvme_users(
    state: &dyn StateStore,
    nqn: &str,
    except: &str,
) -> Result<Vec<String>, StoreError> {
    let mut users = vec![];
    for key in state.keys(NAMESPACE)?.into_iter().filter(|k| k != except) {
        if let Some(Attachment::NvmeTcp(t)) = load(state, &key)?.and_then(|s| s.attachment())
            && t.nqn == nqn
        {
            users.push(key);
        }
    }
    Ok(users)
}
