package node

import (
	"net/netip"
	"testing"
)

// Slots must never share an address or a name: two nodes run side by side.
func TestLayoutSlotsDisjoint(t *testing.T) {
	names := map[string]bool{}
	var blocks []netip.Prefix
	for s := 0; s < maxSlots; s++ {
		l := newLayout(s)
		if len(l.name) > 15 {
			t.Errorf("slot %d: %q is too long for a network interface name (15)", s, l.name)
		}
		if names[l.name] {
			t.Errorf("slot %d: name %q used twice", s, l.name)
		}
		names[l.name] = true
		if !addressBlock.Contains(l.block.Addr()) || l.block.Bits() < addressBlock.Bits() {
			t.Errorf("slot %d: block %s outside %s", s, l.block, addressBlock)
		}
		for _, b := range blocks {
			if b.Overlaps(l.block) {
				t.Errorf("slot %d: block %s overlaps %s", s, l.block, b)
			}
		}
		blocks = append(blocks, l.block)
		for _, a := range []netip.Addr{l.hostIP, l.nodeIP, l.podGW, l.serviceIP} {
			if !l.block.Contains(a) {
				t.Errorf("slot %d: %s outside its block %s", s, a, l.block)
			}
		}
		for _, p := range []netip.Prefix{l.linkNet, l.podCIDR, l.svcCIDR} {
			if !l.block.Contains(p.Addr()) {
				t.Errorf("slot %d: %s outside its block %s", s, p, l.block)
			}
		}
		if l.podCIDR.Overlaps(l.svcCIDR) || l.linkNet.Overlaps(l.podCIDR) || l.linkNet.Overlaps(l.svcCIDR) {
			t.Errorf("slot %d: link %s, pods %s and Services %s overlap", s, l.linkNet, l.podCIDR, l.svcCIDR)
		}
		if !l.linkNet.Contains(l.hostIP) || !l.linkNet.Contains(l.nodeIP) || !l.podCIDR.Contains(l.podGW) || !l.svcCIDR.Contains(l.serviceIP) {
			t.Errorf("slot %d: an address is outside its range: %+v", s, l)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b`:  "/tmp/a b",
		`/plain/path`:  "/plain/path",
		`/tab\011here`: "/tab\there",
		`/end\04`:      `/end\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
