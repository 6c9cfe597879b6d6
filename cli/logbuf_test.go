package cli

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/tokenproxy/tokenproxy/config"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// run's logger holds info lines back and writes them, in order, when a warning comes or on Sync.
func TestRunLoggerBatchesInfoAndFlushesOnWarn(t *testing.T) {
	var out lockedBuffer
	e := &env{stderr: &out}
	log, err := e.buildRunLogger(config.Log{Level: "info", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = log.Sync() }()
	log.Info("first")
	if got := out.String(); got != "" {
		t.Fatalf("an info line was written at once: %q", got)
	}
	log.Warn("second")
	got := out.String()
	if i, j := strings.Index(got, `"first"`), strings.Index(got, `"second"`); i < 0 || j < i {
		t.Fatalf("after a warning the output is %q; want both lines in order", got)
	}
	log.Info("third")
	if err := log.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if !strings.Contains(out.String(), `"third"`) {
		t.Fatalf("Sync did not flush: %q", out.String())
	}
}
