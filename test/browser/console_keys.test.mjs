// The console's Keys page in a real browser (Debian's chromium, driven by
// playwright-core): a key's budget shows as a bar with what the key used,
// and a Reset clicked on the page starts it afresh. Run by
// test/modules/test_console.py::test_keys_in_browser, which starts a
// gateway with the key and says where things are in the environment:
//   LLMGW_URL     the gateway, http://127.0.0.1:PORT
//   LLMGW_ADMIN   the console's path (/llm-admin/)
//   LLMGW_KEY     the key's name; LLMGW_USED what it used; LLMGW_LIMIT its
//                 budget
//   LLMGW_SHOTS   where to write the keys page's screenshot (unset: none)
//   CHROMIUM      the browser (default /usr/bin/chromium)
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { ADMIN, URL_, open, sharedBrowser } from "./lib.mjs";

const KEY = process.env.LLMGW_KEY;
const USED = Number(process.env.LLMGW_USED);
const LIMIT = Number(process.env.LLMGW_LIMIT);
const SHOTS = process.env.LLMGW_SHOTS;

const shared = sharedBrowser();

test("a key's budget shows what it used, and a reset starts it afresh", async () => {
    const ctx = await shared.browser.newContext();
    const { page, problems } = await open(ctx, "keys");
    // The script's first refresh from status.json done: leaving the page
    // with it in flight would abort it (a failed request).
    await page.waitForLoadState("networkidle");
    const row = () => page.locator("tr", { hasText: KEY }).first();
    const meter = row().locator("meter").first();
    assert.equal(Number(await meter.getAttribute("value")), USED);
    assert.equal(Number(await meter.getAttribute("max")), LIMIT);
    assert.match(await row().innerText(),
                 new RegExp(`${USED.toLocaleString("en-US")} used`));
    if (SHOTS) {
        await page.screenshot({ path: path.join(SHOTS, "console-keys.png"),
                                fullPage: true });
    }
    await Promise.all([
        page.waitForURL((u) => u.pathname.startsWith(ADMIN)),
        row().getByRole("button", { name: "Reset usage" }).click(),
    ]);
    await page.waitForLoadState("networkidle");
    await page.goto(URL_ + ADMIN + "keys", { waitUntil: "load" });
    assert.equal(Number(await meter.getAttribute("value")), 0);
    assert.deepEqual(problems, []);
    await ctx.close();
});
