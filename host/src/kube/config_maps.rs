//! Compare-and-swap on ConfigMaps, for the two kinds of record kept in them (cleanup records,
//! the shared state store): a write at a `resourceVersion`, a delete with it as precondition.
//! And one text in a named ConfigMap of the driver's namespace (the audit's history).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use sha2::{Digest, Sha256};

use super::{Cluster, KubeError};

impl Cluster {
    /// The text under `key` of ConfigMap `name`; `None` when either is absent.
    pub async fn read_text(&self, name: &str, key: &str) -> Result<Option<String>, KubeError> {
        let cm = (self.config_maps().get_opt(name).await)
            .map_err(KubeError::api(format!("get configmap {name}")))?;
        Ok(cm.and_then(|cm| cm.data?.remove(key)))
    }

    /// Sets `key` of ConfigMap `name` to `text` (its other keys kept), making the ConfigMap
    /// when there is none. A writer that came in between wins; the caller writes again later.
    pub async fn write_text(&self, name: &str, key: &str, text: &str) -> Result<(), KubeError> {
        let api = self.config_maps();
        let what = || format!("write configmap {name}");
        let mut cm = (api.get_opt(name).await)
            .map_err(KubeError::api(what()))?
            .unwrap_or_else(|| ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            });
        cm.data
            .get_or_insert_default()
            .insert(key.to_owned(), text.to_owned());
        match write(&api, &cm).await.map_err(KubeError::api(what()))? {
            Some(_) => Ok(()),
            None => Err(KubeError::Conflict(what())),
        }
    }
}

/// Hex of the first `bytes` of a SHA-256 over `parts` (each ended by a NUL), for object names
/// and label values made from arbitrary text.
pub(super) fn digest(parts: &[&str], bytes: usize) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..bytes])
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Writes `cm`: created when it carries no `resourceVersion`, else replaced at that version.
/// `None` back: another writer came first (it exists, changed, or is gone).
pub(super) async fn write(
    api: &Api<ConfigMap>,
    cm: &ConfigMap,
) -> Result<Option<ConfigMap>, kube::Error> {
    let name = cm.metadata.name.as_deref().unwrap_or_default();
    let replacing = cm.metadata.resource_version.is_some();
    let written = match replacing {
        false => api.create(&PostParams::default(), cm).await,
        true => api.replace(name, &PostParams::default(), cm).await,
    };
    match written {
        Ok(cm) => Ok(Some(cm)),
        Err(e) if code(&e) == Some(409) || (replacing && code(&e) == Some(404)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes `name`, at `version` when given. `false`: it changed meanwhile, or is gone although
/// a version was expected; deleting what is absent without a version succeeds.
pub(super) async fn delete(
    api: &Api<ConfigMap>,
    name: &str,
    version: Option<String>,
) -> Result<bool, kube::Error> {
    let expected = version.is_some();
    let params = DeleteParams {
        preconditions: version.map(|v| Preconditions {
            resource_version: Some(v),
            uid: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some(404) => Ok(!expected),
        Err(e) if code(&e) == Some(409) => Ok(false),
        Err(e) => Err(e),
    }
}
