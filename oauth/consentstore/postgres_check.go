package consentstore

import (
	"context"
	"crypto/tls"
	"fmt"
)

// PostgresStatus is what ProbePostgres found: the server, how the
// connection is protected and the schema version, for `tokenproxy check`.
type PostgresStatus struct {
	// Server is the server's version, e.g. "15.8 (Debian 15.8-0+deb12u1)".
	Server string
	// TLS is the protocol version, e.g. "TLS 1.3"; "" when the connection
	// is not encrypted (tls.mode disable).
	TLS string
	// Verified says what of the server's certificate was verified: "host
	// name NAME and certificate chain" (verify-full), "certificate chain
	// only" (verify-ca, or require with a CA file) or "" (require: none).
	Verified string
	// Schema is the database's schema version (0: not migrated); Want is
	// the one this binary needs.
	Schema, Want int
}

// ProbePostgres connects to the store as OpenPostgres does (one
// connection, the same errors) and reports the connection and the schema
// version, without migrating and without checking the key.
func ProbePostgres(ctx context.Context, c PostgresConfig) (PostgresStatus, error) {
	c.MaxConns = 1
	pool, err := connect(ctx, c)
	if err != nil {
		return PostgresStatus{}, err
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return PostgresStatus{}, classify(err)
	}
	pc := conn.Conn().PgConn()
	st := PostgresStatus{Server: pc.ParameterStatus("server_version"), Want: latestMigration()}
	if tc, ok := pc.Conn().(*tls.Conn); ok {
		st.TLS = tls.VersionName(tc.ConnectionState().Version)
		switch cfg := conn.Conn().Config().TLSConfig; {
		case cfg == nil:
		case !cfg.InsecureSkipVerify:
			st.Verified = fmt.Sprintf("host name %s and certificate chain", cfg.ServerName)
		case cfg.VerifyPeerCertificate != nil:
			st.Verified = "certificate chain only"
		}
	}
	conn.Release() // the pool's one connection, for the query below
	if st.Schema, err = schemaVersion(ctx, pool); err != nil {
		return st, permission(err)
	}
	return st, nil
}
