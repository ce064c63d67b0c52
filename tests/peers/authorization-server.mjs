// A real OAuth 2.1 / OpenID Connect authorization server for Shadowcat's tests,
// built on oidc-provider. See README.md ("authorization-server.mjs") for details.
//
//   node tests/peers/authorization-server.mjs --port 0 --resource http://127.0.0.1:P/mcp
//        [--resource URL]... [--opaque-resource URL]... [--exchange-audience URL]...
//        [--access-token-ttl SECONDS]
//
// Prints exactly one stdout line when listening: `issuer http://127.0.0.1:PORT`.
// DEBUG=1 prints one stderr line per request (and oidc-provider's own notices).
//
// Besides OAuth it serves test-only JSON endpoints under /test/ (rotate the
// signing key, sign arbitrary claims with the real key, forge tokens, counters).
// It also implements RFC 8693 token exchange (which oidc-provider lacks) as a
// custom grant type for the static client `shadowcat`.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

const DEBUG = !!process.env.DEBUG && process.env.DEBUG !== '0';

// oidc-provider prints notices with console.info, which goes to stdout and
// would break the one-stdout-line contract. Send its chatter to stderr, and
// only when DEBUG is set.
for (const level of ['info', 'warn', 'log']) {
  console[level] = (...args) => {
    const text = args.join(' ');
    if (!DEBUG && text.startsWith('oidc-provider ')) return;
    process.stderr.write(`${text}\n`);
  };
}
// Imported only now: oidc-provider warns about the runtime as it is loaded.
const { Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------- arguments
const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT ?? '0' },
    resource: { type: 'string', multiple: true, default: [] },
    'opaque-resource': { type: 'string', multiple: true, default: [] },
    'exchange-audience': { type: 'string', multiple: true, default: [] },
    'access-token-ttl': { type: 'string', default: '600' },
  },
});
const PORT = Number(opts.port);
const ACCESS_TOKEN_TTL = Number(opts['access-token-ttl']);

// Scopes every resource server here accepts, and the "foreign" audience that
// always exists so tests can get a valid token meant for someone else.
const RESOURCE_SCOPES = 'mcp mcp:tools mcp:admin mcp:write';
const FOREIGN_RESOURCE = 'http://other.example/mcp';
const jwtResources = new Set([...opts.resource, FOREIGN_RESOURCE]);
const opaqueResources = new Set(opts['opaque-resource']);
// Targets (RFC 8693 `resource` or `audience`) a token exchange may ask for.
const exchangeAudiences = new Set(opts['exchange-audience']);

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

// ---------------------------------------------------------------- signing keys
// keys[0] is the current signing key; the others are only published in the JWKS.
let keyCounter = 0;
let keys = [];

function newSigningKey() {
  keyCounter += 1;
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `key-${keyCounter}-${crypto.randomBytes(3).toString('hex')}`;
  const { e, n } = publicKey.export({ format: 'jwk' });
  return {
    kid,
    privateKey,
    publicKey,
    // What oidc-provider is configured with (private JWK)...
    privateJwk: { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' },
    // ...and its entry in /jwks exactly as oidc-provider publishes it (same member order).
    publicJwk: { kty: 'RSA', use: 'sig', kid, alg: 'RS256', e, n },
  };
}

// ---------------------------------------------------------------- clients
// Static confidential clients. `alice` and `bob` are different principals: a
// client_credentials token's `sub` is the client id. They may also use the
// authorization code flow (loopback redirect, any port). `resource-server` is
// only for token introspection. `shadowcat` (a resource server that calls an
// upstream) may only exchange tokens (RFC 8693).
const STATIC_CLIENTS = [
  ...['alice', 'bob'].map((id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
    application_type: 'native', // loopback redirect URIs may use any port (RFC 8252)
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post works too, see below
  })),
  {
    client_id: 'resource-server',
    client_secret: 'resource-server-secret',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'shadowcat',
    client_secret: 'shadowcat-secret',
    grant_types: [TOKEN_EXCHANGE],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post works too
  },
];

// ---------------------------------------------------------------- provider
function resourceServerInfo(resource) {
  const base = { scope: RESOURCE_SCOPES, accessTokenTTL: ACCESS_TOKEN_TTL };
  if (jwtResources.has(resource)) {
    return { ...base, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
  }
  if (opaqueResources.has(resource)) {
    return { ...base, accessTokenFormat: 'opaque' };
  }
  throw new errors.InvalidTarget(`unknown resource indicator ${resource}`);
}

// oidc-provider's own in-memory adapter belongs to one Provider instance, and
// /test/rotate builds a new one. This adapter keeps all stateful artifacts
// (registered clients, sessions, interactions, grants, codes, opaque and
// refresh tokens) in one process-wide Map instead, so they survive a rotation.
const store = new Map(); // "Model:id" -> { payload, expiresAt (ms) }
const grantMembers = new Map(); // grantId -> Set of store keys issued under it
const uidIndex = new Map(); // Session uid -> Session id
const userCodeIndex = new Map(); // device flow user code -> id
let writes = 0;

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store.set(key, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    if (payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (this.model === 'Session') uidIndex.set(payload.uid, id);
    if (payload.userCode) userCodeIndex.set(payload.userCode, id);
    writes += 1;
    if (writes % 500 === 0) { // now and then, forget what has expired
      const now = Date.now();
      for (const [k, entry] of store) if (entry.expiresAt <= now) store.delete(k);
    }
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry || entry.expiresAt <= Date.now()) return undefined;
    return entry.payload;
  }

  async findByUid(uid) { return uidIndex.has(uid) ? this.find(uidIndex.get(uid)) : undefined; }

  async findByUserCode(code) { return userCodeIndex.has(code) ? this.find(userCodeIndex.get(code)) : undefined; }

  async consume(id) {
    const payload = await this.find(id);
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// Cookie keys stay the same across key rotations too, so a login that is
// under way survives a rebuilt Provider.
const COOKIE_KEYS = [crypto.randomBytes(32).toString('hex')];

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients: STATIC_CLIENTS,
    jwks: { keys: keys.map((k) => k.privateJwk) },
    cookies: { keys: COOKIE_KEYS },
    // Scopes must be listed here for clients to be allowed to register them
    // (the TypeScript SDK sends `scope` in its registration request).
    scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES.split(' ')],
    claims: { openid: ['sub'] },
    findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
    features: {
      devInteractions: { enabled: true }, // any login name and password; sub = login name
      clientCredentials: { enabled: true },
      // RFC 7662, for opaque tokens (JWT access tokens are refused by oidc-provider).
      // Any authenticated confidential client may introspect any token.
      introspection: { enabled: true, allowedPolicy: (ctx, client) => client.clientAuthMethod !== 'none' },
      revocation: { enabled: true },
      registration: { enabled: true, initialAccessToken: false }, // open RFC 7591 registration
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf, // no default: no resource, no audience
        getResourceServerInfo: (ctx, resource) => resourceServerInfo(resource),
        useGrantedResource: () => true, // token requests may omit the granted resource
      },
    },
    pkce: { required: () => true }, // S256 only (oidc-provider's default method list)
    // A refresh token for every authorization code grant of a client that may
    // refresh (the default needs `offline_access`, which MCP clients do not ask for).
    issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // client_credentials tokens carry no account; give their introspection
    // answer the same `sub` (the client id) as their JWT form has.
    extraTokenClaims: (ctx, token) => (token.kind === 'ClientCredentials' ? { sub: token.clientId } : undefined),
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      RefreshToken: 24 * 60 * 60,
      Grant: 24 * 60 * 60,
      Interaction: 60 * 60,
      Session: 24 * 60 * 60,
      IdToken: 60 * 60,
    },
    responseTypes: ['code'], // OAuth 2.1: no implicit or hybrid flows
    clientBasedCORS: () => true,
  });
  // RFC 8693 token exchange. Registered on every Provider, so it survives /test/rotate.
  // `resource` and `audience` may repeat (RFC 8693 §2.1); the handler wants one target.
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, EXCHANGE_PARAMS, ['resource', 'audience']);
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'token' || ctx.oidc.params?.grant_type !== TOKEN_EXCHANGE) return;
    stats.exchange += 1;
    // oidc-provider answers a client that may not use a grant type with
    // invalid_request; RFC 6749 §5.2 says unauthorized_client.
    if (ctx.status === 400 && ctx.body?.error === 'invalid_request'
        && ctx.body.error_description === 'requested grant type is not allowed for this client') {
      ctx.body = { error: 'unauthorized_client', error_description: 'client may not use the token-exchange grant' };
    }
  });
  if (DEBUG) {
    // Note the OAuth parameters of each request for the DEBUG line (no secrets).
    provider.use(async (ctx, next) => {
      await next();
      const p = ctx.oidc?.params ?? {};
      const shown = ['grant_type', 'client_id', 'resource', 'audience', 'scope'].filter((k) => p[k] !== undefined);
      if (shown.length) ctx.req.debugNote = shown.map((k) => `${k}=${p[k]}`).join(' ');
    });
  }
  return provider;
}

// ---------------------------------------------------------------- token exchange (RFC 8693)
const EXCHANGE_PARAMS = [
  'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
  'requested_token_type', 'resource', 'audience', 'scope',
];
const invalidGrant = (description) => new errors.CustomOIDCProviderError('invalid_grant', description);
const epoch = () => Math.floor(Date.now() / 1000);

// A JWT access token issued here: RS256 with a key now in /jwks, typ at+jwt,
// `iss` = issuer, not expired, a `sub`. Tokens from /test/sign pass too.
function verifyJwtSubject(value) {
  const [h, p, sig] = value.split('.');
  // Node's decoder ignores stray characters and trailing bits; insist on the one encoding.
  if (![h, p, sig].every((part) => part !== undefined && Buffer.from(part, 'base64url').toString('base64url') === part)) {
    throw invalidGrant('subject_token is not a well-formed JWT');
  }
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(h, 'base64url'));
    claims = JSON.parse(Buffer.from(p, 'base64url'));
  } catch {
    throw invalidGrant('subject_token is not a well-formed JWT');
  }
  if (header?.alg !== 'RS256') throw invalidGrant('subject_token must be signed with RS256');
  if (!/^(application\/)?at\+jwt$/i.test(header.typ ?? '')) throw invalidGrant('subject_token is not an access token (typ at+jwt)');
  const candidates = header.kid === undefined ? keys : keys.filter((k) => k.kid === header.kid);
  const signature = Buffer.from(sig, 'base64url');
  const signed = Buffer.from(`${h}.${p}`);
  if (!candidates.some((k) => crypto.verify('sha256', signed, k.publicKey, signature))) {
    throw invalidGrant('subject_token signature is invalid (unknown key or bad signature)');
  }
  if (!claims || typeof claims !== 'object') throw invalidGrant('subject_token claims are not an object');
  if (claims.iss !== issuer) throw invalidGrant('subject_token was not issued by this server');
  if (typeof claims.exp !== 'number' || claims.exp <= epoch()) throw invalidGrant('subject_token is expired');
  if (typeof claims.nbf === 'number' && claims.nbf > epoch()) throw invalidGrant('subject_token is not valid yet');
  if (typeof claims.sub !== 'string' || !claims.sub) throw invalidGrant('subject_token has no sub');
  if (claims.scope !== undefined && typeof claims.scope !== 'string') throw invalidGrant('subject_token scope is not a string');
  return { sub: claims.sub, scope: claims.scope, exp: claims.exp, act: claims.act };
}

// An opaque access token issued here (oidc-provider's store), still valid.
async function findOpaqueSubject(provider, value) {
  const token = await provider.AccessToken.find(value) ?? await provider.ClientCredentials.find(value);
  if (!token?.isValid) throw invalidGrant('subject_token is unknown, revoked or expired');
  if (token.grantId) { // revoked with its grant (as introspection checks)
    const grant = await provider.Grant.find(token.grantId);
    if (!grant || grant.isExpired) throw invalidGrant('subject_token is unknown, revoked or expired');
  }
  return { sub: token.extra?.sub ?? token.accountId ?? token.clientId, scope: token.scope, exp: token.exp };
}

async function tokenExchange(ctx) {
  const { params, client, provider } = ctx.oidc;
  // The token endpoint only lets through clients whose grant_types list this grant;
  // this is a second line in case a registered client lists it.
  if (client.clientId !== 'shadowcat') throw new errors.UnauthorizedClient('client may not use the token-exchange grant');

  if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter(s) (subject_token)');
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (params.actor_token !== undefined || params.actor_token_type !== undefined) {
    throw new errors.InvalidRequest('actor_token is not supported (the client is the actor)');
  }

  const targets = [...new Set([params.resource, params.audience].flat().filter((t) => t !== undefined))];
  if (targets.length === 0) throw new errors.InvalidRequest('resource or audience is required');
  if (targets.length > 1) throw new errors.InvalidTarget('only one target (resource or audience) per exchange');
  const [target] = targets;
  if (!exchangeAudiences.has(target)) throw new errors.InvalidTarget(`unknown exchange target ${target}`);

  const subject = params.subject_token.split('.').length === 3
    ? verifyJwtSubject(params.subject_token)
    : await findOpaqueSubject(provider, params.subject_token);

  const held = new Set(subject.scope ? subject.scope.split(' ') : []);
  let scope = subject.scope || undefined;
  if (params.scope !== undefined) {
    const asked = [...new Set(params.scope.split(' ').filter(Boolean))];
    const extra = asked.filter((s) => !held.has(s));
    if (extra.length) throw new errors.InvalidScope(`scope exceeds the subject token's: ${extra.join(' ')}`);
    scope = asked.join(' ') || undefined;
  }

  const iat = epoch();
  const exp = Math.min(subject.exp, iat + ACCESS_TOKEN_TTL);
  const key = keys[0];
  const claims = {
    sub: subject.sub,
    jti: crypto.randomBytes(32).toString('base64url'),
    iat,
    exp,
    ...(scope ? { scope } : undefined),
    client_id: client.clientId,
    iss: issuer,
    aud: target,
    // RFC 8693 §4.1: the client is the current actor; an earlier actor nests.
    act: { sub: client.clientId, ...(subject.act ? { act: subject.act } : undefined) },
  };
  const accessToken = signJwt({ alg: 'RS256', typ: 'at+jwt', kid: key.kid }, claims, (input) =>
    crypto.sign('sha256', Buffer.from(input), key.privateKey).toString('base64url'));

  ctx.body = {
    access_token: accessToken,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: exp - iat,
    ...(scope ? { scope } : undefined),
  };
}

// ---------------------------------------------------------------- JWT helpers
const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function signJwt(header, claims, signer) {
  const input = `${b64url(header)}.${b64url(claims)}`;
  return `${input}.${signer(input)}`;
}

// POST /test/sign: real key, or forged with alg "none" / HS256 keyed with the public key.
function testSign({ claims, header = {}, forge }) {
  if (!claims || typeof claims !== 'object') throw new Error('body needs "claims": {...}');
  const key = keys[0];
  const base = { typ: 'at+jwt', kid: key.kid };
  switch (forge ?? null) {
    case null:
      return {
        token: signJwt({ ...base, alg: 'RS256', ...header }, claims, (input) =>
          crypto.sign('sha256', Buffer.from(input), key.privateKey).toString('base64url')),
      };
    case 'none':
      return { token: signJwt({ ...base, alg: 'none', ...header }, claims, () => '') };
    case 'hs256-public': {
      // Classic RS256 -> HS256 key confusion: the HMAC secret is public material.
      const hmac = (secret) => (input) => crypto.createHmac('sha256', secret).update(input).digest('base64url');
      const pem = key.publicKey.export({ type: 'spki', format: 'pem' }); // ends with "\n"
      const jwkJson = JSON.stringify(key.publicJwk);
      const hdr = { ...base, alg: 'HS256', ...header };
      return {
        token: signJwt(hdr, claims, hmac(pem)), // secret = SPKI PEM text
        jwkToken: signJwt(hdr, claims, hmac(jwkJson)), // secret = the JWKS entry as JSON
      };
    }
    default:
      throw new Error(`unknown forge "${forge}" (none | hs256-public)`);
  }
}

// ---------------------------------------------------------------- HTTP server
const stats = { jwks: 0, token: 0, introspection: 0, registration: 0, authorization: 0, exchange: 0 };
let issuer; // fixed once listening
let provider; // swapped by /test/rotate
let providerHandler;

function rebuild() {
  provider = buildProvider(issuer);
  providerHandler = provider.callback();
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      try { resolve(body ? JSON.parse(body) : {}); } catch (e) { reject(e); }
    });
    req.on('error', reject);
  });
}

function sendJson(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(value));
}

// The /test/ control endpoints. Returns false if the path is not one of them.
async function testEndpoint(req, res, pathname) {
  const route = `${req.method} ${pathname}`;
  switch (route) {
    case 'POST /test/rotate': {
      const { keepOld = false } = await readJson(req);
      const fresh = newSigningKey();
      keys = keepOld ? [fresh, ...keys] : [fresh];
      rebuild(); // same issuer, new keystore
      sendJson(res, 200, { kid: fresh.kid });
      return true;
    }
    case 'POST /test/sign':
      sendJson(res, 200, testSign(await readJson(req)));
      return true;
    case 'GET /test/keys':
      sendJson(res, 200, { current: keys[0].kid, jwks: keys.map((k) => k.kid) });
      return true;
    case 'GET /test/stats':
      sendJson(res, 200, stats);
      return true;
    case 'DELETE /test/stats':
      for (const name of Object.keys(stats)) stats[name] = 0;
      sendJson(res, 200, stats);
      return true;
    default:
      if (pathname.startsWith('/test/')) {
        sendJson(res, 404, { error: `no test endpoint ${route}` });
        return true;
      }
      return false;
  }
}

// Counts the requests tests may want to assert on (by oidc-provider's default routes).
function count(method, pathname) {
  if (method === 'GET' && pathname === '/jwks') stats.jwks += 1;
  else if (method === 'POST' && pathname === '/token') stats.token += 1;
  else if (method === 'POST' && pathname === '/token/introspection') stats.introspection += 1;
  else if (method === 'POST' && pathname === '/reg') stats.registration += 1;
  else if (pathname === '/auth') stats.authorization += 1;
}

const server = http.createServer(async (req, res) => {
  const { url, method } = req;
  const { pathname } = new URL(url, 'http://x');
  if (DEBUG) {
    res.on('finish', () => {
      const note = req.debugNote ? ` (${req.debugNote})` : '';
      process.stderr.write(`as: ${method} ${url} -> ${res.statusCode}${note}\n`);
    });
  }
  try {
    if (await testEndpoint(req, res, pathname)) return;
    count(req.method, pathname);
    // oidc-provider serves only OIDC discovery; RFC 8414 metadata is the same document.
    if (pathname === '/.well-known/oauth-authorization-server') {
      req.url = '/.well-known/openid-configuration';
    }
    providerHandler(req, res);
  } catch (e) {
    if (!res.headersSent) sendJson(res, 400, { error: String(e.message ?? e) });
    else res.destroy();
  }
});

keys = [newSigningKey()];
server.listen(PORT, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  rebuild();
  process.stdout.write(`issuer ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
