"""A stock Python gRPC client (grpcio, gRPC C-core) calling the CSI socket given as argv[1].

C-core sends the socket path as the HTTP/2 :authority on unix sockets. Calls GetPluginInfo and
Probe with hand-encoded protobuf (both requests are empty messages) and prints the driver name
found in the GetPluginInfo response, then "probe ok".
"""
import sys

import grpc

socket = sys.argv[1]
with grpc.insecure_channel(f"unix://{socket}") as channel:
    info = channel.unary_unary(
        "/csi.v1.Identity/GetPluginInfo",
        request_serializer=lambda _: b"",
        response_deserializer=lambda raw: raw,
    )(None, timeout=10)
    # Field 1 (name) is the first field: tag 0x0a, one length byte for short names.
    assert info[0] == 0x0A, info
    print(info[2 : 2 + info[1]].decode())
    channel.unary_unary(
        "/csi.v1.Identity/Probe",
        request_serializer=lambda _: b"",
        response_deserializer=lambda raw: raw,
    )(None, timeout=10)
    print("probe ok")
