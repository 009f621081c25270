//go:build tools

// Package tools pins the main packages built by hack/build-envtest.sh: etcd and kube-apiserver
// for envtest, and (with `hack/build-envtest.sh node`) the rest of a single node for test/node.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
