// What the console's browser tests share: the browser, and a page opened
// with what went wrong on it collected (console errors and warnings,
// uncaught exceptions, requests that failed or left the gateway).
import assert from "node:assert/strict";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

export const URL_ = process.env.LLMGW_URL;
export const ADMIN = process.env.LLMGW_ADMIN || "/llm-admin/";

// Debian's chromium (CHROMIUM, default /usr/bin/chromium), headless.
export function launch() {
    return chromium.launch({
        executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
        args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
}

// The browser of a test file: launched before its tests and closed after
// them; its tests read it as shared.browser.
export function sharedBrowser() {
    const shared = {};
    before(async () => {
        shared.browser = await launch();
    });
    after(async () => {
        await shared.browser?.close();
    });
    return shared;
}

// The console's page NAME in ctx, answered 200, and its problems so far.
export async function open(ctx, name) {
    const page = await ctx.newPage();
    const problems = [];
    page.on("console", (m) => {
        if (m.type() === "error" || m.type() === "warning") {
            problems.push(`console ${m.type()}: ${m.text()}`);
        }
    });
    page.on("pageerror", (e) => problems.push(`exception: ${e.message}`));
    page.on("requestfailed", (r) => problems.push(`failed: ${r.url()}`));
    page.on("request", (r) => {
        if (!r.url().startsWith(URL_)) {
            problems.push(`left the gateway: ${r.url()}`);
        }
    });
    const resp = await page.goto(URL_ + ADMIN + name, { waitUntil: "load" });
    assert.equal(resp.status(), 200, `${name}: ${resp.status()}`);
    return { page, problems };
}

// Clicks the button named NAME (its accessible name, exactly) and waits for
// the console's page DEST the action sends the browser back to. The
// script's refresh done first: leaving the page with it in flight would
// abort it (a failed request).
export async function post(page, name, dest) {
    await page.waitForLoadState("networkidle");
    await Promise.all([
        page.waitForURL(URL_ + ADMIN + dest),
        page.getByRole("button", { name, exact: true }).click(),
    ]);
    await page.waitForLoadState("networkidle");
}
