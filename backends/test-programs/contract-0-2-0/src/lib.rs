//! A backend built from the frozen `modcsi:backend@0.2.0` WIT, without the SDK (which tracks the
//! newest 0.2.x): it proves a host on a later 0.2.x still loads 0.2.0 components, links their
//! imports and finds their optional exports. It keeps its volumes in the host cache and exports
//! `expand`, which doubles nothing but the recorded size.

wit_bindgen::generate!({
    inline: "
        package modcsi:contract-0-2-0;
        world contract {
            include modcsi:backend/backend@0.2.0;
            export modcsi:backend/expand@0.2.0;
        }
    ",
    path: "../../../wit/0.2.0",
    generate_all,
});

use exports::modcsi::backend::{controller, expand, identity};
use modcsi::backend::cache;
use modcsi::backend::types::*;

struct Contract;

fn key(id: &str) -> String {
    format!("volume/{id}")
}

impl identity::Guest for Contract {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "contract-0-2-0".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            access_modes: vec![AccessMode::SingleNodeWriter],
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

impl controller::Guest for Contract {
    fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
        let id = format!("c020-{}", request.name);
        let size = request.capacity.required_bytes;
        cache::set(&key(&id), &size.to_le_bytes(), 3_600_000);
        Ok(Volume {
            id,
            capacity_bytes: size,
            context: vec![],
            topology: vec![],
            attachment: Some(Attachment::LocalDir),
        })
    }

    fn delete_volume(id: String, _: KeyValues) -> Result<(), Error> {
        cache::delete(&key(&id));
        Ok(())
    }

    fn validate_capabilities(
        id: String,
        _: Vec<Capability>,
        _: KeyValues,
        _: KeyValues,
        _: KeyValues,
    ) -> Result<Validation, Error> {
        if cache::get(&key(&id)).is_none() {
            return Err(Error::NotFound(format!("no volume {id}")));
        }
        Ok(Validation {
            confirmed: true,
            message: String::new(),
        })
    }
}

impl expand::Guest for Contract {
    fn expand_volume(
        id: String,
        capacity: CapacityRange,
        _: Option<Capability>,
        _: KeyValues,
    ) -> Result<ExpandResult, Error> {
        if cache::get(&key(&id)).is_none() {
            return Err(Error::NotFound(format!("volume {id}")));
        }
        cache::set(&key(&id), &capacity.required_bytes.to_le_bytes(), 3_600_000);
        Ok(ExpandResult {
            capacity_bytes: capacity.required_bytes,
            node_expansion_required: false,
        })
    }
}

export!(Contract);
