//! Controller: volume lifecycle, delegated to the backend with the host's validation around it.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use super::convert::{self, bytes_to_csi};
use super::{CsiError, SharedDriver, deadline};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::{Rpc, Type, rpc};
use crate::proto::*;
use crate::runtime::types;
use crate::volume::attachment::{self, RESERVED_PREFIX};
use crate::volume::validate;

pub struct ControllerService(pub SharedDriver);

impl ControllerService {
    fn backend_error(subject: String) -> impl FnOnce(crate::runtime::CallError) -> CsiError {
        move |source| CsiError::Backend { subject, source }
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let driver = &self.0;
        let name = validate::volume_name(&r.name).map_err(CsiError::from)?;
        let capabilities = convert::capabilities(&r.volume_capabilities, driver.backend.info())?;
        let create = types::CreateRequest {
            name: name.to_owned(),
            capacity: convert::capacity_range(r.capacity_range.as_ref())?,
            capabilities,
            parameters: convert::key_values(&r.parameters),
            secrets: convert::key_values(&r.secrets),
            source: convert::content_source(r.volume_content_source.as_ref()),
            accessibility: convert::topology_requirement(r.accessibility_requirements.as_ref()),
        };
        let subject = format!("create volume {name:?}");
        let _guard = driver
            .locks
            .try_lock(&format!("name/{name}"))
            .ok_or_else(|| CsiError::Pending(subject.clone()))?;

        let volume = driver
            .backend
            .create_volume(create, timeout)
            .await
            .map_err(Self::backend_error(subject.clone()))?;
        validate::volume_id(&volume.id).map_err(|e| {
            CsiError::Internal(format!(
                "{subject}: backend {} returned an unusable id: {e}",
                driver.backend.name()
            ))
        })?;
        if let Some((key, _)) = volume
            .context
            .iter()
            .find(|(k, _)| k.starts_with(RESERVED_PREFIX))
        {
            return Err(CsiError::Internal(format!(
                "{subject}: backend {} set the reserved context key {key}",
                driver.backend.name()
            ))
            .into());
        }
        let mut volume_context: HashMap<String, String> = volume.context.into_iter().collect();
        if let Some(a) = &volume.attachment {
            attachment::encode(a, &mut volume_context);
        }
        tracing::info!(volume = %volume.id, name, "volume created");
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(Volume {
                capacity_bytes: bytes_to_csi(volume.capacity_bytes),
                volume_id: volume.id,
                volume_context,
                content_source: r.volume_content_source,
                accessible_topology: convert::topology_to_csi(&volume.topology),
            }),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        let _guard = driver
            .locks
            .try_lock(id)
            .ok_or_else(|| CsiError::Pending(format!("volume {id}")))?;
        // A local directory of this volume on this node goes with it (refused while published).
        let removed = driver
            .local_dirs
            .remove(id)
            .map_err(|source| CsiError::Node {
                volume: id.to_owned(),
                source,
            })?;
        driver
            .backend
            .delete_volume(id.to_owned(), convert::key_values(&r.secrets), timeout)
            .await
            .map_err(Self::backend_error(format!("volume {id}")))?;
        tracing::info!(volume = id, local_dir_removed = removed, "volume deleted");
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let timeout = deadline::of(&request);
        let r = request.into_inner();
        let driver = &self.0;
        let id = validate::volume_id(&r.volume_id).map_err(CsiError::from)?;
        if r.volume_capabilities.is_empty() {
            return Err(CsiError::InvalidArgument(format!(
                "volume {id}: volume capabilities are required"
            ))
            .into());
        }
        let capabilities = r
            .volume_capabilities
            .iter()
            .map(convert::capability)
            .collect::<Result<Vec<_>, _>>()?;
        // What the backend does not offer at all is answered without asking it.
        if let Some(Err(CsiError::InvalidArgument(message))) = capabilities
            .iter()
            .map(|c| convert::supported(c, driver.backend.info()))
            .find(Result::is_err)
        {
            return Ok(Response::new(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            }));
        }
        let validation = driver
            .backend
            .validate_capabilities(
                id.to_owned(),
                capabilities,
                convert::key_values(&r.volume_context),
                convert::key_values(&r.parameters),
                timeout,
            )
            .await
            .map_err(Self::backend_error(format!("volume {id}")))?;
        let confirmed =
            validation
                .confirmed
                .then_some(validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                });
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed,
            message: validation.message,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let mut rpcs = vec![rpc::Type::CreateDeleteVolume];
        if self.0.offers_single_node_multi_writer() {
            rpcs.push(rpc::Type::SingleNodeMultiWriter);
        }
        let capabilities = rpcs
            .into_iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }
}
