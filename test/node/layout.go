package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Slots are independent nodes that can run side by side on one machine (two worktrees running
// `make test` at once). Everything a slot creates carries its name, so a later run can find and
// remove what a killed run left behind without touching anything else.
const maxSlots = 4

// addressBlock holds every address the nodes use: slot s takes 10.213.(16*s).0/20, of which
//
//	10.213.(16s+0).0/24  the link between the host and the node (host .1, node .2)
//	10.213.(16s+1).0/24  pods (the CNI bridge is .1)
//	10.213.(16s+2).0/24  Service cluster IPs (the `kubernetes` Service is .1)
//
// 10.213.0.0/16 was unused on the machines this was written on; Start refuses to run when an
// address or route of this machine overlaps the slot's /20, and the node's network namespace has
// no default route: pods reach this machine and nothing else.
var addressBlock = netip.MustParsePrefix("10.213.0.0/16")

// marker is the environment variable every process of a node carries (value: the slot name),
// how the cleanup recognises a killed run's processes.
const marker = "MLFLOW_TOKEN_OPERATOR_NODE"

// layout is the names and addresses of one slot.
type layout struct {
	slot int
	name string // mtonode-<slot>: node name, host-side link, cgroup root, scratch directory

	scratch string // /tmp/mtonode-<slot>: configs, certificates, etcd, containerd, kubelet

	block     netip.Prefix // the slot's /20
	hostIP    netip.Addr   // host side of the link: the API server listens here; pods reach the host here
	nodeIP    netip.Addr   // node side of the link: the kubelet's node IP
	linkNet   netip.Prefix
	podCIDR   netip.Prefix
	podGW     netip.Addr
	svcCIDR   netip.Prefix
	serviceIP netip.Addr // the `kubernetes` Service's ClusterIP
}

func newLayout(slot int) layout {
	base := addressBlock.Addr().As4()
	third := func(k int) [4]byte { return [4]byte{base[0], base[1], byte(16*slot + k), 0} }
	at := func(k, host int) netip.Addr { b := third(k); b[3] = byte(host); return netip.AddrFrom4(b) }
	name := fmt.Sprintf("mtonode-%d", slot)
	return layout{
		slot:      slot,
		name:      name,
		scratch:   filepath.Join("/tmp", name),
		block:     netip.PrefixFrom(netip.AddrFrom4(third(0)), 20),
		hostIP:    at(0, 1),
		nodeIP:    at(0, 2),
		linkNet:   netip.PrefixFrom(at(0, 0), 24),
		podCIDR:   netip.PrefixFrom(at(1, 0), 24),
		podGW:     at(1, 1),
		svcCIDR:   netip.PrefixFrom(at(2, 0), 24),
		serviceIP: at(2, 1),
	}
}

func (l layout) path(elem ...string) string {
	return filepath.Join(append([]string{l.scratch}, elem...)...)
}

// lockName is an abstract unix socket: the kernel releases it when the last process holding it
// exits, so a killed run never leaves a stale lock, and nothing is written to disk. The reaper
// inherits it, so the slot stays locked until its cleanup is done.
func (l layout) lockName() string { return "@mlflow-token-operator/node/" + l.name }

// errSlotBusy says another live process holds the slot.
var errSlotBusy = errors.New("slot busy")

func (l layout) lock() (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: l.lockName(), Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, errSlotBusy
		}
		return nil, err
	}
	return ln, nil
}

// checkAddressesFree fails when an address or route of this machine overlaps the slot's block
// (the slot's own link is removed by the cleanup that runs before).
func (l layout) checkAddressesFree() error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, iface := range ifaces {
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err == nil && p.Overlaps(l.block) {
				return fmt.Errorf("address %s on %s overlaps %s, the addresses the node needs", a, iface.Name, l.block)
			}
		}
	}
	out, err := run("ip", "-4", "-o", "route", "show", "table", "all")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if (dst == "local" || dst == "broadcast" || dst == "unicast" || dst == "multicast") && len(f) > 1 {
			dst = f[1]
		}
		if dst == "default" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil && p.Overlaps(l.block) {
			return fmt.Errorf("route %q overlaps %s, the addresses the node needs", strings.TrimSpace(line), l.block)
		}
	}
	return nil
}

func isRoot() bool { return os.Geteuid() == 0 }
