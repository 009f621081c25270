package manager

import "github.com/go-logr/logr"

// MaxVerbosity is the most verbose level the operator logs at. client-go dumps the bodies of
// requests and responses at V(8), Secret data included (the tokens in the operator's Secrets,
// the client secrets it reads): no flag may turn that on, so levels beyond 7 are dropped. V(6)
// and V(7) (URLs, status codes, headers with bearer tokens masked) stay available.
const MaxVerbosity = 7

// SafeLogger caps l at MaxVerbosity. cmd/main.go and the test harnesses log through it.
func SafeLogger(l logr.Logger) logr.Logger {
	if l.GetSink() == nil {
		return l
	}
	return l.WithSink(cappedSink{l.GetSink()})
}

type cappedSink struct{ logr.LogSink }

func (s cappedSink) Enabled(level int) bool { return level <= MaxVerbosity && s.LogSink.Enabled(level) }

func (s cappedSink) Info(level int, msg string, kv ...any) {
	if level <= MaxVerbosity {
		s.LogSink.Info(level, msg, kv...)
	}
}

func (s cappedSink) WithValues(kv ...any) logr.LogSink {
	return cappedSink{s.LogSink.WithValues(kv...)}
}

func (s cappedSink) WithName(name string) logr.LogSink { return cappedSink{s.LogSink.WithName(name)} }

// WithCallDepth keeps the caller's file and line right through the wrapper.
func (s cappedSink) WithCallDepth(depth int) logr.LogSink {
	if d, ok := s.LogSink.(logr.CallDepthLogSink); ok {
		return cappedSink{d.WithCallDepth(depth)}
	}
	return s
}
