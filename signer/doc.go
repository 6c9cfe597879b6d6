// Package signer adds the signing headers that PSD2 and other bank APIs demand to an outgoing request:
// Digest (RFC 3230) and Content-Digest (RFC 9530), Date, X-Request-ID, an HTTP signature in the form of
// draft-cavage-http-signatures-10 (profiles berlin-group, stet and custom) or RFC 9421 (profile rfc9421),
// and the signing certificate header some banks require; or, on profile ob-detached-jws, the UK Open
// Banking detached JWS of the body in x-jws-signature. Any profile may set x-fapi-interaction-id.
//
// A Signer is built once per route from that route's Options and a KeySource. Everything that does not
// depend on the request (covered header lists, keyId, certificate header, header prefixes) is computed
// when the key is first seen and again only when the KeySource returns a different certificate, so Sign
// does little beyond hashing the body, building the signing string and calling the key's Sign method.
//
// Signing goes through crypto.Signer only: an in-memory RSA, ECDSA or Ed25519 key and a remote signer
// (for example Vault Transit) are used the same way.
package signer
