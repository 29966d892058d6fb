// Test harness for the console: the real `mcp-tunnel` binary (server init + api over
// HTTPS on loopback), a real OpenID provider (npm oidc-provider) on loopback, and
// Debian's Chromium driven by playwright-core. Ports are ephemeral; every run gets
// fresh temporary directories.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Provider from "oidc-provider";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../../..");
export const BIN = process.env.MCP_TUNNEL_BIN || join(repo, "target/debug/mcp-tunnel");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), `mcpt-${prefix}-`));
}

/** `mcp-tunnel server init` into a fresh directory; returns paths and the secrets' files. */
export function init(dir) {
  const data = join(dir, "data");
  const out = execFileSync(BIN, [
    "server", "init", "--data-dir", data, "--base-domain", "tunnels.test",
    "--edge-address", "127.0.0.1:7844",
    "--admin-key-file", join(dir, "admin.key"),
    "--admin-password-file", join(dir, "admin.password"),
  ], { encoding: "utf8" });
  return {
    data,
    out,
    keyFile: join(dir, "admin.key"),
    password: readFileSync(join(dir, "admin.password"), "utf8").trim(),
    caFile: join(data, "edge-ca.pem"),
  };
}

/** Starts `mcp-tunnel api` on an ephemeral loopback port; resolves once it listens. */
export async function startApi(data, extraArgs = [], logFile) {
  const child = spawn(BIN, ["api", "--data-dir", data, "--listen", "127.0.0.1:0", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const collect = (b) => {
    log += b.toString();
    if (logFile) writeFileSync(logFile, log);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`api did not start:\n${log}`)), 20000);
    const look = () => {
      const m = log.match(/"message":"api listening","addr":"([^"]+)"/);
      if (m) {
        clearTimeout(timer);
        ok(`https://${m[1]}`);
      }
    };
    child.stdout.on("data", look);
    child.on("exit", (code) => fail(new Error(`api exited with ${code}:\n${log}`)));
  });
  return { url, child, log: () => log, stop: () => stopChild(child) };
}

export function stopChild(child) {
  return new Promise((ok) => {
    if (child.exitCode !== null) return ok();
    child.on("exit", () => ok());
    child.kill("SIGTERM");
  });
}

/** Runs the CLI with the admin key against `api`; returns stdout. */
export function cli(env, args) {
  return execFileSync(BIN, args, {
    encoding: "utf8",
    env: { ...process.env, MCP_TUNNEL_API_URL: env.api, MCP_TUNNEL_CA_FILE: env.caFile },
  });
}

/**
 * A real OpenID provider on loopback. Any login is accepted at its sign-in page (the
 * provider's development interactions) and becomes `sub` and `email`; consent is
 * granted automatically. `register(redirectUri)` adds the console as a confidential
 * client (PKCE required), once the console's port is known.
 */
export async function startIdp() {
  const server = createServer();
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const client = { client_id: "mcp-tunnel-console", client_secret: "idp-client-secret-for-tests-only" };
  let provider;
  server.on("request", (req, res) => {
    if (!provider) {
      res.statusCode = 503;
      return res.end();
    }
    provider.callback()(req, res);
  });
  const register = (redirectUri) => {
    provider = new Provider(issuer, {
      clients: [{
        ...client,
        redirect_uris: [redirectUri],
        response_types: ["code"],
        grant_types: ["authorization_code"],
        token_endpoint_auth_method: "client_secret_basic",
      }],
      pkce: { required: () => true },
      scopes: ["openid", "email", "profile"],
      claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
      // The console reads email from the ID token itself.
      conformIdTokenClaims: false,
      findAccount: async (_ctx, sub) => ({
        accountId: sub,
        claims: async () => ({ sub, email: sub, email_verified: true, name: sub }),
      }),
      loadExistingGrant: async (ctx) => {
        const id = ctx.oidc.result?.consent?.grantId
          || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
        if (id) return ctx.oidc.provider.Grant.find(id);
        const grant = new ctx.oidc.provider.Grant({
          clientId: ctx.oidc.client.clientId,
          accountId: ctx.oidc.session.accountId,
        });
        grant.addOIDCScope("openid email profile");
        await grant.save();
        return grant;
      },
      cookies: { keys: ["test-only-cookie-signing-key"] },
      features: { devInteractions: { enabled: true } },
    });
    provider.on("server_error", (_ctx, err) => console.error("idp error", err));
  };
  return { issuer, client, register, stop: () => new Promise((ok) => server.close(ok)) };
}

export async function launchBrowser() {
  // playwright-core gives every launch a fresh temporary --user-data-dir itself (and
  // refuses one in args); each test context then has its own cookie jar.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  return {
    browser,
    // The API's certificate is issued by the data directory's own CA.
    newContext: () => browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } }),
    close: () => browser.close(),
  };
}

/** A CA certificate and its key made with the openssl CLI (the documented recipe). */
export function opensslCa(dir, name) {
  const key = join(dir, `${name}.key`);
  const pem = join(dir, `${name}.pem`);
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", pem, "-days", "30", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-addext", "subjectKeyIdentifier=hash",
  ], { stdio: "ignore" });
  const der = execFileSync("openssl", ["x509", "-in", pem, "-outform", "DER"]);
  const fingerprint = execFileSync("openssl", ["dgst", "-sha256", "-r"], { input: der, encoding: "utf8" })
    .split(" ")[0];
  return { key, pem, pemText: readFileSync(pem, "utf8"), fingerprint };
}

/** Signs in through the OpenID provider as `email`. */
export async function ssoLogin(page, base, email) {
  await page.goto(`${base}/console/login`);
  await page.getByRole("button", { name: "Sign in with SSO" }).click();
  await page.locator('input[name="login"]').fill(email);
  await page.locator('input[name="password"]').fill("any-password");
  await Promise.all([
    page.waitForURL(`${base}/console/tunnels`),
    page.locator('button[type="submit"]').click(),
  ]);
}

export async function passwordLogin(page, base, login, password) {
  await page.goto(`${base}/console/login`);
  await page.locator("#login").fill(login);
  await page.locator("#password").fill(password);
  await Promise.all([
    page.waitForURL(`${base}/console/tunnels`),
    page.getByRole("button", { name: "Sign in", exact: true }).click(),
  ]);
}

/** The CSRF token of the signed-in page (every page's sign-out form carries it). */
export async function csrfOf(page) {
  return page.locator('form[action="/console/logout"] input[name="csrf"]').inputValue();
}

export const SCREENSHOTS = process.env.MCP_TUNNEL_SCREENSHOTS;
export async function screenshot(page, name) {
  if (SCREENSHOTS) await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}
