// Package nodetest installs the Node packages some tests drive (an
// OpenID-certified authorization server, an independent JOSE library, a
// headless-browser driver) from this folder's package-lock.json, once per
// lock, and places test scripts where they resolve them.
//
// The packages land in $TOKENPROXY_CACHE/node-<lock hash> (default
// ~/.cache/tokenproxy): `npm ci` runs the first time only, under a file
// lock, so test packages running in parallel share one install. npm's
// registry must be reachable the first time; later runs need no network.
package nodetest

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

//go:embed package.json
var packageJSON []byte

//go:embed package-lock.json
var packageLock []byte

// Install makes sure the packages are installed and returns the folder
// holding package.json and node_modules. It fails the test when node or npm
// is missing or the install fails.
func Install(t testing.TB) string {
	t.Helper()
	dir, err := install()
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	return dir
}

// Script writes a module script into the install folder (so its imports
// resolve to the installed packages) under a name unique to the test and
// returns its path. The file is removed when the test ends.
func Script(t testing.TB, name string, src []byte) string {
	t.Helper()
	dir := Install(t)
	f, err := os.CreateTemp(dir, "script-*-"+filepath.Base(name))
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	path := f.Name()
	t.Cleanup(func() { _ = os.Remove(path) })
	if _, err := f.Write(src); err != nil {
		_ = f.Close()
		t.Fatalf("nodetest: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	return path
}

// Node returns the path of the node binary, failing the test without one.
func Node(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("nodetest: node is not installed (Debian: apt-get install nodejs npm)")
	}
	return p
}

func cacheRoot() (string, error) {
	if d := os.Getenv("TOKENPROXY_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "tokenproxy"), nil
}

func install() (string, error) {
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("npm is not installed (Debian: apt-get install nodejs npm)")
	}
	root, err := cacheRoot()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(append([]byte{}, packageJSON...), packageLock...))
	dir := filepath.Join(root, "node-"+hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	done := filepath.Join(dir, ".installed")
	if _, err := os.Stat(done); err == nil {
		return dir, nil
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600) //nolint:gosec // the cache folder this package made
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", dir, err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(done); err == nil {
		return dir, nil
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), packageJSON, 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "package-lock.json"), packageLock, 0o600); err != nil {
		return "", err
	}
	start := time.Now()
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", dir, err, out)
	}
	if err := os.WriteFile(done, []byte(time.Since(start).String()+"\n"), 0o600); err != nil {
		return "", err
	}
	return dir, nil
}
