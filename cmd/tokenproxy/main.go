// Command tokenproxy is a credential and token broker for APIs that demand
// mTLS, short-lived bearer tokens and signed requests.
package main

import (
	"os"

	"github.com/tokenproxy/tokenproxy/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:]))
}
