package vaultsrc

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/secret"
)

// The Client reads secret references from KV v2.
var _ secret.VaultReader = (*Client)(nil)

// ReadField implements secret.VaultReader: it reads field of the latest
// version of the KV v2 secret at mount/path. While Vault is unreachable it
// answers with the last value it read for the same field (kept in memory
// only), so a token fetch that needs a password still works during an outage.
func (c *Client) ReadField(ctx context.Context, mount, path, field string) (secret.Value, error) {
	key := mount + "/" + path + "#" + field
	data, version, err := c.readKV(ctx, mount, path, 0)
	if err != nil {
		if isUnavailable(err) {
			c.kvMu.Lock()
			last, ok := c.kvLast[key]
			c.kvMu.Unlock()
			if ok {
				c.log.Debug("vault unreachable; using the last value read",
					zap.String("secret", key), zap.Int("version", last.version))
				return secret.New(last.val), nil
			}
		}
		return secret.Value{}, err
	}
	s, err := stringField(data, field, mount, path, version)
	if err != nil {
		return secret.Value{}, err
	}
	c.kvMu.Lock()
	c.kvLast[key] = kvLastGood{val: s, version: version}
	c.kvMu.Unlock()
	return secret.New(s), nil
}

func stringField(data map[string]any, field, mount, path string, version int) (string, error) {
	v, ok := data[field]
	if !ok {
		return "", fmt.Errorf("vault kv %s/%s (version %d): no field %q", mount, path, version, field)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("vault kv %s/%s (version %d): field %q is a %T, not a string", mount, path, version, field, v)
	}
	return s, nil
}

// readKV reads version (0 = latest) of the KV v2 secret at mount/path and
// returns its data and version number.
func (c *Client) readKV(ctx context.Context, mount, path string, version int) (map[string]any, int, error) {
	op := fmt.Sprintf("reading vault kv %s/%s", mount, path)
	var q map[string][]string
	if version > 0 {
		q = map[string][]string{"version": {strconv.Itoa(version)}}
	}
	s, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().ReadWithDataWithContext(ctx, kvPath(mount, "data", path), q)
	})
	if err != nil {
		return nil, 0, err
	}
	if s == nil || s.Data == nil {
		return nil, 0, &ResponseError{Op: op, StatusCode: 404, Messages: []string{"no such secret (is the mount KV version 2?)"}}
	}
	meta, _ := s.Data["metadata"].(map[string]any)
	v, _ := jsonInt(meta["version"])
	data, ok := s.Data["data"].(map[string]any)
	if !ok {
		return nil, v, &ResponseError{Op: op, StatusCode: 404, Messages: []string{fmt.Sprintf("version %d is deleted or destroyed", v)}}
	}
	return data, v, nil
}

// kvCurrentVersion reads the secret's metadata (no secret data) and returns its current version.
func (c *Client) kvCurrentVersion(ctx context.Context, mount, path string) (int, error) {
	op := fmt.Sprintf("reading vault kv metadata %s/%s", mount, path)
	s, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().ReadWithContext(ctx, kvPath(mount, "metadata", path))
	})
	if err != nil {
		return 0, err
	}
	if s == nil || s.Data == nil {
		return 0, &ResponseError{Op: op, StatusCode: 404, Messages: []string{"no such secret"}}
	}
	v, ok := jsonInt(s.Data["current_version"])
	if !ok {
		return 0, fmt.Errorf("%s: no current_version in Vault's answer", op)
	}
	return v, nil
}

// ReadKV reads the latest version of the KV v2 secret at mount/path and
// returns its data and version number. A path with no live version (never
// written, deleted or destroyed) is an error matching ErrNotFound. Unlike
// ReadField it never answers from memory: state read here must be current.
func (c *Client) ReadKV(ctx context.Context, mount, path string) (map[string]any, int, error) {
	return c.readKV(ctx, mount, path, 0)
}

// WriteKV writes data as a new version of the KV v2 secret at mount/path and
// returns the version number. It is the seam for state that tokenproxy keeps
// in Vault (refresh tokens).
func (c *Client) WriteKV(ctx context.Context, mount, path string, data map[string]any) (int, error) {
	return c.writeKV(ctx, mount, path, map[string]any{"data": data})
}

// WriteKVCAS is WriteKV with check-and-set: Vault writes only when the
// secret's current version is cas (0: only when it does not exist yet), and
// otherwise refuses with an error matching ErrVersionConflict, so of two
// writers that read the same version exactly one wins.
func (c *Client) WriteKVCAS(ctx context.Context, mount, path string, data map[string]any, cas int) (int, error) {
	return c.writeKV(ctx, mount, path, map[string]any{"data": data, "options": map[string]any{"cas": cas}})
}

func (c *Client) writeKV(ctx context.Context, mount, path string, body map[string]any) (int, error) {
	op := fmt.Sprintf("writing vault kv %s/%s", mount, path)
	s, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().WriteWithContext(ctx, kvPath(mount, "data", path), body)
	})
	if err != nil {
		return 0, err
	}
	if s == nil || s.Data == nil {
		return 0, fmt.Errorf("%s: empty answer from Vault", op)
	}
	v, _ := jsonInt(s.Data["version"])
	return v, nil
}

// ListKV lists the names under mount/path of a KV v2 mount; a folder's name
// ends in "/". A path with nothing under it gives an empty list.
func (c *Client) ListKV(ctx context.Context, mount, path string) ([]string, error) {
	op := fmt.Sprintf("listing vault kv %s/%s", mount, path)
	s, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().ListWithContext(ctx, kvPath(mount, "metadata", path))
	})
	if err != nil || s == nil || s.Data == nil {
		return nil, err
	}
	raw, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(raw))
	for _, k := range raw {
		if str, ok := k.(string); ok {
			out = append(out, str)
		}
	}
	return out, nil
}

// DeleteKV removes the KV v2 secret at mount/path: its metadata and every
// version. Deleting a path that holds nothing is not an error.
func (c *Client) DeleteKV(ctx context.Context, mount, path string) error {
	op := fmt.Sprintf("deleting vault kv %s/%s", mount, path)
	_, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().DeleteWithContext(ctx, kvPath(mount, "metadata", path))
	})
	return err
}

func kvPath(mount, kind, path string) string {
	return strings.Trim(mount, "/") + "/" + kind + "/" + strings.Trim(path, "/")
}

func jsonInt(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), true
	case int:
		return n, true
	}
	return 0, false
}
