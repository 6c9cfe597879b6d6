// Command tokenproxy is a credential and token broker for APIs that demand
// mTLS, short-lived bearer tokens and signed requests.
package main

import (
	"fmt"
	"os"

	"github.com/tokenproxy/tokenproxy/internal/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println(version.String())
		return
	}
	fmt.Fprintln(os.Stderr, "usage: tokenproxy version")
	os.Exit(2)
}
