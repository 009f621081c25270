package manager

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

func TestSafeLoggerDropsBodyDumps(t *testing.T) {
	var buf bytes.Buffer
	l := SafeLogger(zap.New(zap.WriteTo(&buf), zap.Level(zapcore.Level(-10))))
	l.V(7).Info("headers")
	l.V(8).Info("Response Body", "body", "s3cr3t")
	l.WithName("client").WithValues("k", "v").V(9).Info("Request Body", "body", "s3cr3t")
	if strings.Contains(buf.String(), "s3cr3t") || !strings.Contains(buf.String(), "headers") {
		t.Fatalf("log:\n%s", buf.String())
	}
	if l.V(8).Enabled() {
		t.Fatal("V(8) enabled")
	}
}
