//! A well-behaved backend with one trap door: `create-volume` for a volume named
//! [`TRIGGER`] runs the misbehaviour the test program was built with. Every other call
//! succeeds, so tests can show that the host survives the misbehaviour and keeps serving the
//! very same backend. It exports the required core of the 0.2 contract and nothing else.

pub use modcsi_backend_sdk;

/// The volume name that sets the misbehaviour off.
pub const TRIGGER: &str = "misbehave";

/// Defines and exports a backend whose `create-volume` calls `$misbehave()` for [`TRIGGER`].
#[macro_export]
macro_rules! hostile_backend {
    ($misbehave:path) => {
        use $crate::modcsi_backend_sdk::types::*;

        struct Hostile;

        impl $crate::modcsi_backend_sdk::identity::Guest for Hostile {
            fn info() -> BackendInfo {
                BackendInfo {
                    name: env!("CARGO_PKG_NAME").into(),
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

        impl $crate::modcsi_backend_sdk::controller::Guest for Hostile {
            fn create_volume(request: CreateRequest) -> Result<Volume, Error> {
                if request.name == $crate::TRIGGER {
                    $misbehave();
                }
                Ok(Volume {
                    id: format!("hostile-{}", request.name),
                    capacity_bytes: request.capacity.required_bytes,
                    context: vec![],
                    topology: vec![],
                    attachment: Some(Attachment::LocalDir),
                })
            }
            fn delete_volume(_: String, _: KeyValues) -> Result<(), Error> {
                Ok(())
            }
            fn validate_capabilities(
                _: String,
                _: Vec<Capability>,
                _: KeyValues,
                _: KeyValues,
                _: KeyValues,
            ) -> Result<Validation, Error> {
                Ok(Validation { confirmed: true, message: String::new() })
            }
        }

        $crate::modcsi_backend_sdk::export_backend!(Hostile with_types_in $crate::modcsi_backend_sdk);
    };
}
