// The OAuth 2.0 / OpenID test peer (npm `oidc-provider` on 127.0.0.1), started by tests/run:
// - for Steward's generic OAuth adapter (shared/src/idp/oauth/): dynamic client registration
//   (RFC 7591/7592), the client_credentials grant, introspection (RFC 7662) and revocation
//   (RFC 7009); clients authenticate with a secret or with client assertions signed by their
//   registered keys (RFC 7523 private_key_jwt), and tokens can be bound to a key by DPoP
//   (RFC 9449; `dpop_bound_access_tokens` makes the proof mandatory for a client); see
//   docs/adr/0013-oauth-dcr-adapter.md;
// - as the people's issuer: the device authorization grant (RFC 8628) for the public client
//   `steward-cli`, a login form checked against OIDC_PEOPLE_PASSWORD, and JWT access tokens for
//   the audience `api://steward` that name the person by `email`
//   (docs/adr/0022-principals-and-person-sign-in.md).
//
// Usage: PORT=<port> OIDC_INITIAL_ACCESS_TOKEN=<random value> [OIDC_PEOPLE_PASSWORD=<value>] node provider.mjs
//
// Registration needs the initial access token (RFC 7591 §3): it carries the registration policy
// `steward-secret-rotation`, which makes an RFC 7592 update that omits `client_secret` issue a
// new secret (to a client that authenticates with one). oidc-provider never rotates a secret on
// update by default, and policies only travel with adapter-backed initial access tokens (see
// ADR 13, docs/adr/0013-oauth-dcr-adapter.md).
//
// Mutual TLS (RFC 8705) is switched on for its metadata only: clients may register
// `tls_client_auth`, `self_signed_tls_client_auth` and
// `tls_client_certificate_bound_access_tokens`, but this listener is plain http, so no request
// ever carries a client certificate and such clients get no token (oidc-provider answers that no
// certificate was provided). Issuing certificate-bound tokens needs a TLS listener that asks for
// client certificates, which this test peer does not have.
import { randomBytes, X509Certificate } from 'node:crypto';
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
  // (private_key_jwt) or, with a TLS listener, a certificate.
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
    // RFC 8705, metadata only (see the top of this file): the certificate is the TLS peer's,
    // and on this plain-http listener there is none.
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
      certificateAuthorized(ctx) {
        return ctx.socket.authorized === true;
      },
      // Reached only with a certificate, so never on this listener.
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
