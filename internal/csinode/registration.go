package csinode

import (
	"context"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// The kubelet's plugin watcher finds this socket in its plugins_registry directory, asks GetInfo,
// connects to the CSI socket it names and reports the outcome. It is what the
// node-driver-registrar sidecar does, served here by the plugin itself: one container less, one
// image less.

type registrationServer struct {
	registerapi.UnimplementedRegistrationServer
	name, endpoint string
	log            logr.Logger
}

func (s *registrationServer) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: s.name, Endpoint: s.endpoint, SupportedVersions: []string{"1.0.0"}}, nil
}

func (s *registrationServer) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	metrics.CSIRegistered(st.PluginRegistered)
	if st.PluginRegistered {
		s.log.Info("Registered with the kubelet", "driver", s.name)
	} else {
		s.log.Info("The kubelet refused the registration", "driver", s.name, "error", st.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// ServeRegistration serves the kubelet's plugin-registration API on socket (in the kubelet's
// plugins_registry directory) until ctx ends. csiSocket is the CSI socket's path as the kubelet
// sees it.
func ServeRegistration(ctx context.Context, socket, driver, csiSocket string, log logr.Logger) error {
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registrationServer{name: driver, endpoint: csiSocket, log: log})
	return serveUnix(ctx, srv, socket)
}
