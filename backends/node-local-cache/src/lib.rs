//! node-local-cache: every volume is a scratch directory that exists separately on each node
//! that publishes it. The backend only names volumes; the host creates and removes the
//! directories (`attachment::local-dir`). Volumes carry no topology, so a pod may land anywhere.
//! What `info` declares (filesystem only, no content sources) the host enforces for every
//! backend, so the calls below only see requests this backend can serve.
//!
//! A drop-in for the public node-local-cache driver: the same volume ids (`nlc-` + UUID v5 of the
//! request name in that driver's namespace), and its PVs, whose volume context is empty, publish
//! through `locate`.

use modcsi_backend_sdk::controller::Guest as Controller;
use modcsi_backend_sdk::identity::Guest as Identity;
use modcsi_backend_sdk::locate::Guest as Locate;
use modcsi_backend_sdk::types::{
    AccessMode, Attachment, BackendInfo, Capability, ContentSources, CreateRequest, Error,
    KeyValues, Validation, Volume, VolumeModes,
};
use modcsi_backend_sdk::{debug, err};
use uuid::Uuid;

/// The public driver's namespace for volume ids (UUID v5 of the request name).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x7a3e8f2b_5c41_4d9a_b86f_1e4a9c2d7b5e);
const ID_PREFIX: &str = "nlc-";

struct NodeLocalCache;

fn volume_id(name: &str) -> String {
    format!(
        "{ID_PREFIX}{}",
        Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
    )
}

fn is_our_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX)
        .is_some_and(|uuid| Uuid::try_parse(uuid).is_ok_and(|u| u.get_version_num() == 5))
}

fn not_ours(id: &str) -> Error {
    err!(NotFound, "{id} is not a node-local-cache volume id")
}

impl Identity for NodeLocalCache {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "node-local-cache".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            access_modes: vec![
                AccessMode::SingleNodeWriter,
                AccessMode::SingleNodeReaderOnly,
                AccessMode::MultiNodeReaderOnly,
                AccessMode::MultiNodeSingleWriter,
                AccessMode::MultiNodeMultiWriter,
                AccessMode::SingleNodeSingleWriter,
                AccessMode::SingleNodeMultiWriter,
            ],
            volume_modes: VolumeModes::FILESYSTEM,
            content_sources: ContentSources::empty(),
            topology: false,
            parameters: vec![],
        }
    }

    fn probe() -> Result<(), Error> {
        Ok(())
    }
}

impl Controller for NodeLocalCache {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        let id = volume_id(&request.name);
        debug!("volume named", name = request.name, volume = id);
        Ok(Volume {
            id,
            capacity_bytes: request.capacity.required_bytes,
            context: vec![],
            topology: vec![],
            attachment: Some(Attachment::LocalDir),
        })
    }

    fn delete_volume(_volume_id: String, _secrets: KeyValues) -> Result<(), Error> {
        // Nothing exists outside the nodes; the host removes the local directories.
        Ok(())
    }

    fn validate_capabilities(
        volume_id: String,
        _capabilities: Vec<Capability>,
        _context: KeyValues,
        _parameters: KeyValues,
        _secrets: KeyValues,
    ) -> Result<Validation, Error> {
        if !is_our_id(&volume_id) {
            return Err(not_ours(&volume_id));
        }
        Ok(Validation {
            confirmed: true,
            message: String::new(),
        })
    }
}

impl Locate for NodeLocalCache {
    /// Every node-local-cache volume, the public driver's included, is a local directory.
    fn locate(volume_id: String, _context: KeyValues) -> Result<Attachment, Error> {
        if !is_our_id(&volume_id) {
            return Err(not_ours(&volume_id));
        }
        Ok(Attachment::LocalDir)
    }
}

/// node-local-cache reads no parameters: any a StorageClass sets is one it ignores.
impl modcsi_backend_sdk::parameters::Guest for NodeLocalCache {
    fn validate_parameters(parameters: KeyValues) -> Result<Vec<String>, Error> {
        modcsi_backend_sdk::params::problems(&parameters, &Self::info().parameters, |_| Ok(()))
    }
}

modcsi_backend_sdk::export_backend!(NodeLocalCache);
modcsi_backend_sdk::export_locate!(NodeLocalCache);
modcsi_backend_sdk::export_parameters!(NodeLocalCache);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_public_driver() {
        assert_eq!(
            volume_id("pvc-12345"),
            "nlc-da2c015b-ead8-5c44-8d3d-00cc2583f371"
        );
        assert_eq!(
            volume_id("pvc-abc-123"),
            "nlc-24fd37c9-eb20-576a-8fce-481b19db68f6"
        );
        assert!(is_our_id(&volume_id("anything")));
        assert!(!is_our_id("pvc-12345"));
    }
}
