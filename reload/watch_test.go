package reload_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/reload"
)

// TestWatchReplaceByRename: a file replaced by a rename (as editors and
// the kubelet do) reloads once after the debounce; rewriting the same
// bytes, or changing another file beside it, reloads nothing.
func TestWatchReplaceByRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenproxy.yaml")
	write := func(name, content string) {
		t.Helper()
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("tokenproxy.yaml", "one")
	reloads := make(chan string, 10) // the file's content at each reload
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- reload.Watch(ctx, path, 50*time.Millisecond, nil, func() {
			b, _ := os.ReadFile(path)
			reloads <- string(b)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	// The watch is set up before Watch reads the file the first time;
	// write until the first change is seen.
	deadline := time.After(5 * time.Second)
	for i := 0; ; i++ {
		write("tokenproxy.yaml", "two"+string(rune('a'+i%26)))
		select {
		case <-reloads:
		case <-time.After(300 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("a replaced file was not reloaded")
		}
		break
	}
	// The same bytes again, a file beside it, then one real change: the
	// change is the next (and only) reload.
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write("tokenproxy.yaml", string(cur))
	write("other.pem", "x")
	// Let the debounce of those two events pass, so that they are judged
	// on their own: the next reload seen must be the change below.
	time.Sleep(200 * time.Millisecond)
	write("tokenproxy.yaml", "three")
	select {
	case got := <-reloads:
		if got != "three" {
			t.Fatalf("reloaded %q: an unchanged file (or another file's change) reloaded", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the changed file was not reloaded")
	}
	select {
	case <-reloads:
		t.Fatal("reloaded more than once for one change (or for an unchanged file)")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestStatus(t *testing.T) {
	var s reload.Status
	if r := s.Last(); !r.Time.IsZero() || r.OK() {
		t.Fatalf("before any reload: %+v", r)
	}
	s.Record(reload.Result{Time: time.Now(), Outcome: reload.Failure, Error: "routes[0].upstream: missing"})
	if r := s.Last(); r.OK() || r.Error == "" {
		t.Fatalf("after a failure: %+v", r)
	}
}
