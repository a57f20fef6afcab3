// The admin console in a real browser (Debian's chromium, driven by
// playwright-core): every page loads without a console error and without
// fetching anything from elsewhere, shows the members, an injected
// <script> model name as text, the same numbers with and without
// JavaScript; a drain clicked on the page shows in balancer-manager and
// in routing. Run by test/modules/test_console.py, which starts
// the gateway and says where things are in the environment:
//   LLMGW_URL     the gateway, http://127.0.0.1:PORT
//   LLMGW_ADMIN   the console's path (/llm-admin/)
//   LLMGW_MEMBER  the member to drain (its worker name)
//   LLMGW_MOCKS   the stats URLs of the two members' mocks, space-separated,
//                 the drained one's first
//   LLMGW_MODEL   a model the traffic may use; LLMGW_EVIL the injected name
//   LLMGW_SHOTS   where to write screenshots (unset: none)
//   CHROMIUM      the browser (default /usr/bin/chromium)
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { ADMIN, URL_, open, sharedBrowser } from "./lib.mjs";

const MEMBER = process.env.LLMGW_MEMBER;
const MOCKS = (process.env.LLMGW_MOCKS || "").split(" ");
const EVIL = process.env.LLMGW_EVIL;
const SHOTS = process.env.LLMGW_SHOTS;
const PAGES = ["", "backends", "routes", "keys", "cache"];

const shared = sharedBrowser();

// The page once the script has refreshed it from status.json.
async function refreshed(page) {
    await page.waitForResponse((r) => r.url().endsWith("/status.json"), {
        timeout: 10000,
    }).catch(() => {});
    await page.waitForLoadState("networkidle");
}

// The values the page shows for the model's paths (data-k), but the clock
// and the sliding last minute, which move by themselves.
async function values(page) {
    const all = await page.$$eval("[data-k]", (els) =>
        els.map((e) => [e.getAttribute("data-k"), e.textContent]));
    return Object.fromEntries(all.filter(([k]) =>
        k !== "time" && !k.startsWith("last_minute.")));
}

test("every page loads clean, in a narrow window too", async () => {
    for (const width of [1280, 420]) {
        const ctx = await shared.browser.newContext({
            viewport: { width, height: 900 },
        });
        for (const name of PAGES) {
            const { page, problems } = await open(ctx, name);
            await refreshed(page);
            assert.deepEqual(problems, [], `page "${name}" at ${width}px`);
            assert.equal(await page.locator("nav a").count(), PAGES.length);
            const wide = await page.evaluate(() =>
                document.documentElement.scrollWidth
                    - document.documentElement.clientWidth);
            assert.ok(wide <= 1, `page "${name}" scrolls sideways at ${width}px`);
            // The keys page's shot is console_keys.test.mjs's, with a key.
            if (SHOTS && width === 1280 && name !== "keys") {
                await page.screenshot({
                    path: path.join(SHOTS, `console-${name || "overview"}.png`),
                    fullPage: true,
                });
            }
            await page.close();
        }
        await ctx.close();
    }
});

test("an injected model name is text and runs nothing", async () => {
    const ctx = await shared.browser.newContext();
    const { page, problems } = await open(ctx, "");
    await refreshed(page);
    assert.deepEqual(problems, []);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    const cells = await page.$$eval("td", (tds) => tds.map((t) => t.textContent));
    assert.ok(cells.includes(EVIL), `no cell shows ${EVIL}`);
    const scripts = await page.$$eval("script", (s) => s.map((e) => e.src));
    assert.deepEqual(scripts, [URL_ + ADMIN + "assets/console.js"]);
    await ctx.close();
});

test("without JavaScript the pages show the same numbers", async () => {
    const js = await shared.browser.newContext();
    const plain = await shared.browser.newContext({ javaScriptEnabled: false });
    for (const name of PAGES) {
        const a = await open(js, name);
        await refreshed(a.page);
        const withJs = await values(a.page);
        const b = await open(plain, name);
        const without = await values(b.page);
        assert.ok(Object.keys(without).length > 0 || name === "keys", name);
        assert.deepEqual(withJs, without, `page "${name}"`);
    }
    await js.close();
    await plain.close();
});

async function generations(url) {
    return (await (await fetch(url)).json()).generations;
}

async function ask(n) {
    for (let i = 0; i < n; i++) {
        const r = await fetch(URL_ + "/v1/chat/completions", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({
                model: process.env.LLMGW_MODEL, temperature: 1, max_tokens: 2,
                messages: [{ role: "user", content: `browser ${i}` }],
            }),
        });
        assert.equal(r.status, 200);
    }
}

// balancer-manager's own page (in a page of its own: it is not ours to
// check): the member's row holds its status words.
async function managerRow(ctx) {
    const page = await ctx.newPage();
    await page.goto(URL_ + "/balancer-manager");
    const row = await page.locator("tr", { hasText: MEMBER }).first().innerText();
    await page.close();
    return row;
}

test("a drain clicked on the page is mod_proxy's and routes around", async () => {
    const ctx = await shared.browser.newContext();
    const { page, problems } = await open(ctx, "backends");
    const row = () => page.locator("tr", { hasText: MEMBER }).first();
    try {
        await Promise.all([
            page.waitForURL(URL_ + ADMIN + "backends"),
            row().getByRole("button", { name: "Drain" }).click(),
        ]);
        assert.match(await row().innerText(), /drained/);
        assert.match(await managerRow(ctx), /Drn/);
        const [a0, b0] = [await generations(MOCKS[0]), await generations(MOCKS[1])];
        await ask(4);
        assert.equal(await generations(MOCKS[0]), a0, "the drained member served");
        assert.equal(await generations(MOCKS[1]), b0 + 4);
    } finally {
        await page.goto(URL_ + ADMIN + "backends");
        await Promise.all([
            page.waitForURL(URL_ + ADMIN + "backends"),
            row().getByRole("button", { name: "Enable" }).click(),
        ]);
    }
    assert.doesNotMatch(await row().innerText(), /drained/);
    assert.doesNotMatch(await managerRow(ctx), /Drn/);
    assert.deepEqual(problems, []);
    await ctx.close();
});
