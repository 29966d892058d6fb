// The console end to end in headless Chromium: SSO through a real OpenID provider,
// the tunnel lifecycle (create, reveal, rotate, certificates by file and by paste, a
// private key refused, revoke, archive), the audit log, a read-only developer, and SSO
// made mandatory. Runs against the real binary; see lib/harness.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  init, startApi, startIdp, launchBrowser, opensslCa, ssoLogin, passwordLogin, csrfOf,
  cli, tempDir, screenshot,
} from "./lib/harness.mjs";

const ADMIN = "alice@example.com";
const DEV = "dave@example.com";
let dir, env, api, idp, chrome, adminPage, tunnelUrl, tunnelDomain, logFile;

before(async () => {
  dir = tempDir("console");
  env = init(dir);
  idp = await startIdp();
  logFile = join(dir, "api.log");
  api = await startApi(env.data, [], logFile);
  env.api = api.url;
  idp.register(`${api.url}/console/sso/callback`);
  chrome = await launchBrowser();
});

after(async () => {
  await chrome?.close();
  await api?.stop();
  await idp?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the bootstrap admin signs in with the password and configures SSO", async () => {
  const ctx = await chrome.newContext();
  const page = await ctx.newPage();
  await page.goto(`${api.url}/console/tunnels`);
  assert.match(page.url(), /\/console\/login$/, "unauthenticated pages send you to sign in");
  await screenshot(page, "console-login-password");
  await passwordLogin(page, api.url, "admin", env.password);
  await page.getByRole("link", { name: "Users" }).click();
  await page.getByLabel("E-mail address").fill(ADMIN);
  await page.getByLabel("Role", { exact: true }).selectOption("admin");
  await page.getByRole("button", { name: "Add user" }).click();
  await assert.doesNotReject(page.getByRole("cell", { name: ADMIN, exact: true }).waitFor());

  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByLabel("Issuer URL").fill(idp.issuer);
  await page.getByLabel("Client ID").fill(idp.client.client_id);
  await page.getByLabel(/^Client secret/).fill(idp.client.client_secret);
  await page.getByLabel(/Allowed e-mail domains/).fill("example.com");
  await page.getByLabel(/Role of unknown users/).selectOption("developer");
  await page.getByRole("button", { name: "Save SSO settings" }).click();
  assert.match(await page.locator("#sso-state").innerText(), /configured, optional/);
  // The secret never comes back to the browser.
  assert.equal(await page.getByLabel(/^Client secret/).inputValue(), "");
  assert.ok(!(await page.content()).includes(idp.client.client_secret));

  // `doctor` reads the same settings through the API.
  const org = JSON.parse(cli(env, ["admin", "--api-key-file", env.keyFile, "--json", "organization", "show"]));
  assert.equal(org.sso_configured, true);
  assert.equal(org.sso_required, false);
  assert.equal(org.sso.issuer, idp.issuer);
  await ctx.close();
});

test("an admin signs in through SSO and creates a tunnel", async () => {
  const ctx = await chrome.newContext();
  adminPage = await ctx.newPage();
  await ssoLogin(adminPage, api.url, ADMIN);
  await adminPage.getByRole("main").waitFor();
  assert.match(await adminPage.locator(".who").innerText(), /alice@example\.com\s+admin/);
  await adminPage.getByLabel("New tunnel name").fill("payments-mcp");
  await adminPage.getByRole("button", { name: "Create tunnel" }).click();
  await adminPage.waitForURL(/\/console\/tunnels\/tnl_[A-Za-z0-9]+\?notice=created$/);
  tunnelUrl = adminPage.url().replace(/\?.*$/, "");
  tunnelDomain = await adminPage.locator("#domain").innerText();
  assert.match(tunnelDomain, /^[a-z0-9]{8}\.tunnels\.test$/);
  assert.match(await adminPage.locator("#slots").innerText(), /0 of 2/);
  assert.equal(await adminPage.locator("#connections").innerText(), "0");
  await adminPage.goto(`${api.url}/console/tunnels?filter=needs_certificate`);
  await assert.doesNotReject(adminPage.getByRole("link", { name: "payments-mcp" }).waitFor());
  await adminPage.goto(`${api.url}/console/tunnels?filter=active`);
  assert.equal(await adminPage.getByRole("link", { name: "payments-mcp" }).count(), 0);
});

test("reveal shows the token once, by POST, with a copy button; rotate changes it", async () => {
  await adminPage.goto(tunnelUrl);
  await adminPage.getByRole("button", { name: "Reveal token" }).click();
  const first = await adminPage.locator("#token").inputValue();
  assert.match(first, /^eyJ/);
  assert.ok(!adminPage.url().includes(first), "the token is not in the URL");
  await adminPage.context().grantPermissions(["clipboard-read", "clipboard-write"]);
  await adminPage.getByRole("button", { name: "Copy" }).click();
  await assert.doesNotReject(adminPage.getByText("Copied to the clipboard.").waitFor());
  assert.equal(await adminPage.evaluate(() => navigator.clipboard.readText()), first);

  await adminPage.goto(tunnelUrl);
  assert.equal(await adminPage.locator("#token").count(), 0, "not shown again without a reveal");
  await adminPage.getByLabel("Reason for rotation").fill("browser test rotation");
  await adminPage.getByRole("button", { name: "Rotate token" }).click();
  const second = await adminPage.locator("#token").inputValue();
  assert.match(second, /^eyJ/);
  assert.notEqual(second, first);
  const log = api.log();
  assert.ok(!log.includes(first) && !log.includes(second), "no token in the API's log");
});

test("certificates: add by file and by paste, slots, private key refused, revoke", async () => {
  const a = opensslCa(dir, "Browser File CA");
  const b = opensslCa(dir, "Browser Paste CA");
  await adminPage.goto(tunnelUrl);
  await adminPage.getByLabel("Certificate file").setInputFiles(a.pem);
  await adminPage.getByRole("button", { name: "Add certificate" }).click();
  await adminPage.waitForURL(/notice=certificate_added/);
  assert.match(await adminPage.locator("#slots").innerText(), /1 of 2/);
  await assert.doesNotReject(adminPage.getByRole("cell", { name: a.fingerprint }).waitFor());

  await adminPage.getByLabel("Or paste the PEM").fill(b.pemText);
  await adminPage.getByRole("button", { name: "Add certificate" }).click();
  await adminPage.waitForURL(/notice=certificate_added/);
  assert.match(await adminPage.locator("#slots").innerText(), /2 of 2/);
  await assert.doesNotReject(adminPage.getByRole("cell", { name: b.fingerprint }).waitFor());
  await screenshot(adminPage, "console-tunnel-detail");

  // A private key is refused with the validator's own message, by paste and by file.
  await adminPage.getByLabel("Or paste the PEM").fill(a.pemText + readFileSync(a.key, "utf8"));
  await adminPage.getByRole("button", { name: "Add certificate" }).click();
  const alert = adminPage.getByRole("alert");
  assert.match(await alert.innerText(),
    /CA certificate PEM must not contain a private key \(found a "PRIVATE KEY" block\): register only the certificate and keep the key secret/);
  await adminPage.getByLabel("Certificate file").setInputFiles(a.key);
  await adminPage.getByRole("button", { name: "Add certificate" }).click();
  assert.match(await adminPage.getByRole("alert").innerText(), /must not contain a private key/);

  // Too large, and not a certificate at all: the validator's messages too.
  const big = join(dir, "big.pem");
  writeFileSync(big, a.pemText + "\n".repeat(9000));
  await adminPage.getByLabel("Certificate file").setInputFiles(big);
  await adminPage.getByRole("button", { name: "Add certificate" }).click();
  assert.match(await adminPage.getByRole("alert").innerText(),
    /CA certificate PEM must be at most 8192 bytes \(got \d+ bytes\)/);
  await adminPage.getByLabel("Or paste the PEM").fill("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
  await adminPage.getByRole("button", { name: "Add certificate" }).click();
  assert.match(await adminPage.getByRole("alert").innerText(),
    /CA certificate PEM must contain only a CERTIFICATE block \(found a "PUBLIC KEY" block\)/);

  await adminPage.goto(tunnelUrl);
  const row = adminPage.getByRole("row").filter({ hasText: a.fingerprint });
  await row.getByRole("button", { name: "Revoke" }).click();
  await adminPage.waitForURL(/notice=certificate_revoked/);
  assert.match(await adminPage.locator("#slots").innerText(), /1 of 2/);
  assert.match(await adminPage.getByRole("row").filter({ hasText: a.fingerprint }).innerText(), /Revoked/);
  await adminPage.goto(`${api.url}/console/tunnels?filter=active`);
  await assert.doesNotReject(adminPage.getByRole("link", { name: "payments-mcp" }).waitFor());
  await screenshot(adminPage, "console-tunnels");
});

test("archive asks for confirmation, then retires the tunnel", async () => {
  await adminPage.goto(tunnelUrl);
  await adminPage.getByRole("link", { name: "Archive tunnel…" }).click();
  const dialog = adminPage.getByRole("alertdialog");
  assert.match(await dialog.innerText(), new RegExp(`domain ${tunnelDomain.replace(/\./g, "\\.")} is retired`));
  await adminPage.getByRole("link", { name: "Cancel" }).click();
  assert.equal(adminPage.url(), tunnelUrl);
  await adminPage.getByRole("link", { name: "Archive tunnel…" }).click();
  await adminPage.getByRole("button", { name: "Yes, archive this tunnel" }).click();
  await adminPage.waitForURL(/notice=archived/);
  assert.match(await adminPage.getByRole("main").innerText(), /Archived/);
  assert.equal(await adminPage.getByRole("button", { name: "Reveal token" }).count(), 0);
  await adminPage.goto(`${api.url}/console/tunnels?filter=archived`);
  await assert.doesNotReject(adminPage.getByRole("link", { name: "payments-mcp" }).waitFor());
});

test("every action is in the audit log, with the console user as actor", async () => {
  await adminPage.goto(`${api.url}/console/audit?actor=${encodeURIComponent(ADMIN)}`);
  const text = await adminPage.getByRole("table").innerText();
  for (const action of [
    "console.login", "tunnel.create", "tunnel.reveal_token", "tunnel.rotate_token",
    "certificate.create", "certificate.archive", "tunnel.archive",
  ]) {
    assert.ok(text.includes(action), `audit log lacks ${action}`);
  }
  assert.ok(text.includes("browser test rotation"), "the rotation reason is recorded");
  assert.match(await adminPage.getByRole("status").first().innerText(), /Hash chain verified/);
  await screenshot(adminPage, "console-audit");
  // The filter narrows: only certificate events.
  await adminPage.getByLabel("Action").selectOption("certificate.");
  await adminPage.getByRole("button", { name: "Filter" }).click();
  const rows = await adminPage.locator("tbody tr").allInnerTexts();
  assert.equal(rows.length, 3, "two certificates added, one revoked");
  assert.ok(rows.every((r) => r.includes("certificate.")));
});

test("identities: service account, federation issuer and rule, API and client keys", async () => {
  await adminPage.goto(`${api.url}/console/service-accounts`);
  await adminPage.getByLabel("New service account").fill("ci-deployer");
  await adminPage.getByRole("button", { name: "Create" }).click();
  await assert.doesNotReject(adminPage.getByRole("cell", { name: "ci-deployer", exact: true }).waitFor());

  await adminPage.getByRole("link", { name: "Federation" }).click();
  await adminPage.getByLabel("Name", { exact: true }).fill("GitHub Actions");
  await adminPage.getByLabel(/^Issuer URL/).fill("https://token.actions.githubusercontent.com");
  await adminPage.getByLabel("JWKS URL").fill("https://token.actions.githubusercontent.com/.well-known/jwks");
  await adminPage.getByRole("button", { name: "Add issuer" }).click();
  await assert.doesNotReject(adminPage.getByRole("cell", { name: "GitHub Actions" }).waitFor());
  await adminPage.getByLabel(/^Subject/).fill("repo:acme/payments:ref:refs/heads/main");
  await adminPage.getByLabel(/^Audience/).fill("https://api.tunnels.test");
  await adminPage.getByRole("button", { name: "Add rule" }).click();
  const rule = adminPage.getByRole("row").filter({ hasText: "repo:acme/payments" });
  assert.match(await rule.innerText(), /workspace:manage_tunnels[\s\S]*3600s[\s\S]*Active/);
  await rule.getByRole("button", { name: "Archive" }).click();
  assert.match(await adminPage.getByRole("row").filter({ hasText: "repo:acme/payments" }).innerText(), /Archived/);
  await screenshot(adminPage, "console-federation");

  await adminPage.getByRole("link", { name: "API & client keys" }).click();
  await adminPage.getByLabel("Name").first().fill("terraform");
  await adminPage.getByLabel("Role").selectOption("tunnels");
  await adminPage.getByRole("button", { name: "Create API key" }).click();
  const apiKey = await adminPage.locator("#newkey").inputValue();
  assert.match(apiKey, /^mtk_/);
  await adminPage.getByLabel("Name").nth(1).fill("agent-runtime");
  await adminPage.getByRole("button", { name: "Create client key" }).click();
  const clientKey = await adminPage.locator("#newkey").inputValue();
  assert.match(clientKey, /^mtck_/);
  assert.ok(!(await adminPage.content()).includes(apiKey), "a key is shown only once");
  const row = adminPage.getByRole("row").filter({ hasText: "agent-runtime" });
  assert.match(await row.innerText(), /workspace:use_tunnels/);
  await row.getByRole("button", { name: "Revoke" }).click();
  assert.match(await adminPage.getByRole("row").filter({ hasText: "agent-runtime" }).innerText(), /Revoked/);
  assert.ok(!api.log().includes(apiKey) && !api.log().includes(clientKey), "no key in the log");
  await adminPage.goto(`${api.url}/console/audit?actor=${encodeURIComponent(ADMIN)}`);
  const text = await adminPage.getByRole("table").innerText();
  for (const action of ["service_account.create", "federation_issuer.create", "federation_rule.create",
    "federation_rule.archive", "api_key.create", "client_key.create", "client_key.revoke"]) {
    assert.ok(text.includes(action), `audit log lacks ${action}`);
  }
});

test("every page has landmarks, one h1, and a label for every control", async () => {
  const pages = ["/console/tunnels", "/console/tunnels?filter=all", tunnelUrl.replace(api.url, ""),
    "/console/federation", "/console/service-accounts", "/console/keys", "/console/users",
    "/console/settings", "/console/audit"];
  for (const path of pages) {
    await adminPage.goto(`${api.url}${path}`);
    assert.equal(await adminPage.getByRole("main").count(), 1, `${path}: one main`);
    assert.equal(await adminPage.getByRole("navigation", { name: "Main" }).count(), 1, `${path}: nav`);
    assert.equal(await adminPage.locator("h1").count(), 1, `${path}: one h1`);
    const unlabelled = await adminPage.locator("input:not([type=hidden]), select, textarea").evaluateAll(
      (els) => els.filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label")).map((e) => e.outerHTML));
    assert.deepEqual(unlabelled, [], `${path}: controls without a label`);
    const namelessButtons = await adminPage.locator("button").evaluateAll(
      (els) => els.filter((e) => !e.textContent.trim()).length);
    assert.equal(namelessButtons, 0, `${path}: buttons without a name`);
  }
});

test("a developer sees everything read-only and every change is refused", async () => {
  const ctx = await chrome.newContext();
  const page = await ctx.newPage();
  await ssoLogin(page, api.url, DEV);
  assert.match(await page.locator(".who").innerText(), /developer[\s\S]*read-only/);
  await page.goto(`${api.url}/console/tunnels?filter=all`);
  assert.equal(await page.getByRole("button", { name: "Create tunnel" }).count(), 0);
  await page.getByRole("link", { name: "payments-mcp" }).click();
  assert.equal(await page.locator("main form").count(), 0, "no forms for a developer");
  for (const path of ["/console/keys", "/console/federation", "/console/users", "/console/service-accounts"]) {
    await page.goto(`${api.url}${path}`);
    assert.equal(await page.locator("main form[method=post]").count(), 0, `no forms on ${path}`);
  }
  await page.goto(`${api.url}/console/audit`);
  assert.ok((await page.getByRole("table").innerText()).includes("tunnel.create"));
  await screenshot(page, "console-developer");

  // Forged POSTs with the developer's own valid CSRF token: 403 from the server.
  const csrf = await csrfOf(page);
  for (const path of ["/console/tunnels", "/console/users", "/console/settings/sso-required", "/console/keys/api"]) {
    const r = await page.request.post(`${api.url}${path}`, {
      form: { csrf, display_name: "x", login: "x@example.com", role: "owner", sso_required: "true", name: "k" },
      headers: { Origin: api.url },
      maxRedirects: 0,
    });
    assert.equal(r.status(), 403, `${path} must refuse a developer`);
    assert.match(await r.text(), /can view but not change anything/);
  }
  await ctx.close();
});

test("with SSO required the password form is gone and refused", async () => {
  await adminPage.goto(`${api.url}/console/settings`);
  await adminPage.getByLabel("Require single sign-on for this organization").check();
  await adminPage.getByRole("button", { name: "Save", exact: true }).click();
  assert.match(await adminPage.locator("#sso-state").innerText(), /required/);
  const org = JSON.parse(cli(env, ["admin", "--api-key-file", env.keyFile, "--json", "organization", "show"]));
  assert.equal(org.sso_required, true);

  const ctx = await chrome.newContext();
  const page = await ctx.newPage();
  await page.goto(`${api.url}/console/login`);
  assert.equal(await page.locator("#password").count(), 0);
  assert.match(await page.locator("#password-off").innerText(), /Password sign-in is turned off/);
  await screenshot(page, "console-login");
  // Posting the password form anyway (with a valid pre-sign-in token) is refused.
  const pre = await page.locator('input[name="csrf"]').first().inputValue();
  const r = await page.request.post(`${api.url}/console/login`, {
    form: { csrf: pre, login: "admin", password: env.password },
    headers: { Origin: api.url },
    maxRedirects: 0,
  });
  assert.equal(r.status(), 403);
  assert.match(await r.text(), /requires single sign-on/);
  // SSO still works.
  await ssoLogin(page, api.url, ADMIN);
  await ctx.close();
  assert.ok(!api.log().includes(env.password), "no password in the API's log");
});
