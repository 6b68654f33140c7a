// The OAuth 2.0 test peer of Steward's generic OAuth adapter (shared/src/idp/oauth.rs): the npm
// `oidc-provider` on 127.0.0.1 with dynamic client registration (RFC 7591/7592), the
// client_credentials grant, introspection (RFC 7662) and revocation (RFC 7009). tests/run starts
// it; see docs/adr/0013-oauth-dcr-adapter.md.
//
// Usage: PORT=<port> OIDC_INITIAL_ACCESS_TOKEN=<random value> node provider.mjs
//
// Registration needs the initial access token (RFC 7591 §3): it carries the registration policy
// `steward-secret-rotation`, which makes an RFC 7592 update that omits `client_secret` issue a
// new secret. oidc-provider never rotates a secret on update by default, and policies only
// travel with adapter-backed initial access tokens (see ADR 13, docs/adr/0013-oauth-dcr-adapter.md).
import { randomBytes } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const port = Number.parseInt(process.env.PORT ?? '', 10);
const initialAccessToken = process.env.OIDC_INITIAL_ACCESS_TOKEN ?? '';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('provider.mjs: set PORT to the port to listen on (127.0.0.1)');
  process.exit(2);
}
if (initialAccessToken.length < 32) {
  console.error('provider.mjs: set OIDC_INITIAL_ACCESS_TOKEN to a random value of 32+ characters');
  process.exit(2);
}

// Plain http on loopback: the issuer must be exactly the URL clients use.
const issuer = `http://127.0.0.1:${port}`;

// The scopes tests grant; `steward:test:*` are the two the conformance suite uses.
const SCOPES = ['openid', 'steward:test:read', 'steward:test:write', 'steward:test:admin'];

// The resource (RFC 8707) a client may ask client_credentials tokens for.
const TEST_RESOURCE = 'urn:steward:test-api';

// Per-client access token lifetime, as client metadata (the field Janssen/Gluu use too):
// RFC 7591 has none, so the adapter sends it and checks the echo.
const LIFETIME = 'access_token_lifetime';
const DEFAULT_TTL = 600;
const MAX_TTL = 86400;

const configuration = {
  clients: [],
  scopes: SCOPES,
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
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
    introspection: {
      enabled: true,
      // A client may introspect its own tokens only.
      allowedPolicy(ctx, client, token) {
        return token.clientId === client.clientId;
      },
    },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo(ctx, resource) {
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
          // a new one. Registration (POST) has its own secret already.
          if (ctx.method === 'PUT' && !('client_secret' in ctx.oidc.body)) {
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

await new provider.InitialAccessToken({
  jti: initialAccessToken,
  policies: ['steward-secret-rotation'],
}).save();

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider ${issuer} ready`);
});
