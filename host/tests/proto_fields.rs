//! proto/csi.proto must match CSI v1.12.0 field for field: this compiles it and compares every
//! message's field numbers with the table below, written from the spec, so a drift cannot come
//! back silently.

use std::collections::BTreeMap;

use prost_types::DescriptorProto;

const SPEC: &str = "
GetPluginInfoResponse.name=1
GetPluginInfoResponse.vendor_version=2
GetPluginInfoResponse.manifest=3
GetPluginCapabilitiesResponse.capabilities=1
PluginCapability.Service.type=1
PluginCapability.VolumeExpansion.type=1
PluginCapability.service=1
PluginCapability.volume_expansion=2
ProbeResponse.ready=1
VolumeContentSource.SnapshotSource.snapshot_id=1
VolumeContentSource.VolumeSource.volume_id=1
VolumeContentSource.snapshot=1
VolumeContentSource.volume=2
VolumeCapability.MountVolume.fs_type=1
VolumeCapability.MountVolume.mount_flags=2
VolumeCapability.MountVolume.volume_mount_group=3
VolumeCapability.AccessMode.mode=1
VolumeCapability.block=1
VolumeCapability.mount=2
VolumeCapability.access_mode=3
CapacityRange.required_bytes=1
CapacityRange.limit_bytes=2
Volume.capacity_bytes=1
Volume.volume_id=2
Volume.volume_context=3
Volume.content_source=4
Volume.accessible_topology=5
TopologyRequirement.requisite=1
TopologyRequirement.preferred=2
Topology.segments=1
VolumeCondition.abnormal=1
VolumeCondition.message=2
Snapshot.size_bytes=1
Snapshot.snapshot_id=2
Snapshot.source_volume_id=3
Snapshot.creation_time=4
Snapshot.ready_to_use=5
Snapshot.group_snapshot_id=6
CreateVolumeRequest.name=1
CreateVolumeRequest.capacity_range=2
CreateVolumeRequest.volume_capabilities=3
CreateVolumeRequest.parameters=4
CreateVolumeRequest.secrets=5
CreateVolumeRequest.volume_content_source=6
CreateVolumeRequest.accessibility_requirements=7
CreateVolumeRequest.mutable_parameters=8
CreateVolumeResponse.volume=1
DeleteVolumeRequest.volume_id=1
DeleteVolumeRequest.secrets=2
ControllerPublishVolumeRequest.volume_id=1
ControllerPublishVolumeRequest.node_id=2
ControllerPublishVolumeRequest.volume_capability=3
ControllerPublishVolumeRequest.readonly=4
ControllerPublishVolumeRequest.secrets=5
ControllerPublishVolumeRequest.volume_context=6
ControllerPublishVolumeResponse.publish_context=1
ControllerUnpublishVolumeRequest.volume_id=1
ControllerUnpublishVolumeRequest.node_id=2
ControllerUnpublishVolumeRequest.secrets=3
ValidateVolumeCapabilitiesRequest.volume_id=1
ValidateVolumeCapabilitiesRequest.volume_context=2
ValidateVolumeCapabilitiesRequest.volume_capabilities=3
ValidateVolumeCapabilitiesRequest.parameters=4
ValidateVolumeCapabilitiesRequest.secrets=5
ValidateVolumeCapabilitiesRequest.mutable_parameters=6
ValidateVolumeCapabilitiesResponse.Confirmed.volume_context=1
ValidateVolumeCapabilitiesResponse.Confirmed.volume_capabilities=2
ValidateVolumeCapabilitiesResponse.Confirmed.parameters=3
ValidateVolumeCapabilitiesResponse.Confirmed.mutable_parameters=4
ValidateVolumeCapabilitiesResponse.confirmed=1
ValidateVolumeCapabilitiesResponse.message=2
ListVolumesRequest.max_entries=1
ListVolumesRequest.starting_token=2
ListVolumesResponse.VolumeStatus.published_node_ids=1
ListVolumesResponse.VolumeStatus.volume_condition=2
ListVolumesResponse.Entry.volume=1
ListVolumesResponse.Entry.status=2
ListVolumesResponse.entries=1
ListVolumesResponse.next_token=2
ControllerGetVolumeRequest.volume_id=1
ControllerGetVolumeResponse.VolumeStatus.published_node_ids=1
ControllerGetVolumeResponse.VolumeStatus.volume_condition=2
ControllerGetVolumeResponse.volume=1
ControllerGetVolumeResponse.status=2
ControllerModifyVolumeRequest.volume_id=1
ControllerModifyVolumeRequest.secrets=2
ControllerModifyVolumeRequest.mutable_parameters=3
GetCapacityRequest.volume_capabilities=1
GetCapacityRequest.parameters=2
GetCapacityRequest.accessible_topology=3
GetCapacityResponse.available_capacity=1
GetCapacityResponse.maximum_volume_size=2
GetCapacityResponse.minimum_volume_size=3
ControllerGetCapabilitiesResponse.capabilities=1
ControllerServiceCapability.RPC.type=1
ControllerServiceCapability.rpc=1
CreateSnapshotRequest.source_volume_id=1
CreateSnapshotRequest.name=2
CreateSnapshotRequest.secrets=3
CreateSnapshotRequest.parameters=4
CreateSnapshotResponse.snapshot=1
DeleteSnapshotRequest.snapshot_id=1
DeleteSnapshotRequest.secrets=2
ListSnapshotsRequest.max_entries=1
ListSnapshotsRequest.starting_token=2
ListSnapshotsRequest.source_volume_id=3
ListSnapshotsRequest.snapshot_id=4
ListSnapshotsRequest.secrets=5
ListSnapshotsResponse.Entry.snapshot=1
ListSnapshotsResponse.entries=1
ListSnapshotsResponse.next_token=2
GetSnapshotRequest.snapshot_id=1
GetSnapshotRequest.secrets=2
GetSnapshotResponse.snapshot=1
ControllerExpandVolumeRequest.volume_id=1
ControllerExpandVolumeRequest.capacity_range=2
ControllerExpandVolumeRequest.secrets=3
ControllerExpandVolumeRequest.volume_capability=4
ControllerExpandVolumeResponse.capacity_bytes=1
ControllerExpandVolumeResponse.node_expansion_required=2
GroupControllerGetCapabilitiesResponse.capabilities=1
GroupControllerServiceCapability.RPC.type=1
GroupControllerServiceCapability.rpc=1
VolumeGroupSnapshot.group_snapshot_id=1
VolumeGroupSnapshot.snapshots=2
VolumeGroupSnapshot.creation_time=3
VolumeGroupSnapshot.ready_to_use=4
CreateVolumeGroupSnapshotRequest.name=1
CreateVolumeGroupSnapshotRequest.source_volume_ids=2
CreateVolumeGroupSnapshotRequest.secrets=3
CreateVolumeGroupSnapshotRequest.parameters=4
CreateVolumeGroupSnapshotResponse.group_snapshot=1
DeleteVolumeGroupSnapshotRequest.group_snapshot_id=1
DeleteVolumeGroupSnapshotRequest.snapshot_ids=2
DeleteVolumeGroupSnapshotRequest.secrets=3
GetVolumeGroupSnapshotRequest.group_snapshot_id=1
GetVolumeGroupSnapshotRequest.snapshot_ids=2
GetVolumeGroupSnapshotRequest.secrets=3
GetVolumeGroupSnapshotResponse.group_snapshot=1
BlockMetadata.byte_offset=1
BlockMetadata.size_bytes=2
GetMetadataAllocatedRequest.snapshot_id=1
GetMetadataAllocatedRequest.starting_offset=2
GetMetadataAllocatedRequest.max_results=3
GetMetadataAllocatedRequest.secrets=4
GetMetadataAllocatedResponse.block_metadata_type=1
GetMetadataAllocatedResponse.volume_capacity_bytes=2
GetMetadataAllocatedResponse.block_metadata=3
GetMetadataDeltaRequest.base_snapshot_id=1
GetMetadataDeltaRequest.target_snapshot_id=2
GetMetadataDeltaRequest.starting_offset=3
GetMetadataDeltaRequest.max_results=4
GetMetadataDeltaRequest.secrets=5
GetMetadataDeltaResponse.block_metadata_type=1
GetMetadataDeltaResponse.volume_capacity_bytes=2
GetMetadataDeltaResponse.block_metadata=3
NodeStageVolumeRequest.volume_id=1
NodeStageVolumeRequest.publish_context=2
NodeStageVolumeRequest.staging_target_path=3
NodeStageVolumeRequest.volume_capability=4
NodeStageVolumeRequest.secrets=5
NodeStageVolumeRequest.volume_context=6
NodeUnstageVolumeRequest.volume_id=1
NodeUnstageVolumeRequest.staging_target_path=2
NodePublishVolumeRequest.volume_id=1
NodePublishVolumeRequest.publish_context=2
NodePublishVolumeRequest.staging_target_path=3
NodePublishVolumeRequest.target_path=4
NodePublishVolumeRequest.volume_capability=5
NodePublishVolumeRequest.readonly=6
NodePublishVolumeRequest.secrets=7
NodePublishVolumeRequest.volume_context=8
NodeUnpublishVolumeRequest.volume_id=1
NodeUnpublishVolumeRequest.target_path=2
NodeGetVolumeStatsRequest.volume_id=1
NodeGetVolumeStatsRequest.volume_path=2
NodeGetVolumeStatsRequest.staging_target_path=3
NodeGetVolumeStatsResponse.usage=1
NodeGetVolumeStatsResponse.volume_condition=2
VolumeUsage.available=1
VolumeUsage.total=2
VolumeUsage.used=3
VolumeUsage.unit=4
NodeGetCapabilitiesResponse.capabilities=1
NodeServiceCapability.RPC.type=1
NodeServiceCapability.rpc=1
NodeGetInfoResponse.node_id=1
NodeGetInfoResponse.max_volumes_per_node=2
NodeGetInfoResponse.accessible_topology=3
NodeExpandVolumeRequest.volume_id=1
NodeExpandVolumeRequest.volume_path=2
NodeExpandVolumeRequest.capacity_range=3
NodeExpandVolumeRequest.staging_target_path=4
NodeExpandVolumeRequest.volume_capability=5
NodeExpandVolumeRequest.secrets=6
NodeExpandVolumeResponse.capacity_bytes=1
";

fn collect(prefix: &str, message: &DescriptorProto, out: &mut BTreeMap<String, i32>) {
    let name = if prefix.is_empty() {
        message.name().to_owned()
    } else {
        format!("{prefix}.{}", message.name())
    };
    for field in &message.field {
        out.insert(format!("{name}.{}", field.name()), field.number());
    }
    for nested in &message.nested_type {
        // Map entries are generated, not written.
        if !nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            collect(&name, nested, out);
        }
    }
}

#[test]
fn every_field_number_matches_the_spec() {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let files = protox::compile([format!("{proto_dir}/csi.proto")], [proto_dir]).expect("compiles");
    let mut found = BTreeMap::new();
    for file in files.file.iter().filter(|f| f.package() == "csi.v1") {
        for message in &file.message_type {
            collect("", message, &mut found);
        }
    }
    let spec: BTreeMap<String, i32> = SPEC
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (field, number) = l.trim().split_once('=').expect("field=number");
            (field.to_owned(), number.parse().expect("a number"))
        })
        .collect();
    let missing: Vec<_> = spec.keys().filter(|k| !found.contains_key(*k)).collect();
    let extra: Vec<_> = found.keys().filter(|k| !spec.contains_key(*k)).collect();
    let wrong: Vec<_> = spec
        .iter()
        .filter(|(k, n)| found.get(*k).is_some_and(|f| f != *n))
        .map(|(k, n)| format!("{k}: spec {n}, proto {}", found[k]))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "missing {missing:?}\nnot in the spec {extra:?}\nwrong numbers {wrong:?}"
    );
}
