// The OAuth 2.0 / OpenID test peer (npm `oidc-provider` on 127.0.0.1), started by tests/run:
// - for Steward's generic OAuth adapter (shared/src/idp/oauth/): dynamic client registration
//   (RFC 7591/7592), the client_credentials grant, introspection (RFC 7662) and revocation
//   (RFC 7009); clients authenticate with a secret, with client assertions signed by their
//   registered keys (RFC 7523 private_key_jwt), or with a client certificate over mutual TLS
//   (RFC 8705, below); tokens can be bound to a key by DPoP (RFC 9449;
//   `dpop_bound_access_tokens` makes the proof mandatory for a client) or to the client
//   certificate (`tls_client_certificate_bound_access_tokens`); see
//   docs/adr/0013-oauth-dcr-adapter.md and docs/adr/0035-oauth-certificate-clients.md;
// - as the people's issuer: the device authorization grant (RFC 8628) for the public client
//   `steward-cli`, a login form checked against OIDC_PEOPLE_PASSWORD, and JWT access tokens for
//   the audience `api://steward` that name the person by `email`
//   (docs/adr/0022-principals-and-person-sign-in.md).
//
// Usage: PORT=<port> OIDC_INITIAL_ACCESS_TOKEN=<random value> [OIDC_PEOPLE_PASSWORD=<value>]
//        [MTLS_PORT=<port> MTLS_SERVER_CERT_FILE=<path> [MTLS_TRUSTED_CA_DIR=<directory>]]
//        node provider.mjs
//
// Registration needs the initial access token (RFC 7591 §3): it carries the registration policy
// `steward-secret-rotation`, which makes an RFC 7592 update that omits `client_secret` issue a
// new secret (to a client that authenticates with one). oidc-provider never rotates a secret on
// update by default, and policies only travel with adapter-backed initial access tokens (see
// ADR 13, docs/adr/0013-oauth-dcr-adapter.md).
//
// Mutual TLS (RFC 8705). The issuer's own listener (PORT) is plain http, so no request on it
// carries a client certificate. With MTLS_PORT set, a second listener on 127.0.0.1 speaks https
// and asks every client for a certificate (`requestCert`, without refusing the handshake when
// there is none or it does not verify: oidc-provider decides per client); it serves the same
// provider (`provider.callback()`), and discovery names its token, introspection and revocation
// endpoints in `mtls_endpoint_aliases` (RFC 8705 §5; oidc-provider has no setting for the
// aliases, so they are extra discovery metadata). Its server certificate is made at start
// (ECDSA P-256, self-signed, for 127.0.0.1 and localhost, a day long) and written as PEM to
// MTLS_SERVER_CERT_FILE, which clients trust as the one root of that listener. Both RFC 8705
// client authentication methods work there:
// - `self_signed_tls_client_auth` (§2.2): the client registers its certificate in `jwks` (a JWK
//   with `x5c`); the presented certificate must be one of them, by its SHA-256 thumbprint, so
//   taking a certificate out of `jwks` stops it at once;
// - `tls_client_auth` (§2.1): the presented certificate must chain to a CA certificate found in
//   MTLS_TRUSTED_CA_DIR (every `*.pem` file there, read again on each request so that a test can
//   drop its CA in while the provider runs; checked with node's X509Certificate `checkIssued`
//   and `verify`, and the certificate's validity), and carry the registered
//   `tls_client_auth_san_uri` (or another registered subject) among its names. No CRL is read:
//   a revoked certificate is refused only once it expires.
// Tokens of a client registered with `tls_client_certificate_bound_access_tokens` are bound to
// the certificate (`cnf.x5t#S256` in introspection); such a client gets no token without one.
import {
  generateKeyPairSync, randomBytes, sign, X509Certificate,
} from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { join } from 'node:path';
import Provider, { errors } from 'oidc-provider';

const port = Number.parseInt(process.env.PORT ?? '', 10);
const initialAccessToken = process.env.OIDC_INITIAL_ACCESS_TOKEN ?? '';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('provider.mjs: set PORT to the port to listen on (127.0.0.1)');
  process.exit(2);
}
// People sign in to Steward with tokens from this issuer (device flow); the test peer's one
// password stands for whatever the organisation's issuer asks of a person.
const peoplePassword = process.env.OIDC_PEOPLE_PASSWORD ?? '';
if (initialAccessToken.length < 32) {
  console.error('provider.mjs: set OIDC_INITIAL_ACCESS_TOKEN to a random value of 32+ characters');
  process.exit(2);
}

// Plain http on loopback: the issuer must be exactly the URL clients use.
const issuer = `http://127.0.0.1:${port}`;

// The mutual TLS listener (see the top of this file), when MTLS_PORT is set.
const mtlsPort = process.env.MTLS_PORT ? Number.parseInt(process.env.MTLS_PORT, 10) : undefined;
const serverCertFile = process.env.MTLS_SERVER_CERT_FILE ?? '';
const trustedCaDir = process.env.MTLS_TRUSTED_CA_DIR ?? '';
if (mtlsPort !== undefined) {
  if (!Number.isInteger(mtlsPort) || mtlsPort <= 0 || mtlsPort > 65535 || mtlsPort === port) {
    console.error('provider.mjs: set MTLS_PORT to a free port other than PORT (127.0.0.1), or unset it');
    process.exit(2);
  }
  if (!serverCertFile) {
    console.error('provider.mjs: set MTLS_SERVER_CERT_FILE to where the mTLS listener\'s certificate goes (PEM)');
    process.exit(2);
  }
}
const mtlsBase = mtlsPort === undefined ? undefined : `https://127.0.0.1:${mtlsPort}`;

// --- the mTLS listener's server certificate, made here (node can sign, not build X.509) -----

function derLength(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const der = (tag, ...parts) => {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
};
const seq = (...parts) => der(0x30, ...parts);
function oid(dotted) {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const n of rest) {
    const enc = [n % 128];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) enc.unshift(0x80 | (v % 128));
    out.push(...enc);
  }
  return der(0x06, Buffer.from(out));
}
// UTCTime (RFC 5280 §4.1.2.5: dates before 2050), YYMMDDHHMMSSZ.
const utcTime = (d) => der(0x17, Buffer.from(`${d.toISOString().replace(/[-:T]/g, '').slice(2, 14)}Z`));

/** A self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost, valid a day. */
function serverCertificate() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecdsaSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const name = seq(der(0x31, seq(oid('2.5.4.3'), der(0x0c, Buffer.from('oidc-provider test peer')))));
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  const now = Date.now();
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([2]))),
    der(0x02, serial),
    ecdsaSha256,
    name,
    seq(utcTime(new Date(now - 60_000)), utcTime(new Date(now + 86_400_000))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, seq(
      // subjectAltName: IP 127.0.0.1, DNS localhost
      seq(oid('2.5.29.17'), der(0x04, seq(der(0x87, Buffer.from([127, 0, 0, 1])), der(0x82, Buffer.from('localhost'))))),
      // basicConstraints (critical): not a CA
      seq(oid('2.5.29.19'), der(0x01, Buffer.from([0xff])), der(0x04, seq())),
      // extKeyUsage: serverAuth
      seq(oid('2.5.29.37'), der(0x04, seq(oid('1.3.6.1.5.5.7.3.1')))),
    )),
  );
  const signature = sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const cert = seq(tbs, ecdsaSha256, der(0x03, Buffer.from([0]), signature));
  const pem = `-----BEGIN CERTIFICATE-----\n${cert.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`
    .replace('\n\n', '\n');
  new X509Certificate(pem); // reads back, or throws here rather than at the first handshake
  return { cert: pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) };
}

// --- tls_client_auth: the CAs a client certificate may chain to --------------------------

/** The CA certificates in MTLS_TRUSTED_CA_DIR now (every PEM block of every *.pem file). */
function trustedCas() {
  if (!trustedCaDir) return [];
  let files;
  try {
    files = readdirSync(trustedCaDir).filter((f) => f.endsWith('.pem'));
  } catch {
    return [];
  }
  const cas = [];
  for (const f of files) {
    let text;
    try {
      text = readFileSync(join(trustedCaDir, f), 'utf8');
    } catch {
      continue; // removed since the listing
    }
    for (const block of text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []) {
      try {
        const ca = new X509Certificate(block);
        if (ca.ca) cas.push(ca);
      } catch {
        // not a certificate: skipped
      }
    }
  }
  return cas;
}

/** Whether `cert` was issued by one of the trusted CAs (signature checked) and is valid now. */
function chainsToTrustedCa(cert) {
  const now = Date.now();
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) return false;
  return trustedCas().some((ca) => cert.checkIssued(ca)
    && cert.verify(ca.publicKey)
    && now >= Date.parse(ca.validFrom) && now <= Date.parse(ca.validTo));
}

// The scopes tests grant; `steward:test:*` are the two the conformance suite uses.
const SCOPES = ['openid', 'email', 'steward:test:read', 'steward:test:write', 'steward:test:admin'];

// The audience of people's access tokens for Steward's admin API (STEWARD_OIDC_AUDIENCE), and
// the public client `steward login` uses (device authorization grant, RFC 8628).
const PEOPLE_AUDIENCE = 'api://steward';
const PEOPLE_CLIENT = {
  client_id: 'steward-cli',
  token_endpoint_auth_method: 'none',
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
  response_types: [],
  redirect_uris: [],
};

// The resource (RFC 8707) a client may ask client_credentials tokens for.
const TEST_RESOURCE = 'urn:steward:test-api';

// Per-client access token lifetime, as client metadata (the field Janssen/Gluu use too):
// RFC 7591 has none, so the adapter sends it and checks the echo.
const LIFETIME = 'access_token_lifetime';
const DEFAULT_TTL = 600;
const MAX_TTL = 86400;

const configuration = {
  clients: [PEOPLE_CLIENT],
  // RFC 8705 §5: where clients go with their certificate. Discovery takes extra members from
  // here; served on either listener, they name the mTLS one.
  discovery: mtlsBase === undefined ? {} : {
    mtls_endpoint_aliases: {
      token_endpoint: `${mtlsBase}/token`,
      introspection_endpoint: `${mtlsBase}/token/introspection`,
      revocation_endpoint: `${mtlsBase}/token/revocation`,
    },
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: id, email_verified: true }; } };
  },
  // People's JWT access tokens name the person the way Steward's directory does.
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'AccessToken' && token.accountId) {
      return { email: token.accountId };
    }
    return undefined;
  },
  scopes: SCOPES,
  // 'none': the public client people sign in with; registered clients use a secret, a key
  // (private_key_jwt) or, on the mTLS listener, a certificate.
  clientAuthMethods: [
    'client_secret_basic',
    'client_secret_post',
    'private_key_jwt',
    'self_signed_tls_client_auth',
    'tls_client_auth',
    'none',
  ],
  extraClientMetadata: {
    properties: [LIFETIME],
    validator(ctx, key, value) {
      if (key === LIFETIME && value !== undefined
        && (!Number.isSafeInteger(value) || value < 1 || value > MAX_TTL)) {
        throw new errors.InvalidClientMetadata(
          `${LIFETIME} must be an integer number of seconds from 1 to ${MAX_TTL}`,
        );
      }
    },
  },
  ttl: {
    ClientCredentials(ctx, token, client) {
      return client[LIFETIME] ?? DEFAULT_TTL;
    },
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: {
      enabled: true,
      // A client may introspect its own tokens only.
      allowedPolicy(ctx, client, token) {
        return token.clientId === client.clientId;
      },
    },
    revocation: { enabled: true },
    // RFC 9449: a token request with a DPoP proof gets a token bound to the proof's key
    // (`token_type: DPoP`, `cnf.jkt` in introspection); a client registered with
    // `dpop_bound_access_tokens: true` gets no token without one. No server nonce.
    dPoP: { enabled: true },
    // RFC 8705 (see the top of this file): the certificate is the TLS peer's, present only on
    // the mTLS listener.
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      selfSignedTlsClientAuth: true,
      tlsClientAuth: true,
      getCertificate(ctx) {
        const peer = typeof ctx.socket.getPeerCertificate === 'function'
          ? ctx.socket.getPeerCertificate()
          : undefined;
        if (!peer?.raw) return undefined;
        return `-----BEGIN CERTIFICATE-----\n${peer.raw.toString('base64')}\n-----END CERTIFICATE-----`;
      },
      // tls_client_auth only: the handshake verified nothing (no `ca` is configured, so that
      // self-signed client certificates are accepted too); the chain is checked here.
      certificateAuthorized(ctx) {
        const pem = configuration.features.mTLS.getCertificate(ctx);
        return pem !== undefined && chainsToTrustedCa(new X509Certificate(pem));
      },
      certificateSubjectMatches(ctx, property, expected) {
        const pem = configuration.features.mTLS.getCertificate(ctx);
        if (!pem) return false;
        const cert = new X509Certificate(pem);
        const names = (cert.subjectAltName ?? '').split(', ');
        switch (property) {
          case 'tls_client_auth_subject_dn':
            return cert.subject.split('\n').reverse().join(',') === expected;
          case 'tls_client_auth_san_dns':
            return names.includes(`DNS:${expected}`);
          case 'tls_client_auth_san_uri':
            return names.includes(`URI:${expected}`);
          case 'tls_client_auth_san_ip':
            return names.includes(`IP Address:${expected}`);
          case 'tls_client_auth_san_email':
            return names.includes(`email:${expected}`);
          default:
            return false;
        }
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo(ctx, resource) {
        if (resource === PEOPLE_AUDIENCE) {
          return {
            scope: 'openid email',
            audience: PEOPLE_AUDIENCE,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 600,
            jwt: { sign: { alg: 'RS256' } },
          };
        }
        if (resource !== TEST_RESOURCE) {
          throw new errors.InvalidTarget(`unknown resource ${resource}`);
        }
        return { scope: SCOPES.join(' '), accessTokenFormat: 'opaque', audience: TEST_RESOURCE };
      },
    },
    registration: {
      enabled: true,
      initialAccessToken: true,
      policies: {
        'steward-secret-rotation'(ctx, properties) {
          // RFC 7592 §2.2: omitted fields are deleted; a client that omits its secret asks for
          // a new one. Registration (POST) has its own secret already; a client that
          // authenticates with a key or a certificate has none.
          if (ctx.method === 'PUT' && !('client_secret' in ctx.oidc.body)
            && ctx.oidc.provider.Client.needsSecret(properties)) {
            properties.client_secret = randomBytes(32).toString('base64url');
            properties.client_secret_expires_at = 0;
          }
        },
      },
    },
    registrationManagement: { enabled: true, rotateRegistrationAccessToken: true },
  },
};

const provider = new Provider(issuer, configuration);

provider.on('server_error', (ctx, err) => console.error('server_error', err));

async function form(req) {
  let raw = '';
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 16384) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(raw));
}

// The sign-in step of an interaction: a login form, and its POST checked against the test
// password. A signed-in person grants Steward's client what it asked for (no consent screen).
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET' && !m[2]) {
    ctx.type = 'html';
    ctx.body = `<form method="post" action="/interaction/${details.uid}/login">`
      + '<input name="login"/><input name="password" type="password"/></form>';
    return undefined;
  }
  if (ctx.method !== 'POST' || !m[2]) return next();
  const body = await form(ctx.req);
  if (!peoplePassword || body.password !== peoplePassword || !body.login) {
    ctx.status = 401;
    ctx.body = 'wrong login or password';
    return undefined;
  }
  const accountId = body.login.trim();
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope('openid email');
  if (details.params.resource) {
    grant.addResourceScope(details.params.resource, 'openid email');
  }
  const grantId = await grant.save();
  const to = await provider.interactionResult(ctx.req, ctx.res, {
    login: { accountId },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(to);
  return undefined;
});

await new provider.InitialAccessToken({
  jti: initialAccessToken,
  policies: ['steward-secret-rotation'],
}).save();

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider ${issuer} ready`);
});

if (mtlsPort !== undefined) {
  const { cert, key } = serverCertificate();
  writeFileSync(serverCertFile, cert);
  createServer({
    cert,
    key,
    requestCert: true,
    rejectUnauthorized: false,
  }, provider.callback()).listen(mtlsPort, '127.0.0.1', () => {
    console.log(`oidc-provider mTLS listener ${mtlsBase} ready (server certificate: ${serverCertFile})`);
  });
}
