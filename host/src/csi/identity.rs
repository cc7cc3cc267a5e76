//! Identity: who this plugin is, what it offers, and whether its backend is ready.

use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::{Error, deadline};
use crate::proto::identity_server::Identity;
use crate::proto::plugin_capability::{Service, Type, service};
use crate::proto::*;
use crate::runtime::{Backend, Optional};

pub struct IdentityService {
    pub driver_name: String,
    pub serves_controller: bool,
    pub backend: Arc<Backend>,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        let info = self.backend.info();
        Ok(Response::new(GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: [
                ("backend".to_owned(), info.name.clone()),
                ("backend-version".to_owned(), info.version.clone()),
            ]
            .into(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let service = |t: service::Type| PluginCapability {
            r#type: Some(Type::Service(Service { r#type: t as i32 })),
        };
        let mut capabilities = vec![];
        if self.serves_controller {
            capabilities.push(service(service::Type::ControllerService));
        }
        if self.backend.info().topology {
            capabilities.push(service(service::Type::VolumeAccessibilityConstraints));
        }
        // Online when the node grows filesystems too (backends that attach storage to nodes,
        // which export `publish`, are staged and expanded by the node); offline otherwise.
        let backend = &self.backend;
        if backend.offers(Optional::Expand) {
            let kind = if backend.offers(Optional::Publish) {
                plugin_capability::volume_expansion::Type::Online
            } else {
                plugin_capability::volume_expansion::Type::Offline
            };
            capabilities.push(PluginCapability {
                r#type: Some(Type::VolumeExpansion(plugin_capability::VolumeExpansion {
                    r#type: kind as i32,
                })),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        // A node plugin's health is its own (the socket answers, the backend is loaded); the
        // storage behind it is the controller's to probe. A storage outage must not have every
        // node plugin's liveness probe restart it (and a node may hold no storage credentials).
        if !self.serves_controller {
            return Ok(Response::new(ProbeResponse { ready: Some(true) }));
        }
        let timeout = deadline::of(&request);
        self.backend
            .probe(timeout)
            .await
            .map_err(|source| Error::Backend {
                subject: "probe".into(),
                source,
            })?;
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
