package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Reloader polls a Source and swaps a Holder's certificate when the source
// changes. New material is stored only after it parsed and passed Check; a
// failed reload leaves the old certificate serving.
//
// Each event is logged and reported once, not once per poll: a stored
// version (Success), a refused version (Refused; the version is remembered
// and not fetched again while it stays current), and the start of a period in
// which the source cannot be read (Unreachable; logged again only after the
// source was readable in between). A version refused because it is not yet
// valid is fetched again once its NotBefore has passed.
//
// Poll and Run are meant for one goroutine: Run's, or a test's.
type Reloader struct {
	Name     string // what the certificate is for, e.g. "route bankingcircle client certificate"
	Holder   *Holder
	Source   Source
	Interval time.Duration
	Log      *zap.Logger
	Now      func() time.Time
	// Report, if set, is called once per reload event with its Result (see
	// the type comment), on the polling goroutine, after the Holder changed.
	Report func(Result)
	// Validate, if set, must accept new material before it is stored (e.g.
	// the signer checking the key can do the configured algorithm).
	Validate func(*tls.Certificate) error

	version     string    // of the certificate in the Holder
	badVersion  string    // last version refused, "" if none
	retryAt     time.Time // when a not-yet-valid badVersion is worth fetching again
	unreachable bool      // the last fetch could not read the source
}

// Load fetches the material once and stores it. It is used at start-up,
// where a failure is fatal.
func (r *Reloader) Load(ctx context.Context) error {
	c, v, err := r.Source.Fetch(ctx, "")
	if err != nil {
		return err
	}
	if err := Check(c, r.now()); err != nil {
		return fmt.Errorf("%s: %w", r.Source, err)
	}
	if r.Validate != nil {
		if err := r.Validate(c); err != nil {
			return err
		}
	}
	r.version = v
	r.Holder.Store(c)
	return nil
}

func (r *Reloader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Poll checks the source once and swaps the certificate if it changed.
// It reports whether a new certificate was stored, and returns the refusal
// of a new version or the failure to read the source. A refused version
// that is still current polls as unchanged: (false, nil).
func (r *Reloader) Poll(ctx context.Context) (bool, error) {
	known := r.version
	if r.badVersion != "" && (r.retryAt.IsZero() || r.now().Before(r.retryAt)) {
		known = r.badVersion // a refused version stays refused: do not fetch it again
	}
	c, v, err := r.Source.Fetch(ctx, known)
	if err != nil && !IsRefused(err) {
		r.noteUnreachable(err)
		return false, err
	}
	r.noteReadable()
	if c == nil && err == nil {
		return false, nil // unchanged
	}
	if err == nil {
		err = r.check(c)
	}
	if err != nil {
		r.noteRefused(v, err)
		return false, err
	}
	r.version, r.badVersion, r.retryAt = v, "", time.Time{}
	r.Holder.Store(c)
	r.Log.Info("certificate reloaded",
		zap.String("certificate", r.Name), zap.String("source", r.Source.String()),
		zap.String("subject", c.Leaf.Subject.String()), zap.String("serial", c.Leaf.SerialNumber.Text(16)),
		zap.Time("not_after", c.Leaf.NotAfter))
	r.report(Success)
	return true, nil
}

// check runs Check and Validate on new material.
func (r *Reloader) check(c *tls.Certificate) error {
	if err := Check(c, r.now()); err != nil {
		return err
	}
	if r.Validate != nil {
		return r.Validate(c)
	}
	return nil
}

// noteRefused logs and reports version v once; a not-yet-valid version is
// fetched again after its NotBefore.
func (r *Reloader) noteRefused(v string, err error) {
	retrying := !r.retryAt.IsZero() && !r.now().Before(r.retryAt)
	r.retryAt = time.Time{}
	var nyv *NotYetValidError
	if errors.As(err, &nyv) {
		r.retryAt = nyv.NotBefore
	}
	if v == r.badVersion && !retrying {
		return
	}
	r.badVersion = v
	r.Log.Error("certificate reload failed; the previous certificate keeps serving",
		zap.String("certificate", r.Name), zap.String("source", r.Source.String()), zap.Error(err))
	r.report(Refused)
}

// noteUnreachable logs and reports the start of a period in which the source cannot be read.
func (r *Reloader) noteUnreachable(err error) {
	if r.unreachable {
		return
	}
	r.unreachable = true
	r.Log.Warn("certificate source unreachable; the previous certificate keeps serving",
		zap.String("certificate", r.Name), zap.String("source", r.Source.String()), zap.Error(err))
	r.report(Unreachable)
}

func (r *Reloader) noteReadable() {
	if r.unreachable {
		r.unreachable = false
		r.Log.Info("certificate source readable again",
			zap.String("certificate", r.Name), zap.String("source", r.Source.String()))
	}
}

func (r *Reloader) report(res Result) {
	if r.Report != nil {
		r.Report(res)
	}
}

// Run polls every Interval until ctx is done.
func (r *Reloader) Run(ctx context.Context) {
	if r.Interval <= 0 {
		return
	}
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = r.Poll(ctx)
		}
	}
}

// Expiry returns the NotAfter of the held certificate, or the zero time.
func Expiry(c *tls.Certificate) time.Time {
	if c == nil || c.Leaf == nil {
		return time.Time{}
	}
	return c.Leaf.NotAfter
}
