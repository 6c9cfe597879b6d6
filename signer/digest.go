package signer

import (
	"crypto/sha256"
	"crypto/sha512"
)

type digestAlg int

const (
	digestSHA256 digestAlg = iota + 1
	digestSHA512
)

// sum appends the digest of body to dst.
func (d digestAlg) sum(dst, body []byte) []byte {
	if d == digestSHA512 {
		s := sha512.Sum512(body)
		return append(dst, s[:]...)
	}
	s := sha256.Sum256(body)
	return append(dst, s[:]...)
}

// digestPrefix is the RFC 3230 Digest prefix, e.g. "SHA-256=".
func (d digestAlg) digestPrefix() string {
	if d == digestSHA512 {
		return "SHA-512="
	}
	return "SHA-256="
}

// contentDigestKey is the RFC 9530 Content-Digest key, e.g. "sha-256".
func (d digestAlg) contentDigestKey() string {
	if d == digestSHA512 {
		return "sha-512"
	}
	return "sha-256"
}
