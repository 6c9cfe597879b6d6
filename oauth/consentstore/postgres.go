package consentstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Errors of OpenPostgres; test with errors.Is.
var (
	// ErrNotMigrated: the database lacks the schema this binary needs.
	ErrNotMigrated = errors.New("the consent store's schema is not migrated to this version; run `tokenproxy store migrate --config FILE`, or set consents.store.postgres.migrate_on_start: true")
	// ErrPostgresAuth: the server refused the user or password.
	ErrPostgresAuth = errors.New("postgres refused the user or password")
	// ErrPostgresUnreachable: no connection could be made to the server.
	ErrPostgresUnreachable = errors.New("postgres server unreachable")
)

// PostgresConfig says how to reach the Postgres consent store.
type PostgresConfig struct {
	// DSN is a libpq connection string or postgres:// URL; when set, Host,
	// Port, Database, User and the TLS fields other than ServerName are
	// not used (the DSN says them, sslmode included).
	DSN      string
	Host     string
	Port     int
	Database string
	User     string
	// Password is never part of the DSN given here.
	Password string
	// TLSMode is disable, require, verify-ca or verify-full (libpq's sslmode).
	TLSMode    string
	CAFile     string
	ServerName string
	// MaxConns bounds the pool (0: 10).
	MaxConns int
	// ConnectTimeout bounds each connection attempt (0: 5 s).
	ConnectTimeout time.Duration
}

func quoteConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// cloneTLS returns t with ServerName set; nil stays nil (no TLS).
func cloneTLS(t *tls.Config, name string) *tls.Config {
	if t == nil {
		return nil
	}
	t = t.Clone()
	t.ServerName = name
	return t
}

// poolConfig builds the pgxpool configuration.
func (c PostgresConfig) poolConfig() (*pgxpool.Config, error) {
	conn := c.DSN
	if conn == "" {
		var kv []string
		add := func(k, v string) {
			if v != "" {
				kv = append(kv, k+"="+quoteConnValue(v))
			}
		}
		add("host", c.Host)
		if c.Port != 0 {
			add("port", strconv.Itoa(c.Port))
		}
		add("dbname", c.Database)
		add("user", c.User)
		add("sslmode", c.TLSMode)
		add("sslrootcert", c.CAFile)
		conn = strings.Join(kv, " ")
		if err := checkCAFile(c.CAFile); err != nil {
			return nil, err
		}
	}
	pc, err := pgxpool.ParseConfig(conn)
	if err != nil {
		return nil, errors.New("the postgres connection settings do not parse (check dsn, host, port and tls.mode)")
	}
	cc := pc.ConnConfig
	if c.Password != "" {
		cc.Password = c.Password
	}
	if c.ServerName != "" {
		cc.TLSConfig = cloneTLS(cc.TLSConfig, c.ServerName)
		for _, fb := range cc.Fallbacks {
			fb.TLSConfig = cloneTLS(fb.TLSConfig, c.ServerName)
		}
	}
	cc.ConnectTimeout = c.ConnectTimeout
	if cc.ConnectTimeout <= 0 {
		cc.ConnectTimeout = 5 * time.Second
	}
	// Each commit waits for the WAL flush, whatever the role's default.
	cc.RuntimeParams["synchronous_commit"] = "on"
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "tokenproxy"
	}
	pc.MaxConns = int32(min(max(c.MaxConns, 0), 1000))
	if pc.MaxConns == 0 {
		pc.MaxConns = 10
	}
	pc.MinConns = 0
	return pc, nil
}

// Postgres keeps consents in a Postgres table, one row per consent: the
// generation is a column every Put compares and sets in one statement, and
// the value is sealed with AES-256-GCM bound to route|owner|subject|
// generation, so a dump shows no token and a row moved to another key or
// generation does not open. Commits wait for the WAL flush
// (synchronous_commit on) before Put returns.
type Postgres struct {
	pool *pgxpool.Pool
	ring *Keyring
	// sweeper deletes past access counts once a day.
	sweeper accessSweeper
}

// connect opens a pool and checks that the server answers, mapping the
// failures a start-up meets to ErrPostgresAuth and ErrPostgresUnreachable.
func connect(ctx context.Context, c PostgresConfig) (*pgxpool.Pool, error) {
	pc, err := c.poolConfig()
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, classify(err)
	}
	return pool, nil
}

// classify names a connection failure; the server's message never holds
// the password.
func classify(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return fmt.Errorf("%w: %s", ErrPostgresAuth, pe.Message)
		case "3D000": // invalid_catalog_name
			return fmt.Errorf("postgres: %s", pe.Message)
		}
		return fmt.Errorf("postgres: %s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	if te := classifyTLS(err); te != nil {
		return te
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrPostgresUnreachable, err)
	}
	return fmt.Errorf("postgres: %w", err)
}

// OpenPostgres connects to the store with c, migrates the schema when
// migrate is set (otherwise a schema older than this binary's is
// ErrNotMigrated) and checks key (32 bytes) against the key check the store
// recorded when it was created (ErrWrongKey).
func OpenPostgres(ctx context.Context, c PostgresConfig, ring *Keyring, migrate bool) (*Postgres, error) {
	pool, err := connect(ctx, c)
	if err != nil {
		return nil, err
	}
	p := &Postgres{pool: pool, ring: ring}
	if err := p.open(ctx, migrate); err != nil {
		pool.Close()
		return nil, permission(err)
	}
	return p, nil
}

func (p *Postgres) open(ctx context.Context, migrate bool) error {
	if migrate {
		if _, err := migratePool(ctx, p.pool); err != nil {
			return err
		}
	}
	have, err := schemaVersion(ctx, p.pool)
	if err != nil {
		return err
	}
	want := latestMigration()
	switch {
	case have < want:
		return fmt.Errorf("schema version %d, this tokenproxy needs %d: %w", have, want, ErrNotMigrated)
	case have > want:
		return fmt.Errorf("the consent store's schema is version %d, newer than this tokenproxy knows (%d); run a newer tokenproxy", have, want)
	}
	return p.checkKey(ctx)
}

// checkKey records a key check for each of the ring's keys the store has
// not met, checks the others (Keyring.checkKeys) and that no value is
// sealed under a key the ring lacks (*MissingKeyError).
func (p *Postgres) checkKey(ctx context.Context) error {
	checks, err := p.keyChecks(ctx)
	if err != nil {
		return err
	}
	write, _, err := p.ring.checkKeys(checks, nil)
	if err != nil {
		return err
	}
	if len(write) > 0 {
		for _, id := range write {
			if _, err := p.pool.Exec(ctx, `INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`,
				keyCheckName(id), p.ring.keyCheck(id)); err != nil {
				return fmt.Errorf("recording the consent store's key check: %w", err)
			}
		}
		// Another replica may have recorded a different key under the same id meanwhile.
		if checks, err = p.keyChecks(ctx); err != nil {
			return err
		}
		if _, _, err := p.ring.checkKeys(checks, nil); err != nil {
			return err
		}
	}
	need, err := p.keyIDs(ctx)
	if err != nil {
		return err
	}
	return p.ring.missing(need, "")
}

// keyChecks reads the key check records by id.
func (p *Postgres) keyChecks(ctx context.Context) (map[string][]byte, error) {
	rows, err := p.pool.Query(ctx, `SELECT name, value FROM store_meta WHERE name LIKE 'keycheck:%'`)
	if err != nil {
		return nil, fmt.Errorf("reading the consent store's key checks: %w", err)
	}
	checks := map[string][]byte{}
	var name string
	var v []byte
	if _, err := pgx.ForEachRow(rows, []any{&name, &v}, func() error {
		checks[strings.TrimPrefix(name, keyCheckName(""))] = bytes.Clone(v)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("reading the consent store's key checks: %w", err)
	}
	return checks, nil
}

// keyIDs are the key ids values are sealed under: a walk down the key_id
// index, one probe per distinct id, however many consents there are.
func (p *Postgres) keyIDs(ctx context.Context) (map[string]bool, error) {
	rows, err := p.pool.Query(ctx, `WITH RECURSIVE ids AS (
			(SELECT key_id FROM consents ORDER BY key_id LIMIT 1)
			UNION ALL
			SELECT (SELECT c.key_id FROM consents c WHERE c.key_id > ids.key_id ORDER BY c.key_id LIMIT 1)
			FROM ids WHERE ids.key_id IS NOT NULL
		)
		SELECT key_id FROM ids WHERE key_id IS NOT NULL
		UNION SELECT DISTINCT key_id FROM pending`)
	if err != nil {
		return nil, fmt.Errorf("reading the consent store's key ids: %w", err)
	}
	need := map[string]bool{}
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { need[id] = true; return nil }); err != nil {
		return nil, fmt.Errorf("reading the consent store's key ids: %w", err)
	}
	return need, nil
}

// migration is one embedded schema step, migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

func migrations() []migration {
	ents, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		panic(err) // embedded at build time
	}
	var out []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			panic("migration file without a version: " + e.Name())
		}
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, migration{v, strings.TrimSuffix(e.Name(), ".sql"), string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out
}

func latestMigration() int {
	m := migrations()
	return m[len(m)-1].version
}

// schemaVersion is the version the schema is complete up to: the highest
// migration such that it and every one before it are applied (0 when none),
// or, when the database holds a version this binary does not know, that
// version (a newer schema).
func schemaVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	applied := map[int]bool{}
	var v, top int
	rows, err := pool.Query(ctx, `SELECT version FROM schema_migrations`)
	if err == nil {
		_, err = pgx.ForEachRow(rows, []any{&v}, func() error { applied[v] = true; top = max(top, v); return nil })
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the consent store's schema version: %w", err)
	}
	if top > latestMigration() {
		return top, nil
	}
	return completeUpTo(applied), nil
}

// completeUpTo is the highest migration version such that it and every
// migration before it are in applied; 0 when the first is not.
func completeUpTo(applied map[int]bool) int {
	v := 0
	for _, m := range migrations() {
		if !applied[m.version] {
			break
		}
		v = m.version
	}
	return v
}

// migrationLock is the advisory lock that serialises replicas migrating at once.
const migrationLock = 0x746f6b70726f7879 // "tokproxy"

// migratePool applies the migrations the database lacks, each in its own
// transaction under an advisory lock, and returns their names.
func migratePool(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	var applied []string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		have := map[int]bool{}
		var v int
		if _, err := pgx.ForEachRow(rows, []any{&v}, func() error { have[v] = true; return nil }); err != nil {
			return err
		}
		for _, m := range migrations() { // every one the database lacks, a gap included
			if have[m.version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			applied = append(applied, m.name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrating the consent store's schema: %w", err)
	}
	return applied, nil
}

// MigratePostgres applies the embedded schema migrations the database
// lacks and returns their names (none: already up to date).
func MigratePostgres(ctx context.Context, c PostgresConfig) ([]string, error) {
	pool, err := connect(ctx, c)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	applied, err := migratePool(ctx, pool)
	return applied, permission(err)
}

func (p *Postgres) decode(k Key, gen int64, v []byte) (*Consent, error) {
	if gen <= 0 {
		return nil, errOpen
	}
	pl, err := p.ring.open(v, aad(k, uint64(gen)))
	if err != nil {
		return nil, err
	}
	c, err := decodeRecord(pl, uint64(gen))
	if err != nil {
		return nil, err
	}
	if c.Key() != k {
		return nil, errOpen
	}
	return c, nil
}

// Get implements Store.
func (p *Postgres) Get(ctx context.Context, k Key) (*Consent, error) {
	ctx, sp := startOp(ctx, "postgres", opGet)
	defer sp.End()
	var gen int64
	var v []byte
	err := p.pool.QueryRow(ctx, `SELECT generation, value FROM consents WHERE route = $1 AND owner = $2 AND subject = $3`,
		k.Route, k.Owner, k.Subject).Scan(&gen, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading consent for subject %q on route %s: %w", k.Subject, k.Route, err)
	}
	return p.decode(k, gen, v)
}

// Put implements Store: an INSERT for a new consent (expect 0), otherwise
// an UPDATE conditional on the stored generation; either touches no row
// when another writer won.
func (p *Postgres) Put(ctx context.Context, c *Consent, expect uint64) (uint64, error) {
	ctx, sp := startOp(ctx, "postgres", opPut)
	defer sp.End()
	return p.put(ctx, p.pool, c, expect)
}

// pgExec is a pool or a transaction.
type pgExec interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func (p *Postgres) put(ctx context.Context, db pgExec, c *Consent, expect uint64) (uint64, error) {
	k := c.Key()
	if err := ValidateKey(k); err != nil {
		return 0, err
	}
	if expect >= 1<<62 {
		return 0, ErrConflict
	}
	plain, err := encodeRecord(c)
	if err != nil {
		return 0, err
	}
	gen := expect + 1
	val, id := p.ring.seal(plain, aad(k, gen)), p.ring.Newest()
	var exp *time.Time
	if !c.RefreshExpiry.IsZero() {
		exp = &c.RefreshExpiry
	}
	var tag pgconn.CommandTag
	if expect == 0 {
		tag, err = db.Exec(ctx, `INSERT INTO consents (route, owner, subject, generation, value, key_id, state, refresh_expiry)
			VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
			ON CONFLICT (route, owner, subject) DO NOTHING`, k.Route, k.Owner, k.Subject, val, id, string(c.State), exp)
	} else {
		tag, err = db.Exec(ctx, `UPDATE consents SET generation = $5, value = $4, key_id = $7, state = $8, refresh_expiry = $9, updated = now()
			WHERE route = $1 AND owner = $2 AND subject = $3 AND generation = $6`,
			k.Route, k.Owner, k.Subject, val, int64(gen), int64(expect), id, string(c.State), exp)
	}
	if err != nil {
		return 0, fmt.Errorf("writing consent for subject %q on route %s: %w", c.Subject, c.Route, err)
	}
	if tag.RowsAffected() != 1 {
		return 0, ErrConflict
	}
	return gen, nil
}

// Delete implements Store.
func (p *Postgres) Delete(ctx context.Context, k Key) error {
	ctx, sp := startOp(ctx, "postgres", opDelete)
	defer sp.End()
	if _, err := p.pool.Exec(ctx, `DELETE FROM consents WHERE route = $1 AND owner = $2 AND subject = $3`, k.Route, k.Owner, k.Subject); err != nil {
		return fmt.Errorf("deleting consent for subject %q on route %s: %w", k.Subject, k.Route, err)
	}
	return nil
}

// List implements Store.
func (p *Postgres) List(ctx context.Context, f Filter) ([]*Consent, error) {
	var out []*Consent
	err := p.Scan(ctx, f, func(c *Consent) error { out = append(out, c); return nil })
	return out, err
}

// Scan calls fn with each consent f selects, streaming the rows. Each
// filter has its own statement so the planner uses the primary key (by
// route, by route and owner) or the (owner, route) index (by owner).
func (p *Postgres) Scan(ctx context.Context, f Filter, fn func(*Consent) error) error {
	const sel = `SELECT route, owner, subject, generation, value FROM consents`
	var rows pgx.Rows
	var err error
	switch {
	case f.Route != "" && !f.AnyOwner:
		rows, err = p.pool.Query(ctx, sel+` WHERE route = $1 AND owner = $2`, f.Route, f.Owner)
	case f.Route != "":
		rows, err = p.pool.Query(ctx, sel+` WHERE route = $1`, f.Route)
	case !f.AnyOwner:
		rows, err = p.pool.Query(ctx, sel+` WHERE owner = $1`, f.Owner)
	default:
		rows, err = p.pool.Query(ctx, sel)
	}
	if err != nil {
		return fmt.Errorf("listing consents: %w", err)
	}
	defer rows.Close()
	var k Key
	var gen int64
	var v []byte
	_, err = pgx.ForEachRow(rows, []any{&k.Route, &k.Owner, &k.Subject, &gen, &v}, func() error {
		c, err := p.decode(k, gen, v)
		if err != nil {
			return err
		}
		return fn(c)
	})
	if err != nil {
		return fmt.Errorf("listing consents: %w", err)
	}
	return nil
}

// Count implements Counter with one aggregate over the clear state and
// refresh_expiry columns: no value is opened.
func (p *Postgres) Count(ctx context.Context, expiringBy time.Time) (*Counts, error) {
	rows, err := p.pool.Query(ctx, `SELECT route, state, count(*),
			count(*) FILTER (WHERE state <> 'invalid' AND refresh_expiry IS NOT NULL AND refresh_expiry <= $1)
		FROM consents GROUP BY route, state`, expiringBy)
	if err != nil {
		return nil, fmt.Errorf("counting consents: %w", err)
	}
	out := &Counts{ByState: map[string]map[State]int{}, Expiring: map[string]int{}}
	var route, state string
	var n, expiring int
	if _, err := pgx.ForEachRow(rows, []any{&route, &state, &n, &expiring}, func() error {
		if out.ByState[route] == nil {
			out.ByState[route] = map[State]int{}
		}
		out.ByState[route][State(state)] += n
		out.Expiring[route] += expiring
		return nil
	}); err != nil {
		return nil, fmt.Errorf("counting consents: %w", err)
	}
	return out, nil
}

// pgPendingAAD binds a sealed pending record to its state.
func pgPendingAAD(state string) []byte { return []byte("tokenproxy-pending\x00" + state) }

// PutPending records a started consent until p.Expires; the record,
// verifier included, is sealed. It also removes expired records.
func (p *Postgres) PutPending(ctx context.Context, pd *Pending) error {
	if pd.State == "" {
		return errors.New("a pending consent needs its state")
	}
	b, err := json.Marshal(pd)
	if err != nil {
		return fmt.Errorf("encoding the pending consent: %w", err)
	}
	if _, err := p.pool.Exec(ctx, `DELETE FROM pending WHERE expires <= now()`); err != nil {
		return fmt.Errorf("removing expired pending consents: %w", err)
	}
	if _, err := p.pool.Exec(ctx, `INSERT INTO pending (state, expires, value, key_id) VALUES ($1, $2, $3, $4)`,
		pd.State, pd.Expires, p.ring.seal(b, pgPendingAAD(pd.State)), p.ring.Newest()); err != nil {
		return fmt.Errorf("recording the pending consent on route %s: %w", pd.Route, err)
	}
	return nil
}

// TakePending removes and returns the pending consent for state in one
// statement, so it is taken once; ErrNotFound when unknown, already taken
// or expired.
func (p *Postgres) TakePending(ctx context.Context, state string) (*Pending, error) {
	var v []byte
	err := p.pool.QueryRow(ctx, `DELETE FROM pending WHERE state = $1 AND expires > now() RETURNING value`, state).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("taking the pending consent: %w", err)
	}
	pl, err := p.ring.open(v, pgPendingAAD(state))
	if err != nil {
		return nil, err
	}
	var pd Pending
	if err := json.Unmarshal(pl, &pd); err != nil || pd.State != state {
		return nil, errOpen
	}
	return &pd, nil
}

// Close implements Store: it closes the pool.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}
