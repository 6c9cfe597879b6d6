// A FAPI 2.0 Security Profile authorization server (oidc-provider) and a
// resource server that checks sender-constrained access tokens (DPoP, RFC
// 9449; certificate-bound, RFC 8705), both over HTTPS with client
// certificates requested, and a plain-HTTP admin endpoint with counters.
//
// Usage: node server.mjs <config.json>. Prints one line
// "fapitest-ready {json}" on stdout once listening, and exits when stdin
// closes. It never prints a token.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';
// The provider's internals, reached only to replace its DPoP nonce source
// when the test asks for a rotation period (oidc-provider's own nonces live
// 60 s windows and accept five of them).
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const ALGS = ['PS256', 'ES256'];

// ---- counters and the rejection log ----

function freshStats() {
  return {
    token_requests: {}, // successful, by grant_type
    token_errors: {}, // by error code
    par_requests: 0,
    par_errors: {},
    authorization_errors: {},
    as_nonce_challenges: 0,
    as_jti_repeats: 0,
    rs_accepted: 0,
    rs_refused: {}, // by reason
    rs_nonce_challenges: 0,
    rs_jti_repeats: 0,
    rejections: [],
    secret_hashes: [], // SHA-256 (base64url) of every token issued and DPoP proof received; kept by /reset
  };
}
let stats = freshStats();

function bump(map, key) {
  map[key] = (map[key] || 0) + 1;
}

function reject(at, endpoint, reason, detail, clientId) {
  stats.rejections.push({
    at, endpoint, reason, detail: detail || '', client_id: clientId || '',
  });
}

// ---- nonces ----

function nonceSource(periodMs) {
  const s = { current: crypto.randomBytes(16).toString('base64url') };
  s.rotate = () => {
    s.current = crypto.randomBytes(16).toString('base64url');
  };
  if (periodMs > 0) {
    setInterval(s.rotate, periodMs).unref();
  }
  return s;
}
const rsNonces = nonceSource(cfg.rs_nonce_rotation_ms);
const asNonces = cfg.as_nonce_rotation_ms > 0 ? nonceSource(cfg.as_nonce_rotation_ms) : undefined;

// ---- TLS ----

const tlsOptions = {
  cert: cfg.tls.cert,
  key: cfg.tls.key,
  ca: cfg.tls.ca,
  requestCert: true,
  rejectUnauthorized: false, // the AS and RS decide per request
};

function peerCertificate(socket) {
  const c = socket?.getPeerCertificate?.(false);
  if (!c || !c.raw) {
    return undefined;
  }
  return c.raw;
}

function pemOf(der) {
  const b64 = der.toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

// subjectDN renders a certificate's subject as RFC 4514 does (last RDN
// first, comma separated), which is what Go's pkix.Name.String gives.
function subjectDN(der) {
  const x = new crypto.X509Certificate(der);
  return x.subject.split('\n').reverse().join(',');
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

const asServer = https.createServer(tlsOptions);
const rsServer = https.createServer(tlsOptions);
const adminServer = http.createServer();
const issuer = `https://127.0.0.1:${await listen(asServer)}`;
const rsURL = `https://127.0.0.1:${await listen(rsServer)}`;
const adminURL = `http://127.0.0.1:${await listen(adminServer)}`;

// ---- the authorization server ----

async function signingKey(alg, kid) {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  return {
    ...await jose.exportJWK(privateKey), kid, alg, use: 'sig',
  };
}
const privateJWKs = [await signingKey('PS256', 'as-ps256'), await signingKey('ES256', 'as-es256')];
const publicJWKs = privateJWKs.map(({
  d, p, q, dp, dq, qi, ...pub
}) => pub);
const asKeys = jose.createLocalJWKSet({ keys: publicJWKs });

const rsScopes = cfg.scopes.join(' ');

const provider = new Provider(issuer, {
  clients: cfg.clients,
  jwks: { keys: privateJWKs },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', ...cfg.scopes],
  clientAuthMethods: ['private_key_jwt', 'tls_client_auth'],
  clientDefaults: {
    id_token_signed_response_alg: 'PS256',
    token_endpoint_auth_method: 'private_key_jwt',
    grant_types: ['authorization_code'],
    response_types: ['code'],
  },
  enabledJWA: {
    clientAuthSigningAlgValues: ALGS,
    idTokenSigningAlgValues: ALGS,
    requestObjectSigningAlgValues: ALGS,
    userinfoSigningAlgValues: ALGS,
    introspectionSigningAlgValues: ALGS,
    authorizationSigningAlgValues: ALGS,
    dPoPSigningAlgValues: ALGS,
  },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    fapi: { enabled: true, profile: '2.0' },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
    dPoP: {
      enabled: true,
      nonceSecret: crypto.randomBytes(32),
      requireNonce: () => cfg.as_require_nonce,
    },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      getCertificate(ctx) {
        const der = peerCertificate(ctx.socket);
        return der ? pemOf(der) : undefined;
      },
      certificateAuthorized(ctx) {
        return ctx.socket.authorized === true;
      },
      certificateSubjectMatches(ctx, property, expected) {
        const der = peerCertificate(ctx.socket);
        if (!der) {
          return false;
        }
        switch (property) {
          case 'tls_client_auth_subject_dn':
            return subjectDN(der) === expected;
          case 'tls_client_auth_san_dns':
            return (new crypto.X509Certificate(der).subjectAltName || '')
              .split(', ').includes(`DNS:${expected}`);
          default:
            return false;
        }
      },
    },
    clientCredentials: { enabled: true },
    revocation: { enabled: true, allowedPolicy: () => true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => rsURL,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, indicator) {
        if (indicator !== rsURL) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: rsScopes,
          audience: rsURL,
          accessTokenTTL: cfg.access_token_ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'PS256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: cfg.access_token_ttl,
    ClientCredentials: cfg.access_token_ttl,
    RefreshToken: cfg.refresh_token_ttl,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: cfg.refresh_token_ttl,
  },
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: () => false,
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

if (asNonces) {
  instance(provider).DPoPNonces = {
    nextChallenge: () => asNonces.current,
    checkChallenge: (c) => c === asNonces.current,
  };
}

// Counts DPoP proof jtis seen at the AS (the AS refuses replays itself; the
// counter tells a test whether a client ever sent one).
const asJtis = new Set();
provider.use(async (ctx, next) => {
  const proof = ctx.get('DPoP');
  if (proof) {
    stats.secret_hashes.push(sha256(proof));
    try {
      const { jti } = jose.decodeJwt(proof);
      if (typeof jti === 'string') {
        if (asJtis.has(jti)) {
          stats.as_jti_repeats += 1;
        }
        asJtis.add(jti);
      }
    } catch {
      // a malformed proof: the provider answers it
    }
  }
  await next();
  const body = ctx.body && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body) ? ctx.body : {};
  for (const k of ['access_token', 'refresh_token', 'id_token']) {
    if (typeof body[k] === 'string') {
      stats.secret_hashes.push(sha256(body[k]));
    }
  }
  const code = /[?&]code=([^&#]+)/.exec(ctx.response.get('location') || '');
  if (code) {
    stats.secret_hashes.push(sha256(decodeURIComponent(code[1])));
  }
});

function asError(endpoint, counter) {
  return (ctx, err) => {
    const code = err.error || 'server_error';
    bump(counter(), code);
    if (code === 'use_dpop_nonce') {
      stats.as_nonce_challenges += 1;
    }
    const detail = [err.error_description, err.error_detail].filter(Boolean).join(': ');
    reject('as', endpoint, code, detail, ctx.oidc?.client?.clientId);
  };
}
provider.on('grant.success', (ctx) => bump(stats.token_requests, ctx.oidc.params.grant_type));
provider.on('grant.error', asError('token', () => stats.token_errors));
provider.on('pushed_authorization_request.success', () => {
  stats.par_requests += 1;
});
provider.on('pushed_authorization_request.error', asError('par', () => stats.par_errors));
provider.on('authorization.error', asError('authorization', () => stats.authorization_errors));
provider.on('server_error', (ctx, err) => {
  reject('as', ctx.oidc?.route || ctx.path, 'server_error', err.message);
});

asServer.on('request', provider.callback());

// ---- the resource server ----

class Refusal extends Error {
  constructor(status, scheme, error, reason, detail) {
    super(detail);
    this.status = status;
    this.scheme = scheme;
    this.error = error;
    this.reason = reason;
  }
}

const rsJtis = new Set();

function sha256(s) {
  return crypto.createHash('sha256').update(s).digest('base64url');
}

async function checkDPoP(req, token, cnf) {
  const proofs = req.headersDistinct.dpop || [];
  proofs.forEach((p) => stats.secret_hashes.push(sha256(p)));
  if (proofs.length === 0) {
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'missing_dpop_proof', 'no DPoP header');
  }
  if (proofs.length > 1) {
    throw new Refusal(400, 'DPoP', 'invalid_dpop_proof', 'invalid_dpop_proof', 'more than one DPoP header');
  }
  let payload;
  let protectedHeader;
  try {
    ({ payload, protectedHeader } = await jose.jwtVerify(proofs[0], jose.EmbeddedJWK, {
      typ: 'dpop+jwt', algorithms: ALGS,
    }));
  } catch (err) {
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'invalid_dpop_proof', err.message);
  }
  if (typeof payload.jti !== 'string' || !payload.jti) {
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'invalid_dpop_proof', 'no jti');
  }
  if (rsJtis.has(payload.jti)) {
    stats.rs_jti_repeats += 1;
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'dpop_replay', 'jti already used');
  }
  rsJtis.add(payload.jti);
  if (payload.htm !== req.method) {
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'dpop_htm_mismatch', `htm ${payload.htm}, request ${req.method}`);
  }
  const want = new URL(req.url, rsURL);
  want.search = '';
  const got = URL.parse(typeof payload.htu === 'string' ? payload.htu : '');
  if (got) {
    got.search = '';
    got.hash = '';
  }
  if (!got || got.href !== want.href) {
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'dpop_htu_mismatch', `htu ${payload.htu}, request ${want.href}`);
  }
  const now = Math.floor(Date.now() / 1000);
  if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > cfg.dpop_iat_window) {
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'dpop_iat_out_of_window', `iat ${payload.iat}, now ${now}`);
  }
  if (payload.ath !== sha256(token)) {
    throw new Refusal(401, 'DPoP', 'invalid_dpop_proof', 'dpop_ath_mismatch', 'ath is not the hash of the access token');
  }
  if (await jose.calculateJwkThumbprint(protectedHeader.jwk) !== cnf.jkt) {
    throw new Refusal(401, 'DPoP', 'invalid_token', 'dpop_key_mismatch', 'the proof key is not the one the token is bound to');
  }
  if (cfg.rs_require_nonce && payload.nonce !== rsNonces.current) {
    stats.rs_nonce_challenges += 1;
    throw new Refusal(401, 'DPoP', 'use_dpop_nonce', 'use_dpop_nonce', payload.nonce ? 'stale nonce' : 'no nonce');
  }
}

function checkCertificate(req, cnf) {
  const der = peerCertificate(req.socket);
  if (!der) {
    throw new Refusal(401, 'Bearer', 'invalid_token', 'missing_client_certificate', 'the token is certificate-bound');
  }
  if (!req.socket.authorized) {
    throw new Refusal(401, 'Bearer', 'invalid_token', 'untrusted_client_certificate', String(req.socket.authorizationError));
  }
  if (crypto.createHash('sha256').update(der).digest('base64url') !== cnf['x5t#S256']) {
    throw new Refusal(401, 'Bearer', 'invalid_token', 'certificate_mismatch', 'the token is bound to another certificate');
  }
}

async function resource(req) {
  const authz = req.headers.authorization || '';
  const m = /^(\S+) (\S+)$/.exec(authz);
  if (!m) {
    throw new Refusal(401, 'DPoP', 'invalid_token', 'missing_token', 'no access token');
  }
  const scheme = m[1].toLowerCase();
  const token = m[2];
  let claims;
  try {
    ({ payload: claims } = await jose.jwtVerify(token, asKeys, {
      issuer, audience: rsURL, typ: 'at+jwt', algorithms: ALGS,
    }));
  } catch (err) {
    const reason = err.code === 'ERR_JWT_EXPIRED' ? 'token_expired' : 'invalid_token';
    throw new Refusal(401, scheme === 'dpop' ? 'DPoP' : 'Bearer', 'invalid_token', reason, err.message);
  }
  req.clientId = claims.client_id;
  const cnf = claims.cnf || {};
  if (!cnf.jkt && !cnf['x5t#S256']) {
    throw new Refusal(401, 'Bearer', 'invalid_token', 'unbound_token', 'the token is not sender-constrained');
  }
  if (cnf.jkt && scheme !== 'dpop') {
    throw new Refusal(401, 'DPoP', 'invalid_token', 'dpop_token_as_bearer', `a DPoP-bound token under scheme ${m[1]}`);
  }
  if (!cnf.jkt && scheme !== 'bearer') {
    throw new Refusal(401, 'Bearer', 'invalid_token', 'bearer_token_as_dpop', `a token without jkt under scheme ${m[1]}`);
  }
  if (cnf['x5t#S256']) {
    checkCertificate(req, cnf);
  }
  if (cnf.jkt) {
    await checkDPoP(req, token, cnf);
  }
  return {
    sub: claims.sub,
    client_id: claims.client_id,
    scope: claims.scope || '',
    binding: cnf.jkt ? 'dpop' : 'mtls',
    x5t: cnf['x5t#S256'] || '', // the certificate a certificate-bound token was checked against
    method: req.method,
    path: new URL(req.url, rsURL).pathname,
  };
}

function send(res, status, headers, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(data);
}

rsServer.on('request', (req, res) => {
  req.resume(); // the body is not needed
  req.on('end', async () => {
    const headers = {};
    try {
      const seen = await resource(req);
      // The nonce is read once the request is checked: one read before the
      // checks' awaits could be a nonce that rotated meanwhile, and a
      // use_dpop_nonce challenge naming the very nonce it refused.
      if (cfg.rs_require_nonce) {
        headers['dpop-nonce'] = rsNonces.current;
      }
      stats.rs_accepted += 1;
      send(res, 200, headers, seen);
    } catch (err) {
      if (cfg.rs_require_nonce) {
        headers['dpop-nonce'] = rsNonces.current;
      }
      if (!(err instanceof Refusal)) {
        reject('rs', req.url, 'server_error', err.message);
        send(res, 500, headers, { error: 'server_error' });
        return;
      }
      bump(stats.rs_refused, err.reason);
      reject('rs', new URL(req.url, rsURL).pathname, err.reason, err.message, req.clientId);
      let challenge = `${err.scheme} error="${err.error}", error_description="${err.reason}"`;
      if (err.scheme === 'DPoP') {
        challenge += `, algs="${ALGS.join(' ')}"`;
      }
      headers['www-authenticate'] = challenge;
      send(res, err.status, headers, { error: err.error, error_description: err.reason });
    }
  });
});

// ---- admin ----

adminServer.on('request', (req, res) => {
  req.resume();
  req.on('end', () => {
    const route = `${req.method} ${req.url}`;
    switch (route) {
      case 'GET /stats':
        send(res, 200, {}, stats);
        break;
      case 'POST /reset':
        stats = { ...freshStats(), secret_hashes: stats.secret_hashes };
        send(res, 200, {}, {});
        break;
      case 'POST /rotate-nonces':
        rsNonces.rotate();
        asNonces?.rotate();
        send(res, 200, {}, {});
        break;
      default:
        send(res, 404, {}, { error: 'not_found' });
    }
  });
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

console.log(`fapitest-ready ${JSON.stringify({ issuer, rs: rsURL, admin: adminURL })}`);
