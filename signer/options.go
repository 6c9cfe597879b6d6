package signer

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
)

// Profiles.
const (
	ProfileBerlinGroup = "berlin-group"
	ProfileSTET        = "stet"
	ProfileCustom      = "custom"
	ProfileRFC9421     = "rfc9421"
	// ProfileOBDetachedJWS signs the request body as the UK Open Banking Read/Write API (v3.1.x, "Message
	// Signing") asks: a detached JWS in the x-jws-signature header. See jwsprofile.go.
	ProfileOBDetachedJWS = "ob-detached-jws"
)

// Digest algorithms (option digest).
const (
	DigestSHA256 = "SHA-256"
	DigestSHA512 = "SHA-512"
)

// DefaultBerlinGroupCertificateHeader carries the base64 DER signing certificate on berlin-group routes.
const DefaultBerlinGroupCertificateHeader = "TPP-Signature-Certificate"

// Options is a route's `signing:` block.
type Options struct {
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

// ValidationError is an Options error. Field is relative to the signing block ("algorithm", "key_id",
// "certificate" for the signing certificate, "key" for the signing key).
type ValidationError struct {
	Field string
	Msg   string
}

func (e *ValidationError) Error() string { return "signing." + e.Field + ": " + e.Msg }

func verr(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks the options against the signing key and certificate at time now. key may be nil to
// check the options alone.
func (o *Options) Validate(key *tls.Certificate, now time.Time) error {
	p, err := o.plan()
	if err != nil {
		return err
	}
	if key == nil {
		return nil
	}
	_, err = p.keyState(key, now)
	return err
}

// plan is the validated, defaulted form of Options that does not depend on the key.
type plan struct {
	profile       string
	cavage        bool
	alg           *algorithm // nil for rfc9421 without algorithm: chosen per key
	digest        digestAlg
	keyID         string
	keyIDNeedCert bool
	headers       []string // cavage: covered headers (lower case); rfc9421: component names
	optional      []string // lower case; "psu-*" kept as a pattern
	certHeader    string   // canonical header name, "" for none
	serialFormat  string
	dnOrder       string
	rfc2047       bool
	label         string
	includeAlg    bool
	expires       time.Duration
	tag           string
	interactionID bool     // set x-fapi-interaction-id
	jws           *jwsPlan // ob-detached-jws; nil for the HTTP-signature profiles
}

var profiles = []string{ProfileBerlinGroup, ProfileSTET, ProfileCustom, ProfileRFC9421, ProfileOBDetachedJWS}

// berlin-group covers these, in this order (Berlin Group NextGenPSD2 implementation guidelines, section 12).
var berlinGroupHeaders = []string{"digest", "x-request-id", "date"}
var berlinGroupOptional = []string{"psu-id", "psu-corporate-id", "tpp-redirect-uri"}

// stet covers (request-target), the digest and request id, the date, and when present the psu-* headers
// and content-type (STET v1.4 part I section 3.5; the 89C3 sandbox example lists the psu-* headers).
var stetHeaders = []string{"(request-target)", "digest", "x-request-id", "date"}
var stetOptional = []string{"psu-*", "content-type"}

var rfc9421DefaultComponents = []string{"@method", "@authority", "@path", "@query", "content-digest", "date", "x-request-id"}
var rfc9421DefaultOptional = []string{"content-type"}

func (o *Options) plan() (*plan, error) {
	p := &plan{profile: o.Profile, includeAlg: true}
	switch o.Profile {
	case ProfileBerlinGroup, ProfileSTET, ProfileCustom:
		p.cavage = true
	case ProfileRFC9421:
	case ProfileOBDetachedJWS:
		if err := p.detachedJWS(o); err != nil {
			return nil, err
		}
		return p, nil
	case "":
		return nil, verr("profile", "required; use one of %s", strings.Join(profiles, ", "))
	default:
		return nil, verr("profile", "unknown profile %q; use one of %s", o.Profile, strings.Join(profiles, ", "))
	}

	for _, step := range []func(*Options) error{p.algorithm, p.formats, p.keyIDTemplate, p.coveredHeaders, p.certificateHeader,
		p.rfc9421Params, p.httpSignatureOnly} {
		if err := step(o); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// algorithm chooses the signature algorithm (rsa-sha256 by default on the cavage profiles).
func (p *plan) algorithm(o *Options) error {
	if p.cavage {
		switch a := o.Algorithm; a {
		case "":
			p.alg = algRSASHA256
		default:
			p.alg = cavageAlgorithms[a]
			if p.alg == nil {
				hint := ""
				if rfc9421Algorithms[a] != nil {
					hint = fmt.Sprintf("; %q is an RFC 9421 algorithm, for profile rfc9421", a)
				}
				return verr("algorithm", "unknown algorithm %q for profile %s; use rsa-sha256 or rsa-sha512%s", a, o.Profile, hint)
			}
		}
	} else if o.Algorithm != "" {
		p.alg = rfc9421Algorithms[o.Algorithm]
		if p.alg == nil {
			return verr("algorithm", "unknown algorithm %q for profile rfc9421; use rsa-v1_5-sha256, rsa-pss-sha512, ecdsa-p256-sha256 or ed25519", o.Algorithm)
		}
	}
	return nil
}

// formats checks the digest and the key id formats.
func (p *plan) formats(o *Options) error {
	switch strings.ToUpper(o.Digest) {
	case "", DigestSHA256:
		p.digest = digestSHA256
	case DigestSHA512:
		p.digest = digestSHA512
	default:
		return verr("digest", "unknown digest %q; use SHA-256 or SHA-512", o.Digest)
	}

	// Formats.
	switch o.SerialFormat {
	case "", SerialHexUpper, SerialHexLower, SerialDecimal:
		p.serialFormat = o.SerialFormat
	default:
		return verr("serial_format", "unknown format %q; use hex, hex-lower or decimal", o.SerialFormat)
	}
	switch o.DNOrder {
	case "", DNOrderRFC4514, DNOrderCertificate:
		p.dnOrder = o.DNOrder
	default:
		return verr("dn_order", "unknown order %q; use rfc4514 or certificate", o.DNOrder)
	}
	return nil
}

// keyIDTemplate sets the key id (the profile's default or the configured template) and checks it.
func (p *plan) keyIDTemplate(o *Options) error {
	p.keyID = o.KeyID
	if p.keyID == "" {
		switch o.Profile {
		case ProfileBerlinGroup:
			p.keyID = DefaultBerlinGroupKeyID
		case ProfileSTET:
			return verr("key_id", "required for profile stet: the URL where your QSealC is published "+
				`(e.g. "https://tpp.example.com/qsealc.pem"), or "{public_key}" for the base64 public key as the 89C3 sandbox shows`)
		case ProfileOBDetachedJWS:
			return verr("key_id", "required for profile ob-detached-jws: the kid under which the trust anchor "+
				"(the Open Banking Directory) publishes the signing key")
		default:
			return verr("key_id", "required for profile %s: the key identifier the bank registered, "+
				`e.g. a fixed name or a template such as "{certificate_sha256}"`, o.Profile)
		}
	}
	if strings.ContainsAny(p.keyID, "\"\\\r\n") {
		return verr("key_id", `must not contain '"', '\' or line breaks`)
	}
	needCert, err := parseKeyIDTemplate(p.keyID)
	if err != nil {
		return verr("key_id", "%v", err)
	}
	p.keyIDNeedCert = needCert
	return nil
}

// coveredHeaders sets the covered and optional headers the profile fixes or the options list.
func (p *plan) coveredHeaders(o *Options) error {
	var err error
	switch o.Profile {
	case ProfileBerlinGroup, ProfileSTET:
		if len(o.Headers) > 0 {
			return verr("headers", "profile %s fixes the covered headers; add headers with optional_headers or use profile custom", o.Profile)
		}
		if o.Profile == ProfileBerlinGroup {
			p.headers, p.optional = berlinGroupHeaders, berlinGroupOptional
		} else {
			p.headers, p.optional = stetHeaders, stetOptional
		}
	case ProfileCustom:
		if len(o.Headers) == 0 {
			return verr("headers", `required for profile custom: the covered headers in order, e.g. ["(request-target)", "date", "digest", "x-request-id"]`)
		}
		p.headers = o.Headers
	case ProfileRFC9421:
		p.headers, p.optional = rfc9421DefaultComponents, rfc9421DefaultOptional
		if len(o.Headers) > 0 {
			p.headers, p.optional = o.Headers, nil
		}
	}
	if len(o.OptionalHeaders) > 0 {
		p.optional = append(append([]string(nil), p.optional...), o.OptionalHeaders...)
	}
	if p.headers, err = normalizeNames("headers", p.headers, p.cavage, false); err != nil {
		return err
	}
	if p.optional, err = normalizeNames("optional_headers", p.optional, p.cavage, true); err != nil {
		return err
	}
	return nil
}

// certificateHeader sets the certificate header and RFC 2047 wrapping.
func (p *plan) certificateHeader(o *Options) error {
	switch h := o.CertificateHeader; {
	case strings.EqualFold(h, "none"):
	case h == "" && o.Profile == ProfileBerlinGroup:
		p.certHeader = DefaultBerlinGroupCertificateHeader
	case h == "":
	default:
		if !validToken(h) {
			return verr("certificate_header", "%q is not a valid header name", h)
		}
		p.certHeader = h
	}

	// RFC 2047.
	p.rfc2047 = o.Profile == ProfileBerlinGroup
	if o.RFC2047 != nil {
		if *o.RFC2047 && !p.cavage {
			return verr("rfc2047", "only for profiles berlin-group, stet and custom")
		}
		p.rfc2047 = *o.RFC2047
	}
	return nil
}

// rfc9421Params checks the RFC 9421 signature parameters (only that profile has them).
func (p *plan) rfc9421Params(o *Options) error {
	if p.cavage {
		switch {
		case o.Label != "":
			return verr("label", "only for profile rfc9421")
		case o.IncludeAlg != nil:
			return verr("include_alg", "only for profile rfc9421")
		case o.Expires != 0:
			return verr("expires", "only for profile rfc9421")
		case o.Tag != "":
			return verr("tag", "only for profile rfc9421")
		}
		return nil
	}
	p.label = o.Label
	if p.label == "" {
		p.label = "sig1"
	}
	if !validSFKey(p.label) {
		return verr("label", "%q is not a structured-field key: lower-case letters, digits, _ - . *, starting with a letter or *", p.label)
	}
	if o.IncludeAlg != nil {
		p.includeAlg = *o.IncludeAlg
	}
	if o.Expires < 0 {
		return verr("expires", "must not be negative")
	}
	p.expires = o.Expires
	if strings.ContainsAny(o.Tag, "\"\\\r\n") {
		return verr("tag", `must not contain '"', '\' or line breaks`)
	}
	p.tag = o.Tag
	return nil
}

// certOf returns the parsed signing certificate of key, or nil when it has none.
func certOf(key *tls.Certificate) (*x509.Certificate, error) {
	if key.Leaf != nil {
		return key.Leaf, nil
	}
	if len(key.Certificate) == 0 {
		return nil, nil
	}
	c, err := x509.ParseCertificate(key.Certificate[0])
	if err != nil {
		return nil, verr("certificate", "cannot parse the signing certificate: %v", err)
	}
	return c, nil
}

// keyState checks key against the plan and precomputes what Sign needs for it.
func (p *plan) keyState(key *tls.Certificate, now time.Time) (*keyState, error) {
	if key == nil || key.PrivateKey == nil {
		return nil, verr("key", "no signing key is loaded; configure the QSealC key and certificate for this route")
	}
	sk, ok := key.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, verr("key", "the signing key (%T) cannot sign: it does not implement crypto.Signer", key.PrivateKey)
	}
	pub := sk.Public()
	cert, err := certOf(key)
	if err != nil {
		return nil, err
	}
	if cert != nil {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		eq, ok := pub.(equaler)
		if !ok || !eq.Equal(cert.PublicKey) {
			return nil, verr("key", "the signing key (%s) does not belong to the signing certificate %q (serial %s, %s key); "+
				"load the private key issued with this certificate", certs.KeyDescription(pub), cert.Subject.String(),
				strings.ToUpper(cert.SerialNumber.Text(16)), certs.KeyDescription(cert.PublicKey))
		}
		if now.After(cert.NotAfter) {
			return nil, verr("certificate", "the signing certificate %q expired on %s; install a renewed QSealC",
				cert.Subject.String(), cert.NotAfter.UTC().Format(time.RFC3339))
		}
		if now.Before(cert.NotBefore) {
			return nil, verr("certificate", "the signing certificate %q is not valid before %s; check the clock or install the current QSealC",
				cert.Subject.String(), cert.NotBefore.UTC().Format(time.RFC3339))
		}
	} else {
		if p.keyIDNeedCert {
			return nil, verr("key_id", "%q needs a signing certificate but the key has none; load the certificate or use a fixed key_id", p.keyID)
		}
		if p.certHeader != "" {
			return nil, verr("certificate_header", "%s needs a signing certificate but the key has none; load the certificate", p.certHeader)
		}
		if p.jws != nil && p.jws.issuerNeedCert {
			return nil, verr("jws_issuer", "%q needs a signing certificate but the key has none; load the certificate or use a fixed jws_issuer", p.jws.issuer)
		}
	}
	if p.jws != nil {
		return p.jwsKeyState(key, sk, cert)
	}

	alg := p.alg
	kind := kindOf(pub)
	if alg == nil { // rfc9421 without algorithm: follow the key
		switch kind {
		case keyRSA:
			alg = algRSAPSSSHA512
		case keyECDSAP256:
			alg = algECDSAP256SHA256
		case keyEd25519:
			alg = algEd25519
		default:
			return nil, verr("algorithm", "no RFC 9421 algorithm signs with a %s key; use an RSA, ECDSA P-256 or Ed25519 key", certs.KeyDescription(pub))
		}
	} else if kind != alg.kind {
		return nil, verr("algorithm", "%q needs %s key but the signing key is %s; %s", alg.name,
			article(alg.kind), certs.KeyDescription(pub), algorithmHint(p.cavage, kind))
	}

	keyID, err := expandKeyID(p.keyID, cert, pub, p.serialFormat, p.dnOrder)
	if err != nil {
		return nil, verr("key_id", "%v", err)
	}
	return newKeyState(p, key, sk, cert, alg, keyID), nil
}

// article prefixes a key kind with its article; every kind here starts with a vowel sound.
func article(k keyKind) string { return "an " + k.String() }

func algorithmHint(cavage bool, have keyKind) string {
	switch {
	case cavage && have == keyECDSAP256:
		return `use "ecdsa-p256-sha256" with profile rfc9421 or an RSA key`
	case cavage && have == keyEd25519:
		return `use "ed25519" with profile rfc9421 or an RSA key`
	case cavage:
		return "draft-cavage profiles sign with RSA keys; load an RSA key"
	case have == keyRSA:
		return `use "rsa-pss-sha512" or "rsa-v1_5-sha256", or a key of the algorithm's kind`
	case have == keyECDSAP256:
		return `use "ecdsa-p256-sha256", or a key of the algorithm's kind`
	case have == keyEd25519:
		return `use "ed25519", or a key of the algorithm's kind`
	}
	return "use an RSA, ECDSA P-256 or Ed25519 key"
}
