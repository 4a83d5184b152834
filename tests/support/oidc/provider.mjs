// A real OpenID Connect provider for the tests: panva's oidc-provider on loopback.
//
//   node provider.mjs [PORT]     (or OIDC_PORT; 0 picks a free port)
//   OIDC_CONFIG=/path/to/config.json   clients, users, resources (below)
//   OIDC_EXIT_ON_STDIN_EOF=1           exit when stdin closes (the test runner died)
//
// Issuer: http://127.0.0.1:PORT. Prints one line `OIDC_PROVIDER_READY {json}` when
// listening. Used by tests/support/oidc_provider.py; install with
// scripts/install_oidc_provider.sh.
//
// Config (JSON):
//   clients:   oidc-provider client metadata, e.g. {client_id, client_secret,
//              redirect_uris, grant_types, token_endpoint_auth_method}; a public client
//              has token_endpoint_auth_method "none" and must use PKCE (S256).
//   users:     [{sub, username?, email?, name?, groups?, ...claims}]
//   resources: {"<resource indicator>": {scope, audience?, ttl?}}; an access token
//              requested for one (RFC 8707 `resource`) is an RS256 JWT (RFC 9068,
//              typ at+jwt) signed with the same keys as ID tokens, with `groups`.
//   pkce:      "public" (default, only public clients must use PKCE) or "all".
//   ttl:       overrides of oidc-provider's ttl (seconds), e.g. {"AccessToken": 60}.
//
// Sign-in without a browser: the provider redirects to /interaction/UID; a GET or POST
// there with `login=<sub, username or email>` (or the authorization request's
// login_hint) signs the user in, and the consent that follows is granted at once
// (everything asked for). `deny=1`, /interaction/UID/abort, or an unknown user
// return error=access_denied to the client. With no user given, a small HTML form.
//
// Test admin endpoints:
//   POST /__test/rotate[?keep_old=0]  new RS256 signing key, first in the JWKS; the old
//                                     keys stay (verifiable, no longer used) unless
//                                     keep_old=0. Answers {kid, kids}.
//   GET  /__test/keys                 {kids} in JWKS order.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import { Provider, errors } from 'oidc-provider';

const host = '127.0.0.1';
const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const config = process.env.OIDC_CONFIG
  ? JSON.parse(fs.readFileSync(process.env.OIDC_CONFIG, 'utf8'))
  : {};
const clients = config.clients ?? [];
const users = config.users ?? [];
const resources = config.resources ?? {};
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
}

let signingKeys = [newSigningKey()];

function findUser(login) {
  if (!login) return undefined;
  return users.find((u) => u.sub === login || u.username === login || u.email === login);
}

function userClaims(user) {
  const { username, ...claims } = user;
  if (username !== undefined && claims.preferred_username === undefined) {
    claims.preferred_username = username;
  }
  return claims;
}

// oidc-provider's defaults, stated so that it does not print a notice for each.
const day = 24 * 60 * 60;
const ttl = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  ClientCredentials: 600,
  Grant: 14 * day,
  IdToken: 3600,
  Interaction: 3600,
  RefreshToken: 14 * day,
  Session: 14 * day,
  ...config.ttl,
};

let issuer;

function buildProvider() {
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'given_name', 'family_name'],
      groups: ['groups'],
    },
    // Scope-requested claims (email, name, groups) go into the ID token too, not only
    // to userinfo: what relying parties that read the ID token expect.
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      const user = users.find((u) => u.sub === sub);
      if (!user) return undefined;
      return { accountId: sub, claims: async () => userClaims(user) };
    },
    async extraTokenClaims(ctx, token) {
      const user = token.accountId && users.find((u) => u.sub === token.accountId);
      return user?.groups ? { groups: user.groups } : undefined;
    },
    interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: {
      required: (ctx, client) => config.pkce === 'all' || client.clientAuthMethod === 'none',
    },
    // A refresh token whenever the client may use the refresh_token grant (oidc-provider's
    // default also wants the offline_access scope).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl,
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf,
        // The resource asked for at the authorization endpoint is the access token's
        // audience at the token endpoint without being repeated there.
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, indicator) {
          const info = resources[indicator];
          if (!info) throw new errors.InvalidTarget();
          return {
            scope: info.scope ?? '',
            audience: info.audience ?? indicator,
            accessTokenTTL: info.ttl ?? ttl.AccessToken,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let provider;
let handle;

function rebuild() {
  provider = buildProvider();
  handle = provider.callback();
}

async function readForm(req) {
  if (req.method !== 'POST') return new URLSearchParams();
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] ?? '').includes('application/json')) {
    return new URLSearchParams(body ? JSON.parse(body) : {});
  }
  return new URLSearchParams(body);
}

function send(res, status, body, type = 'application/json') {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(text);
}

const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function grantEverything(details) {
  const { prompt, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return details.grantId ? {} : { grantId };
}

async function interaction(req, res, url) {
  const [, , uid, action] = url.pathname.split('/');
  const form = await readForm(req);
  const input = (name) => form.get(name) ?? url.searchParams.get(name);
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction uid mismatch');
  const finish = (result, merge) =>
    provider.interactionFinished(req, res, result, { mergeWithLastSubmission: merge });
  const deny = (description) =>
    finish({ error: 'access_denied', error_description: description }, false);

  if (action === 'abort' || input('deny')) return deny('End-User aborted interaction');
  switch (details.prompt.name) {
    case 'login': {
      const login = input('login') ?? details.params.login_hint;
      if (!login) {
        return send(
          res,
          200,
          `<!doctype html><title>Sign in</title><form method="post" action="/interaction/${escapeHtml(uid)}">` +
            `<label>User <input name="login" autofocus></label> <button>Sign in</button>` +
            `<button name="deny" value="1">Cancel</button></form>`,
          'text/html; charset=utf-8',
        );
      }
      const user = findUser(login);
      if (!user) return deny(`unknown user ${login}`);
      return finish({ login: { accountId: user.sub, amr: ['pwd'] } }, false);
    }
    case 'consent':
      return finish({ consent: await grantEverything(details) }, true);
    default:
      return send(res, 400, { error: `unsupported prompt ${details.prompt.name}` });
  }
}

async function admin(req, res, url) {
  if (url.pathname === '/__test/rotate' && req.method === 'POST') {
    const form = await readForm(req);
    const keepOld = (form.get('keep_old') ?? url.searchParams.get('keep_old') ?? '1') !== '0';
    const key = newSigningKey();
    signingKeys = keepOld ? [key, ...signingKeys] : [key];
    rebuild();
    return send(res, 200, { kid: key.kid, kids: signingKeys.map((k) => k.kid) });
  }
  if (url.pathname === '/__test/keys' && req.method === 'GET') {
    return send(res, 200, { kids: signingKeys.map((k) => k.kid) });
  }
  return send(res, 404, { error: 'not_found' });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res, url);
    if (url.pathname.startsWith('/__test/')) return await admin(req, res, url);
    return handle(req, res);
  } catch (err) {
    if (res.headersSent) return res.end();
    const status = err instanceof errors.OIDCProviderError ? err.status : 500;
    if (status >= 500) console.error(err);
    return send(res, status, { error: err.error ?? 'server_error', error_description: err.message });
  }
});

server.listen(port, host, () => {
  const actual = server.address().port;
  issuer = `http://${host}:${actual}`;
  rebuild();
  console.log(`OIDC_PROVIDER_READY ${JSON.stringify({ issuer, port: actual })}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
if (process.env.OIDC_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
