// Verifies a detached JWS (RFC 7515 appendix F; with "b64": false, RFC 7797)
// over a body with the jose library, independently of the Go code that made
// it. Usage: node verify.mjs <input.json>, the input holding
// { "jws": "<header>..<signature>", "body_b64": "<base64 body>",
//   "jwk": {...} | "pem": "<CERTIFICATE or PUBLIC KEY PEM>" }.
// Prints {"ok": true, "header": {...}} or {"error": "..."}.
import * as fs from 'node:fs';

import * as jose from 'jose';

const ALGS = ['PS256', 'ES256', 'RS256'];
// The UK Open Banking x-jws-signature claims a verifier must understand
// beside b64, which jose knows.
const CRIT = {
  'http://openbanking.org.uk/iat': true,
  'http://openbanking.org.uk/iss': true,
  'http://openbanking.org.uk/tan': true,
};

const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

async function verify() {
  const parts = input.jws.split('.');
  if (parts.length !== 3 || parts[1] !== '') {
    throw new Error('not a detached JWS (header..signature)');
  }
  const [protectedB64, , signature] = parts;
  const header = jose.decodeProtectedHeader(input.jws);
  if (!ALGS.includes(header.alg)) {
    throw new Error(`algorithm ${header.alg} is not one of ${ALGS.join(', ')}`);
  }
  let key;
  if (input.jwk) {
    key = await jose.importJWK(input.jwk, header.alg);
  } else if (input.pem.includes('BEGIN CERTIFICATE')) {
    key = await jose.importX509(input.pem, header.alg);
  } else {
    key = await jose.importSPKI(input.pem, header.alg);
  }
  const body = Buffer.from(input.body_b64, 'base64');
  const payload = header.b64 === false ? new Uint8Array(body) : body.toString('base64url');
  const { protectedHeader } = await jose.flattenedVerify(
    { protected: protectedB64, payload, signature },
    key,
    { algorithms: ALGS, crit: CRIT },
  );
  return protectedHeader;
}

try {
  console.log(JSON.stringify({ ok: true, header: await verify() }));
} catch (err) {
  console.log(JSON.stringify({ error: `${err.code ? `${err.code}: ` : ''}${err.message}` }));
}
