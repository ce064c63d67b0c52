// The TypeScript MCP SDK's client, with its own OAuth support, against an
// OAuth-protected MCP server. See README.md ("oauth-client.mjs") for details.
//
//   node tests/peers/oauth-client.mjs --url http://127.0.0.1:P/mcp
//        --flow client-credentials|authorization-code
//        [--client-id alice --client-secret alice-secret] [--scope "mcp mcp:tools"]
//        [--auth-method client_secret_basic|client_secret_post] [--issuer URL]
//        [--login carol] [--message hi] [--confidential] [--break-access-token]
//
// Discovery is the SDK's: an unauthenticated request, the 401's
// `WWW-Authenticate: Bearer resource_metadata="..."`, the protected resource
// metadata, the authorization server metadata, then the token endpoint.
// Then: initialize, tools/list, `echo` (if listed), session DELETE.
//
// Prints one JSON line on stdout:
//   {"ok":true,"flow":...,"tools":[...],"echo":...,"sessionId":...,"discovered":{...},"grants":[...]}
// or {"ok":false,"error":"..."} with exit code 1. DEBUG=1 traces every HTTP
// request the SDK makes (and the simulated browser's) on stderr.

import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const DEBUG = !!process.env.DEBUG && process.env.DEBUG !== '0';
const trace = (line) => { if (DEBUG) process.stderr.write(`oauth-client: ${line}\n`); };

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    flow: { type: 'string', default: 'client-credentials' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    scope: { type: 'string' },
    'auth-method': { type: 'string', default: 'client_secret_basic' },
    issuer: { type: 'string' }, // expected issuer (SDK `expectedIssuer`), optional
    login: { type: 'string', default: 'carol' },
    message: { type: 'string', default: 'hi' },
    confidential: { type: 'boolean', default: false }, // DCR as a confidential client
    'break-access-token': { type: 'boolean', default: false }, // exercise the SDK's refresh
  },
});

// ---------------------------------------------------------------- output
function finish(report, code) {
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(code);
}
const fail = (error) => finish({ ok: false, error: String(error?.message ?? error) }, 1);
setTimeout(() => fail('timed out after 30 s'), 30_000);

// ---------------------------------------------------------------- discovery record
// Every HTTP request the SDK makes goes through this fetch, so we can report
// which URLs discovery actually used.
const discovered = { resourceMetadataUrl: null, authorizationServer: null, authorizationServerMetadataUrl: null };
const grants = []; // grant_type of every token request the SDK made, in order
async function tracingFetch(url, init) {
  const response = await fetch(url, init);
  const href = String(url);
  trace(`${init?.method ?? 'GET'} ${href} -> ${response.status}`);
  if (init?.body instanceof URLSearchParams && init.body.has('grant_type')) {
    grants.push(init.body.get('grant_type'));
    trace(`  token request: ${[...init.body].filter(([k]) => !/secret|code|token|verifier/.test(k)).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  }
  if (response.ok && href.includes('/.well-known/oauth-protected-resource')) {
    discovered.resourceMetadataUrl ??= href;
  }
  if (response.ok && /\/\.well-known\/(oauth-authorization-server|openid-configuration)/.test(href)) {
    discovered.authorizationServerMetadataUrl ??= href;
  }
  return response;
}

// DEBUG: show the claims of each access token the SDK obtains (JWTs only).
function traceTokens(tokens) {
  const payload = tokens.access_token.split('.')[1];
  const shown = payload ? Buffer.from(payload, 'base64url').toString() : '(opaque)';
  trace(`token: ${shown} refresh_token=${tokens.refresh_token ? 'yes' : 'no'} scope=${tokens.scope}`);
}

// Shared by both providers: remember what the SDK's discovery saved.
function recordDiscovery(state) {
  discovered.authorizationServer ??= state.authorizationServerUrl;
  if (state.resourceMetadataUrl) discovered.resourceMetadataUrl = state.resourceMetadataUrl;
}

// ---------------------------------------------------------------- client credentials
// The SDK's own ClientCredentialsProvider (client_secret_basic). For
// client_secret_post we only change the client information it hands the SDK:
// the SDK picks the method the client information names.
class ClientCredentials extends ClientCredentialsProvider {
  constructor() {
    super({
      clientId: opts['client-id'] ?? 'alice',
      clientSecret: opts['client-secret'] ?? `${opts['client-id'] ?? 'alice'}-secret`,
      scope: opts.scope,
      ...(opts.issuer ? { expectedIssuer: opts.issuer } : {}),
    });
  }

  clientInformation() {
    const info = super.clientInformation();
    return { ...info, token_endpoint_auth_method: opts['auth-method'] };
  }

  saveTokens(tokens) {
    traceTokens(tokens);
    super.saveTokens(tokens);
  }

  saveDiscoveryState(state) { recordDiscovery(state); }
}

// ---------------------------------------------------------------- authorization code
// An OAuthClientProvider whose "browser" is fetch: it follows the authorization
// URL, submits oidc-provider's devInteractions login and consent forms, and
// catches the redirect back to redirectUrl (which nothing listens on).
class AuthorizationCode {
  constructor() {
    this.redirect = 'http://127.0.0.1:1/callback';
    this.stored = {}; // client information, tokens, code verifier
    this.expectedState = randomBytes(12).toString('base64url');
    this.authorizationCode = undefined;
    if (opts['client-id']) {
      // A pre-registered client (alice/bob on authorization-server.mjs): no DCR.
      this.stored.client = { client_id: opts['client-id'], client_secret: opts['client-secret'] };
    }
  }

  get redirectUrl() { return this.redirect; }

  get clientMetadata() {
    return {
      client_name: 'shadowcat oauth-client.mjs',
      redirect_uris: [this.redirect],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: opts.confidential ? 'client_secret_basic' : 'none',
      ...(opts.scope ? { scope: opts.scope } : {}),
    };
  }

  state() { return this.expectedState; }
  clientInformation() { return this.stored.client; }
  saveClientInformation(info) { this.stored.client = info; }
  tokens() { return this.stored.tokens; }
  saveTokens(tokens) { traceTokens(tokens); this.stored.tokens = tokens; }
  saveCodeVerifier(verifier) { this.stored.verifier = verifier; }
  codeVerifier() { return this.stored.verifier; }
  saveDiscoveryState(state) { recordDiscovery(state); }

  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') delete this.stored.client;
    if (scope === 'all' || scope === 'tokens') delete this.stored.tokens;
    if (scope === 'all' || scope === 'verifier') delete this.stored.verifier;
  }

  async redirectToAuthorization(authorizationUrl) {
    trace(`authorization URL ${authorizationUrl}`);
    const params = await browse(authorizationUrl, this.redirect);
    if (params.get('error')) {
      throw new Error(`authorization failed: ${params.get('error')} ${params.get('error_description') ?? ''}`);
    }
    if (params.get('state') !== this.expectedState) throw new Error('authorization response state mismatch');
    this.authorizationCode = params.get('code');
  }
}

// A tiny user agent: follows redirects, keeps cookies, fills in forms.
// Returns the query parameters of the final redirect to `redirectUri`.
async function browse(startUrl, redirectUri) {
  const cookies = new Map();
  let url = new URL(startUrl);
  let request = { method: 'GET' };
  for (let step = 0; step < 20; step += 1) {
    const headers = { ...request.headers };
    if (cookies.size) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const response = await fetch(url, { ...request, headers, redirect: 'manual' });
    trace(`browser ${request.method} ${url} -> ${response.status}`);
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const expired = attributes.some((a) => /^\s*(max-age=0|expires=Thu, 01 Jan 1970)/i.test(a));
      if (expired) cookies.delete(name); else cookies.set(name, pair.slice(eq + 1).trim());
    }

    if (response.status >= 300 && response.status < 400) {
      const next = new URL(response.headers.get('location'), url);
      if (next.href.startsWith(redirectUri)) return next.searchParams;
      url = next;
      request = { method: 'GET' };
      continue;
    }

    const html = await response.text();
    if (!response.ok) throw new Error(`authorization server answered ${response.status}: ${html.slice(0, 300)}`);
    const form = parseForm(html);
    if (!form) throw new Error(`no form on ${url}: ${html.slice(0, 300)}`);
    if (form.fields.prompt === 'login') {
      form.fields.login = opts.login; // devInteractions: any login name, any password
      form.fields.password = 'any-password';
    }
    trace(`browser submits the ${form.fields.prompt ?? 'unknown'} form`);
    url = new URL(form.action, url);
    request = {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form.fields).toString(),
    };
  }
  throw new Error('too many steps in the authorization flow');
}

// The first <form> of a page: its action and its hidden inputs.
function parseForm(html) {
  const form = /<form\b[^>]*\baction="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) return undefined;
  const unescape = (s) => s.replace(/&amp;/g, '&').replace(/&#x2F;/gi, '/').replace(/&quot;/g, '"').replace(/&#39;/g, "'");
  const fields = {};
  for (const [input] of form[2].matchAll(/<input\b[^>]*>/gi)) {
    const name = /\bname="([^"]*)"/.exec(input)?.[1];
    const value = /\bvalue="([^"]*)"/.exec(input)?.[1];
    if (name && /type="hidden"/i.test(input)) fields[name] = unescape(value ?? '');
  }
  return { action: unescape(form[1]), fields };
}

// ---------------------------------------------------------------- MCP session
async function connect(provider) {
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), { authProvider: provider, fetch: tracingFetch });
  const client = new Client({ name: 'shadowcat-oauth-client', version: '0.1.0' });
  await client.connect(transport);
  return { client, transport };
}

async function main() {
  if (!opts.url) throw new Error('--url is required');
  let session;
  if (opts.flow === 'client-credentials') {
    session = await connect(new ClientCredentials());
  } else if (opts.flow === 'authorization-code') {
    const provider = new AuthorizationCode();
    const firstTransport = new StreamableHTTPClientTransport(new URL(opts.url), { authProvider: provider, fetch: tracingFetch });
    try {
      await new Client({ name: 'shadowcat-oauth-client', version: '0.1.0' }).connect(firstTransport);
      throw new Error('the server did not ask for authorization');
    } catch (e) {
      if (!(e instanceof UnauthorizedError) || !provider.authorizationCode) throw e;
    }
    await firstTransport.finishAuth(provider.authorizationCode); // code -> tokens
    if (opts['break-access-token']) {
      // Make the server answer 401 so that the SDK uses its refresh token.
      if (!provider.stored.tokens?.refresh_token) throw new Error('no refresh token was issued');
      provider.stored.tokens = { ...provider.stored.tokens, access_token: 'broken' };
    }
    session = await connect(provider); // now with a bearer token
  } else {
    throw new Error(`unknown --flow ${opts.flow}`);
  }

  const { client, transport } = session;
  const tools = (await client.listTools()).tools.map((t) => t.name);
  let echo = null;
  if (tools.includes('echo')) {
    const result = await client.callTool({ name: 'echo', arguments: { message: opts.message } });
    echo = result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
  }
  const { sessionId } = transport;
  await transport.terminateSession(); // DELETE
  await client.close();
  return { ok: true, flow: opts.flow, tools, echo, sessionId: sessionId ?? null, discovered, grants };
}

main().then((report) => finish(report, 0), fail);
