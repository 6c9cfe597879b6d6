// Command vaultdev is HashiCorp Vault's own command line, built from source as a
// test tool: the integration tests and CI run "vaultdev server -dev" on
// 127.0.0.1. It lives in a module of its own so that tokenproxy's go.mod does
// not carry Vault's dependency tree. Vault 1.15+ is BUSL-1.1: this binary is a
// test tool only and is never shipped in a tokenproxy image.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
