// modcsi-livenessprobe serves /healthz for a CSI driver: each request calls the driver's Probe on
// --csi-address and answers 200 when the driver is ready, 500 otherwise. It is modcsi's stand-in for
// the kubernetes-csi livenessprobe where that cannot be built (the Go module proxy has no release
// of it), with the same main flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"modcsi.local/tools/standins/internal/csiconn"
)

var version = "unknown"

var (
	csiAddress   = flag.String("csi-address", "/run/csi/socket", "Address of the CSI driver socket.")
	probeTimeout = flag.Duration("probe-timeout", time.Second, "Timeout of each Probe call.")
	healthPort   = flag.String("health-port", "9808", "TCP port of /healthz (on all addresses). Ignored when --http-endpoint is set.")
	httpEndpoint = flag.String("http-endpoint", "", "TCP address of /healthz, e.g. :9808.")
	showVersion  = flag.Bool("version", false, "Show the version and exit.")
	_            = flag.String("metrics-address", "", "Ignored (no metrics).")
	_            = flag.String("metrics-path", "/metrics", "Ignored (no metrics).")
	_            = flag.Int("v", 0, "Log verbosity (accepted for compatibility; ignored).")
)

func main() {
	flag.Parse()
	if *showVersion {
		fmt.Println(filepath.Base(os.Args[0]), version)
		return
	}
	conn, err := csiconn.Dial(*csiAddress)
	if err != nil {
		log.Fatalf("the CSI address %q: %v", *csiAddress, err)
	}
	client := csi.NewIdentityClient(conn)
	addr := *httpEndpoint
	if addr == "" {
		addr = net.JoinHostPort("", *healthPort)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), *probeTimeout)
		defer cancel()
		answer, err := client.Probe(ctx, &csi.ProbeRequest{})
		switch {
		case err != nil:
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "Probe: %v\n", err)
			log.Printf("health check failed: Probe: %v", err)
		case answer.GetReady() != nil && !answer.GetReady().GetValue():
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintln(w, "the driver is not ready")
			log.Printf("health check failed: the driver is not ready")
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	log.Printf("modcsi-livenessprobe %s: /healthz on %s probes %s", version, addr, *csiAddress)
	log.Fatal(http.ListenAndServe(addr, nil))
}
