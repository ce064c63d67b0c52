// A real OAuth 2.1 / OpenID Connect authorization server for Shadowcat's tests,
// built on oidc-provider. See README.md ("authorization-server.mjs") for details.
//
//   node tests/peers/authorization-server.mjs --port 0 --resource http://127.0.0.1:P/mcp
//        [--resource URL]... [--opaque-resource URL]... [--access-token-ttl SECONDS]
//
// Prints exactly one stdout line when listening: `issuer http://127.0.0.1:PORT`.
// DEBUG=1 prints one stderr line per request (and oidc-provider's own notices).
//
// Besides OAuth it serves test-only JSON endpoints under /test/ (rotate the
// signing key, sign arbitrary claims with the real key, forge tokens, counters).

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
// only for token introspection.
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
  if (DEBUG) {
    // Note the OAuth parameters of each request for the DEBUG line (no secrets).
    provider.use(async (ctx, next) => {
      await next();
      const p = ctx.oidc?.params ?? {};
      const shown = ['grant_type', 'client_id', 'resource', 'scope'].filter((k) => p[k] !== undefined);
      if (shown.length) ctx.req.debugNote = shown.map((k) => `${k}=${p[k]}`).join(' ');
    });
  }
  return provider;
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
const stats = { jwks: 0, token: 0, introspection: 0, registration: 0, authorization: 0 };
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
