package route

import (
	"context"
	"net/http"
	"time"
)

// Subjects is how a per-customer route reads the customer (subject) an app
// names, and turns caller and subject into the token's cache key.
type Subjects struct {
	// Header names the subject; tokenproxy owns it, so it never reaches the upstream.
	Header string
	// Required refuses requests that name no subject.
	Required bool
	// Key returns the cache key of caller's customer subject, or an error
	// when subject is not a valid name. Keys of different callers differ,
	// so callers never share a customer.
	Key func(caller, subject string) (string, error)
}

// SetSubjects makes the route serve a token per subject (s.Header is
// owned) and sweeps idle customers' tokens from the cache.
func (r *Route) SetSubjects(s Subjects) {
	s.Header = http.CanonicalHeaderKey(s.Header)
	r.subjects = &s
	r.Own(s.Header)
	r.AddJob(r.sweepSubjects)
}

// Subject returns the subject the request names in the route's subject
// header; named is false when the route has no subjects or the header is
// absent.
func (r *Route) Subject(req *http.Request) (subject string, named bool) {
	if r.subjects == nil {
		return "", false
	}
	v := req.Header[r.subjects.Header]
	if len(v) == 0 || v[0] == "" {
		return "", false
	}
	return v[0], true
}

// SubjectHeader is the header naming the subject; "" on routes without subjects.
func (r *Route) SubjectHeader() string {
	if r.subjects == nil {
		return ""
	}
	return r.subjects.Header
}

// SubjectError is a request whose subject header cannot name a token.
type SubjectError struct {
	// Header is the route's subject header.
	Header string
	// Missing is true when the route requires a subject and none was named;
	// otherwise the named subject is not valid (Err says why).
	Missing bool
	Err     error
}

func (e *SubjectError) Error() string {
	if e.Missing {
		return "no subject in " + e.Header
	}
	return "invalid subject in " + e.Header + ": " + e.Err.Error()
}

func (e *SubjectError) Unwrap() error { return e.Err }

// TokenKey says which token a request on the route needs, for caller (the
// authenticated gateway caller, or ""): the cache key, and whether a token
// is attached at all. Routes without a token use none; a route with one
// token uses key ""; a per-customer route uses the subject's key, none when
// the app names no subject on a route where that is allowed, and a
// *SubjectError when the subject is missing but required, or invalid.
func (r *Route) TokenKey(req *http.Request, caller string) (key string, use bool, err error) {
	if r.Tokens == nil {
		return "", false, nil
	}
	if r.subjects == nil {
		return "", true, nil
	}
	subject, named := r.Subject(req)
	switch {
	case !named && r.subjects.Required:
		return "", false, &SubjectError{Header: r.subjects.Header, Missing: true}
	case !named:
		return "", false, nil
	}
	key, err = r.subjects.Key(caller, subject)
	if err != nil {
		return "", false, &SubjectError{Header: r.subjects.Header, Err: err}
	}
	return key, true, nil
}

// sweepSubjects drops, every 10 minutes, the cached tokens of customers
// idle for an hour, so memory follows the active customers, not all
// customers ever seen (their consents stay in the store).
func (r *Route) sweepSubjects(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if r.Tokens != nil {
				r.Tokens.Sweep(time.Hour)
			}
		}
	}
}
