// Sessions and forms in Chromium: cookie attributes, CSRF and same-origin refusals, no
// state change on GET, the idle timeout, and logout ending the session on the server.
// Password sign-in of the bootstrap admin (no identity provider needed here).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { init, startApi, launchBrowser, passwordLogin, csrfOf, tempDir } from "./lib/harness.mjs";

const IDLE_SECONDS = 3;
let dir, env, api, chrome, ctx, page;

before(async () => {
  dir = tempDir("session");
  env = init(dir);
  api = await startApi(env.data, ["--console-idle-timeout", `${IDLE_SECONDS}s`]);
  chrome = await launchBrowser();
  ctx = await chrome.newContext();
  page = await ctx.newPage();
});

after(async () => {
  await chrome?.close();
  await api?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a wrong password is refused and opens no session", async () => {
  await page.goto(`${api.url}/console/login`);
  await page.locator("#login").fill("admin");
  await page.locator("#password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  assert.match(await page.getByRole("alert").innerText(), /Wrong login or password/);
  const names = (await ctx.cookies()).map((c) => c.name);
  assert.ok(!names.includes("__Host-mcpt_session"));
});

test("the session cookie is __Host-, Secure, HttpOnly, SameSite=Lax, and holds no user data", async () => {
  await passwordLogin(page, api.url, "admin", env.password);
  const cookie = (await ctx.cookies()).find((c) => c.name === "__Host-mcpt_session");
  assert.ok(cookie, "session cookie set");
  assert.equal(cookie.secure, true);
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Lax");
  assert.equal(cookie.path, "/");
  assert.equal(cookie.domain, "127.0.0.1", "host-only (no Domain attribute)");
  assert.match(cookie.value, /^[A-Za-z0-9_-]{43}$/, "an opaque random id");
  assert.equal(await page.evaluate(() => document.cookie), "", "invisible to scripts");
  const resp = await page.goto(`${api.url}/console/tunnels`);
  const h = resp.headers();
  assert.match(h["content-security-policy"], /default-src 'none'/);
  assert.match(h["content-security-policy"], /frame-ancestors 'none'/);
  assert.equal(h["cache-control"], "no-store");
  assert.equal(h["x-frame-options"], "DENY");
});

test("a POST without the CSRF token, or with another session's, is refused", async () => {
  const before = await page.locator("tbody tr").count();
  for (const csrf of [undefined, "forged-token", "A".repeat(43)]) {
    const r = await page.request.post(`${api.url}/console/tunnels`, {
      form: csrf === undefined ? { display_name: "csrf" } : { csrf, display_name: "csrf" },
      headers: { Origin: api.url },
      maxRedirects: 0,
    });
    assert.equal(r.status(), 403);
    assert.match(await r.text(), /CSRF token is missing or does not match/);
  }
  await page.goto(`${api.url}/console/tunnels?filter=all`);
  assert.equal(await page.locator("tbody tr").count(), before, "nothing was created");
});

test("a cross-origin POST is refused even with a valid token", async () => {
  const csrf = await csrfOf(page);
  const r = await page.request.post(`${api.url}/console/tunnels`, {
    form: { csrf, display_name: "evil" },
    headers: { Origin: "https://evil.example" },
    maxRedirects: 0,
  });
  assert.equal(r.status(), 403);
  assert.match(await r.text(), /cross-origin request refused/);
  const ok = await page.request.post(`${api.url}/console/tunnels`, {
    form: { csrf, display_name: "same-origin" },
    headers: { Origin: api.url },
    maxRedirects: 0,
  });
  assert.equal(ok.status(), 303, "the same form from our origin works");
});

test("state-changing endpoints refuse GET", async () => {
  await page.goto(`${api.url}/console/tunnels?filter=all`);
  const href = await page.getByRole("link", { name: "same-origin" }).getAttribute("href");
  for (const suffix of ["/reveal", "/rotate", "/certificates"]) {
    const r = await page.request.get(`${api.url}${href}${suffix}`, { maxRedirects: 0 });
    assert.equal(r.status(), 405, `GET ${suffix}`);
  }
  // The archive link shows a confirmation page; only its POST archives.
  const r = await page.request.get(`${api.url}${href}/archive`);
  assert.equal(r.status(), 200);
  await page.goto(`${api.url}${href}`);
  assert.match(await page.getByRole("main").innerText(), /Needs certificate/);
});

test("logout ends the session on the server, not only in the browser", async () => {
  const old = (await ctx.cookies()).find((c) => c.name === "__Host-mcpt_session").value;
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${api.url}/console/login`);
  const other = await chrome.newContext();
  await other.addCookies([{ name: "__Host-mcpt_session", value: old, url: api.url, secure: true, httpOnly: true, sameSite: "Lax" }]);
  const p = await other.newPage();
  await p.goto(`${api.url}/console/tunnels`);
  assert.match(p.url(), /\/console\/login$/, "the old session id no longer works");
  await other.close();
});

test("activity keeps a session alive; it ends after the idle timeout", async () => {
  await passwordLogin(page, api.url, "admin", env.password);
  // Requests every second for longer than the idle timeout: still signed in.
  for (let i = 0; i < IDLE_SECONDS + 2; i++) {
    await page.waitForTimeout(1000);
    await page.goto(`${api.url}/console/audit`);
    assert.match(page.url(), /\/console\/audit$/, `still signed in after ${i + 1}s of activity`);
  }
  await page.waitForTimeout((IDLE_SECONDS + 1.5) * 1000);
  await page.goto(`${api.url}/console/audit`);
  assert.match(page.url(), /\/console\/login$/, "idle session expired");
  const audit = await page.request.get(`${api.url}/console/audit`, { maxRedirects: 0 });
  assert.equal(audit.status(), 303);
});
