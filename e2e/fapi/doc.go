// Package fapi holds the end-to-end tests of tokenproxy's FAPI 2.0 client:
// the released binary (built from cmd/tokenproxy), configured only by a
// YAML file, against panva's OpenID-certified oidc-provider with the FAPI
// 2.0 Security Profile and a resource server that verifies
// sender-constrained tokens (testkit/fapitest), and against the Go FAPI 2.0
// bank emulator (emulator/fapi) where the certified server cannot play the
// part (a bank without PAR). It has no code outside its tests.
package fapi
