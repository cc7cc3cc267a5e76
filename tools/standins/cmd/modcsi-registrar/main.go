// modcsi-registrar registers a CSI driver with kubelet's plugin watcher: it asks the driver for its
// name (GetPluginInfo on --csi-address), then serves kubelet's plugin registration API (v1) on
// <--plugin-registration-path>/<driver>-reg.sock, telling kubelet the driver's socket path on the
// host (--kubelet-registration-path). It is modcsi's stand-in for the kubernetes-csi
// node-driver-registrar where that cannot be built (the Go module proxy has no release of it),
// with the same flags, so a chart can use either image unchanged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"modcsi.local/tools/standins/internal/csiconn"
)

var version = "unknown"

var (
	csiAddress              = flag.String("csi-address", "/run/csi/socket", "Path of the CSI driver socket to connect to.")
	pluginRegistrationPath  = flag.String("plugin-registration-path", "/registration", "Kubelet's plugin registration directory (as mounted here).")
	kubeletRegistrationPath = flag.String("kubelet-registration-path", "", "Path of the CSI driver socket on the host, as kubelet sees it (required).")
	timeout                 = flag.Duration("timeout", time.Second, "Timeout of each call to the driver.")
	healthPort              = flag.Int("health-port", 0, "TCP port of /healthz (0: none). Only one of --health-port and --http-endpoint.")
	httpEndpoint            = flag.String("http-endpoint", "", "TCP address of /healthz, e.g. :8080 (empty: none).")
	showVersion             = flag.Bool("version", false, "Show the version and exit.")
	mode                    = flag.String("mode", "", "kubelet-registration-probe: exit 0 at once (the upstream registrar's deprecated probe mode).")
	_                       = flag.Duration("connection-timeout", 0, "Deprecated, ignored.")
	_                       = flag.Bool("enable-pprof", false, "Ignored.")
	_                       = flag.Int("v", 0, "Log verbosity (accepted for compatibility; ignored).")
)

type server struct {
	registerapi.UnimplementedRegistrationServer
	driver string
}

func (s server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("GetInfo: %s at %s", s.driver, *kubeletRegistrationPath)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.driver,
		Endpoint:          *kubeletRegistrationPath,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (s server) NotifyRegistrationStatus(_ context.Context, status *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if !status.PluginRegistered {
		// As upstream: exit, so the pod restarts and registration is tried anew.
		log.Printf("kubelet failed to register the driver: %s; exiting", status.Error)
		os.Exit(1)
	}
	log.Printf("kubelet registered the driver %s", s.driver)
	return &registerapi.RegistrationStatusResponse{}, nil
}

func main() {
	flag.Parse()
	if *showVersion {
		fmt.Println(filepath.Base(os.Args[0]), version)
		return
	}
	if *mode == "kubelet-registration-probe" {
		return
	}
	if *kubeletRegistrationPath == "" {
		log.Fatal("--kubelet-registration-path is required")
	}
	if *healthPort != 0 && *httpEndpoint != "" {
		log.Fatal("only one of --health-port and --http-endpoint may be set")
	}
	log.Printf("modcsi-registrar %s: driver socket %s, registration dir %s", version, *csiAddress, *pluginRegistrationPath)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	conn, err := csiconn.Dial(*csiAddress)
	if err != nil {
		log.Fatalf("the CSI address %q: %v", *csiAddress, err)
	}
	driver, err := csiconn.DriverName(ctx, conn, *timeout)
	if err != nil {
		log.Fatalf("GetPluginInfo: %v", err)
	}
	conn.Close()
	log.Printf("the driver is %s", driver)

	socket := filepath.Join(*pluginRegistrationPath, driver+"-reg.sock")
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("remove the stale %s: %v", socket, err)
	}
	old := syscall.Umask(0o077)
	listener, err := net.Listen("unix", socket)
	syscall.Umask(old)
	if err != nil {
		log.Fatalf("listen on %s: %v", socket, err)
	}
	grpcServer := grpc.NewServer()
	registerapi.RegisterRegistrationServer(grpcServer, server{driver: driver})

	addr := *httpEndpoint
	if *healthPort != 0 {
		addr = fmt.Sprintf(":%d", *healthPort)
	}
	if addr != "" {
		go serveHealth(addr, socket)
	}
	go func() {
		<-ctx.Done()
		log.Printf("stopping; removing %s", socket)
		grpcServer.Stop()
		os.Remove(socket)
	}()
	log.Printf("serving kubelet's registration API on %s", socket)
	if err := grpcServer.Serve(listener); err != nil && ctx.Err() == nil {
		log.Fatalf("serve: %v", err)
	}
}

// serveHealth answers /healthz: 200 while the registration socket accepts connections.
func serveHealth(addr, socket string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		err := checkSocket(r.Context(), socket)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	log.Printf("/healthz on %s", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}

func checkSocket(ctx context.Context, socket string) error {
	dialer := net.Dialer{Timeout: *timeout}
	conn, err := dialer.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("the registration socket: %w", err)
	}
	return conn.Close()
}
