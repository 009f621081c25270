package uninstall

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
)

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"revoke": ModeRevoke, "orphan": ModeOrphan} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "Revoke", "delete"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) accepted", bad)
		}
	}
}

// The behaviour with resources is tested against a real API server, Keycloak and operator in
// test/uninstall, and without the CRD in test/packaging (TestUninstallWithoutCRD).
func TestZeroTimeoutIsRefused(t *testing.T) {
	if _, err := Run(context.Background(), nil, Options{Mode: ModeRevoke}, logr.Discard()); err == nil {
		t.Error("a zero timeout is accepted")
	}
}
