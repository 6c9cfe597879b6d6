package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Reloader polls a Source and swaps a Holder's certificate when the source
// changes. New material is stored only after it parsed and passed Check; a
// failed reload leaves the old certificate serving and is logged once per
// distinct bad version.
type Reloader struct {
	Name     string // what the certificate is for, e.g. "route bankingcircle client certificate"
	Holder   *Holder
	Source   Source
	Interval time.Duration
	Log      *zap.Logger
	Now      func() time.Time
	// OnResult, if set, is called after each reload attempt that found a change.
	OnResult func(ok bool)
	// Validate, if set, must accept new material before it is stored (e.g.
	// the signer checking the key can do the configured algorithm).
	Validate func(*tls.Certificate) error

	version    string
	badVersion string
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
// It reports whether a new certificate was stored.
func (r *Reloader) Poll(ctx context.Context) (bool, error) {
	c, v, err := r.Source.Fetch(ctx, r.version)
	if err == nil && c == nil {
		return false, nil // unchanged
	}
	if err == nil {
		err = Check(c, r.now())
	}
	if err == nil && r.Validate != nil {
		err = r.Validate(c)
	}
	if err != nil {
		if v != r.badVersion {
			r.badVersion = v
			r.Log.Error("certificate reload failed; the previous certificate keeps serving",
				zap.String("certificate", r.Name), zap.String("source", r.Source.String()), zap.Error(err))
		}
		if r.OnResult != nil {
			r.OnResult(false)
		}
		return false, err
	}
	r.version = v
	r.badVersion = ""
	r.Holder.Store(c)
	r.Log.Info("certificate reloaded",
		zap.String("certificate", r.Name), zap.String("source", r.Source.String()),
		zap.String("subject", c.Leaf.Subject.String()), zap.String("serial", c.Leaf.SerialNumber.Text(16)),
		zap.Time("not_after", c.Leaf.NotAfter))
	if r.OnResult != nil {
		r.OnResult(true)
	}
	return true, nil
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
