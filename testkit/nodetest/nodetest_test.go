package nodetest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPackagesLoad installs the packages and imports each from a script.
func TestPackagesLoad(t *testing.T) {
	src := []byte(`import * as jose from 'jose';
import Provider from 'oidc-provider';
import { chromium } from 'playwright-core';
console.log([typeof jose.jwtVerify, typeof Provider, typeof chromium.launch].join(' '));
`)
	p := Script(t, "load.mjs", src)
	out, err := exec.Command(Node(t), p).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	// oidc-provider warns on stderr about Node.js 20 and works on it.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if got := lines[len(lines)-1]; got != "function function function" {
		t.Fatalf("imports: %q", got)
	}
}
