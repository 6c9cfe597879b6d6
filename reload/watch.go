package reload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Watch calls reload whenever the content of the file at path changed and
// then stayed unchanged for debounce, until ctx ends. It watches the
// file's directory, not the file: editors and the kubelet replace a file
// by writing another and renaming it over (or by swapping a symbolic link
// to a directory), which a watch on the file itself would lose. Any event
// in the directory starts the debounce; the file is then read, and reload
// is called only when its bytes differ from those of the last call (or
// from those at the start), so a touch or another file's change reloads
// nothing. A file that cannot be read at that moment (in the middle of a
// replace) waits for the next event. Watch returns an error only when the
// watch cannot be set up.
func Watch(ctx context.Context, path string, debounce time.Duration, log *zap.Logger, reload func()) error {
	if log == nil {
		log = zap.NewNop()
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	defer w.Close()
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watching directory %s: %w", dir, err)
	}
	last, _ := digest(path)
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("watching the configuration file", zap.String("dir", dir), zap.Error(err))
		case <-timer.C:
			d, err := digest(path)
			if err != nil || bytes.Equal(d, last) {
				continue
			}
			last = d
			reload()
		}
	}
}

func digest(path string) ([]byte, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the operator names the configuration file
	if err != nil {
		return nil, err
	}
	s := sha256.Sum256(b)
	return s[:], nil
}
