// Command coredns is CoreDNS (github.com/coredns/coredns, pinned in go.mod) with only the plugins
// the test node's cluster DNS uses: bind, errors, log and kubernetes. test/node runs it as the
// node's cluster DNS, serving cluster.local from the node's API server, as CoreDNS does in
// production clusters. Built by `hack/build-envtest.sh node` into bin/k8s/coredns.
//
// CoreDNS' own main imports every plugin (core/plugin); a build with a subset imports those
// plugins and sets dnsserver.Directives to them, in CoreDNS' order (core/dnsserver/zdirectives.go).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "log", "kubernetes"}
}

func main() {
	coremain.Run()
}
