package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The production binary carries none of the test world: no bank emulator
// (with its fault injection), no test kit (in-memory CAs, test servers), no
// demo, and neither net/http/httptest nor testing.
func TestNoTestCodeInBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const module = "github.com/tokenproxy/tokenproxy/"
	var bad []string
	for pkg := range strings.FieldsSeq(string(out)) {
		switch {
		case pkg == "net/http/httptest", pkg == "testing",
			strings.HasPrefix(pkg, module+"emulator/"),
			strings.HasPrefix(pkg, module+"testkit/"),
			pkg == module+"demo", strings.HasPrefix(pkg, module+"demo/"):
			bad = append(bad, pkg)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("cmd/tokenproxy depends on test-only packages:\n  %s", strings.Join(bad, "\n  "))
	}
	if !strings.Contains(string(out), module+"cli\n") {
		t.Fatalf("go list -deps does not list %scli; the check reads the wrong output:\n%s", module, out)
	}
}
