// A local OpenID Connect provider for authz's tests and `authz dev`, built on oidc-provider.
// Configured by one JSON document in the IDP_CONFIG environment variable, or in the file that
// IDP_CONFIG_FILE names (the compose stack's, which holds the client secret):
//   { "port": 0, "host": "127.0.0.1", "issuer": "http://localhost:PORT", "proxy": false,
//     "client_id": "...", "client_secret": "...", "redirect_uris": [...], "post_logout_redirect_uris": [...],
//     "ttl": { "AccessToken": 60, "IdToken": 60, "RefreshToken": 3600 } }
// `proxy: true` behind a TLS proxy (Envoy in compose.yaml): the scheme comes from X-Forwarded-Proto.
// Prints one line `{"ready": true, "port": N, "issuer": "..."}` on stdout once it listens.
// Users sign in on the development login form with their user name; any password is accepted.
import { readFileSync } from 'node:fs';
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const file = process.env.IDP_CONFIG_FILE;
const settings = JSON.parse(file ? readFileSync(file, 'utf8') : (process.env.IDP_CONFIG || '{}'));
const port = Number(settings.port ?? 0);

const USERS = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Example', groups: ['engineering', 'admins'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob Builder', groups: ['sales'] },
  mallory: { email: 'mallory@evil.test', email_verified: true, name: 'Mallory', groups: [] },
  // Hostile identities for the hardening tests: emails the IdP does not vouch for or that are not
  // one address, group names an upstream could misread, and more groups than headers can carry.
  eve: { email: 'alice@example.com', email_verified: false, name: 'Eve', groups: ['sales'] },
  trent: { email: 'trent@example.com', email_verified: 'false', name: 'Trent', groups: [] },
  trudy: { email: 'trudy@evil.example@example.com', email_verified: true, name: 'Trudy', groups: [] },
  grace: {
    email: 'grace@example.com', email_verified: true, name: 'Grace',
    groups: ['x,admins', 'ops', 'line\nbreak', 'nul\u0000', 'lone\uD800', 'dev'],
  },
  many: {
    email: 'many@example.com', email_verified: true, name: 'Many Groups',
    groups: Array.from({ length: 1500 }, (_, i) => `group-${String(i).padStart(4, '0')}-of-a-large-directory`),
  },
};

async function findAccount(ctx, id) {
  const user = USERS[id];
  if (!user) return undefined;
  return { accountId: id, async claims() { return { sub: id, ...user }; } };
}

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await exportJWK(privateKey)), kid: 'dev-rs256', alg: 'RS256', use: 'sig' };
const ttl = { AccessToken: 60, IdToken: 60, RefreshToken: 3600, Session: 3600, Grant: 3600, Interaction: 600, ...settings.ttl };

const configuration = {
  clients: [{
    client_id: settings.client_id || 'authz',
    client_secret: settings.client_secret || 'authz-dev-secret',
    redirect_uris: settings.redirect_uris || [],
    post_logout_redirect_uris: settings.post_logout_redirect_uris || [],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  findAccount,
  jwks: { keys: [signingKey] },
  cookies: { keys: [settings.cookie_key || 'authz-dev-idp-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Submit the confirmation form at once (a button remains for clients without JavaScript).
      async logoutSource(ctx, form) {
        ctx.body = `<!doctype html><html><head><title>Signing out</title></head><body>${form}
<button autofocus type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<script>var f=document.getElementById('op.logoutForm');var i=document.createElement('input');
i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();</script></body></html>`;
      },
    },
  },
  pkce: { required: () => true },
  // Refresh tokens whenever the client may use them, not only with offline_access + consent.
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  // Pretend every user already consented to the client, so the flow is login form -> back to app.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile offline_access');
    grant.addOIDCClaims(['sub', 'email', 'email_verified', 'name', 'groups']);
    await grant.save();
    return grant;
  },
  rotateRefreshToken: true,
  ttl,
};

const issuer = settings.issuer || `http://localhost:${port}`;
const provider = new Provider(issuer, configuration);
provider.proxy = Boolean(settings.proxy);
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// The login form names the demo accounts (those `authz dev` prints), so nobody has to guess them.
const DEMO = '<p class="demo-accounts">Demo accounts (any password): <b>alice</b> (example.com, admins), '
  + '<b>bob</b> (example.com), <b>mallory</b> (signs in, denied: not example.com).</p>';
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path.startsWith('/interaction/') && typeof ctx.body === 'string' && ctx.body.includes('</form>')) {
    ctx.body = ctx.body.replace('</form>', `</form>${DEMO}`);
  }
});

const server = provider.listen(port, settings.host || '127.0.0.1', () => {
  const actual = server.address().port;
  console.log(JSON.stringify({ ready: true, port: actual, issuer }));
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
