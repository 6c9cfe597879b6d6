package config

import "time"

// SigningOptions are a route's signing options, as the signer package reads
// them (signer.Options has the same fields; the route builder converts).
type SigningOptions struct {
	// Profile is berlin-group, stet, custom, rfc9421 or ob-detached-jws. Required.
	Profile string `yaml:"profile"`
	// Algorithm: rsa-sha256 (default) or rsa-sha512 for berlin-group, stet and custom; rsa-v1_5-sha256,
	// rsa-pss-sha512, ecdsa-p256-sha256 or ed25519 for rfc9421 (default: rsa-pss-sha512 for an RSA key,
	// ecdsa-p256-sha256 for a P-256 key, ed25519 for an Ed25519 key); PS256 or ES256 for ob-detached-jws
	// (default: PS256 for an RSA key, ES256 for a P-256 key).
	Algorithm string `yaml:"algorithm"`
	// Digest is the hash of Digest and Content-Digest: SHA-256 (default) or SHA-512.
	Digest string `yaml:"digest"`
	// KeyID is the keyId (cavage) or keyid (rfc9421) template. Placeholders: {serial}, {serial_decimal},
	// {issuer}, {subject}, {public_key} (base64 DER SubjectPublicKeyInfo), {certificate} (base64 DER),
	// {certificate_sha256} (hex). Default for berlin-group: "SN={serial},CA={issuer}". Required for stet
	// (the URL where the QSealC is published, or "{public_key}"), custom, rfc9421 and ob-detached-jws (the
	// JWS kid: the key's id at the trust anchor).
	KeyID string `yaml:"key_id"`
	// Headers lists the covered headers (custom: required; "(request-target)" allowed) or RFC 9421
	// components (rfc9421: default "@method" "@authority" "@path" "@query" "content-digest" "date"
	// "x-request-id"). Not allowed for berlin-group and stet, whose lists are fixed.
	Headers []string `yaml:"headers"`
	// OptionalHeaders are covered when the request carries them, after Headers. "psu-*" stands for every
	// PSU-* header. Defaults: berlin-group psu-id, psu-corporate-id, tpp-redirect-uri; stet psu-* and
	// content-type; rfc9421 content-type.
	OptionalHeaders []string `yaml:"optional_headers"`
	// CertificateHeader names a header that carries the base64 DER signing certificate.
	// Default for berlin-group: TPP-Signature-Certificate; "none" turns it off.
	CertificateHeader string `yaml:"certificate_header"`
	// SerialFormat formats {serial}: hex (upper case, default), hex-lower or decimal.
	SerialFormat string `yaml:"serial_format"`
	// DNOrder orders {issuer} and {subject}: rfc4514 (default) or certificate.
	DNOrder string `yaml:"dn_order"`
	// RFC2047 wraps the Signature header as =?utf-8?B?<base64>?= when it is not ASCII (berlin-group default: true).
	RFC2047 *bool `yaml:"rfc2047"`

	// Label is the RFC 9421 signature label (default sig1).
	Label string `yaml:"label"`
	// IncludeAlg adds the alg parameter to Signature-Input (rfc9421, default true).
	IncludeAlg *bool `yaml:"include_alg"`
	// Expires adds an expires parameter this long after created (rfc9421; 0: none).
	Expires time.Duration `yaml:"expires"`
	// Tag adds a tag parameter (rfc9421).
	Tag string `yaml:"tag"`

	// InteractionID sets x-fapi-interaction-id: the app's value when it is a UUID, a new UUID v4
	// otherwise (default: true on ob-detached-jws, false elsewhere).
	InteractionID *bool `yaml:"interaction_id"`
	// JWSB64Claim puts "b64": false in the JWS header and signs the body unencoded (RFC 7797), as Open
	// Banking v3.1.3 and earlier ask; false leaves b64 out and signs the base64url body, as v3.1.4 and
	// later ask (ob-detached-jws, default true).
	JWSB64Claim *bool `yaml:"jws_b64_claim"`
	// JWSIssuer is the http://openbanking.org.uk/iss claim, a template with the key_id placeholders:
	// "<org-id>/<software-statement-id>" as the Open Banking Directory issued them, or "{subject}" for the
	// signing certificate's subject (ob-detached-jws, required).
	JWSIssuer string `yaml:"jws_issuer"`
	// JWSTrustAnchor is the http://openbanking.org.uk/tan claim (ob-detached-jws, default openbanking.org.uk).
	JWSTrustAnchor string `yaml:"jws_trust_anchor"`
}
