// Command tokenproxy is a credential and token broker for APIs that demand
// mTLS, short-lived bearer tokens and signed requests.
package main

func main() {}
