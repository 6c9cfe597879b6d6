package signer

// OwnedHeaders returns the request headers a signer with these options sets
// on every request, so that an app's own values of them are dropped before
// signing: the digest and signature headers and, when the profile sends one,
// the signing certificate's header; x-jws-signature on profile ob-detached-jws.
// x-fapi-interaction-id is not owned: an app's valid one is kept.
func (o *Options) OwnedHeaders() ([]string, error) {
	p, err := o.plan()
	if err != nil {
		return nil, err
	}
	if p.jws != nil {
		return []string{HeaderJWSSignature}, nil
	}
	h := []string{"Digest", "Content-Digest", "Signature", "Signature-Input"}
	if p.certHeader != "" {
		h = append(h, p.certHeader)
	}
	return h, nil
}
