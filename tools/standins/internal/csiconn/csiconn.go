// Package csiconn dials a CSI driver's unix socket, the way the kubernetes-csi sidecars take
// --csi-address: a path, or unix:///path.
package csiconn

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Target turns a --csi-address into a gRPC target.
func Target(address string) string {
	if strings.Contains(address, "://") {
		return address
	}
	return "unix://" + address
}

// Dial makes a client for the driver; it connects lazily, on the first call.
func Dial(address string) (*grpc.ClientConn, error) {
	return grpc.NewClient(Target(address), grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// DriverName asks the driver for its name, retrying (each try bounded by timeout) until it answers:
// the driver's container may start after ours.
func DriverName(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) (string, error) {
	client := csi.NewIdentityClient(conn)
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, timeout)
		info, err := client.GetPluginInfo(callCtx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			if info.GetName() == "" {
				return "", fmt.Errorf("the driver answered GetPluginInfo with an empty name")
			}
			return info.GetName(), nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if attempt == 1 || attempt%30 == 0 {
			log.Printf("waiting for the CSI driver: GetPluginInfo: %v", err)
		}
		time.Sleep(time.Second)
	}
}
