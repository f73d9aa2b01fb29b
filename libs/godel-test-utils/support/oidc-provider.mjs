// A real OpenID provider for the SSO tests: npm `oidc-provider` (installed by
// scripts/oidc-provider.sh) on 127.0.0.1 at a free port, with one static
// confidential client, the development login form, and a `groups` claim.
//
//   node oidc-provider.mjs <provider-dir> <config.json>
//
// config.json: { client_id, client_secret, redirect_uris: [...], accounts_file,
//   token_endpoint_auth_method (client_secret_basic), claims_in_id_token (false:
//   the ID token carries only `sub`, the rest is at the userinfo endpoint),
//   id_token_alg (RS256; ES256 also has a key) }
// accounts_file (re-read at every sign-in, so a test can change someone's groups):
//   { "<login>": { "email": "...", "name": "...", "groups": ["..."] } }
// Prints one line `{"issuer":"http://127.0.0.1:<port>"}` once it is listening.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [providerDir, configPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const require = createRequire(`${providerDir}/package.json`);
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

const signing = (type, options, alg) => ({
  ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
  alg,
  use: 'sig',
  kid: `${alg.toLowerCase()}-${Date.now()}`,
});

let handler = (_req, res) => res.writeHead(503).end();
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: config.token_endpoint_auth_method ?? 'client_secret_basic',
    id_token_signed_response_alg: config.id_token_alg ?? 'RS256',
  }],
  jwks: {
    keys: [
      signing('rsa', { modulusLength: 2048 }, 'RS256'),
      signing('ec', { namedCurve: 'P-256' }, 'ES256'),
    ],
  },
  cookies: { keys: ['godel-test-cookie-key'] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  // true: the scopes' claims (email, name, groups) go in the ID token itself.
  conformIdTokenClaims: !config.claims_in_id_token,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  async findAccount(_ctx, id) {
    const accounts = JSON.parse(readFileSync(config.accounts_file, 'utf8'));
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: account.email,
          email_verified: true,
          name: account.name,
          groups: account.groups,
        };
      },
    };
  },
});
provider.proxy = false;
const callback = provider.callback();
handler = (req, res) => callback(req, res);
console.log(JSON.stringify({ issuer }));
