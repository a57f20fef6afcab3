// The console's forms for run-time changes in a real browser (Debian's
// chromium, driven by playwright-core): a model name typed into a route's
// form and added, shown marked and in /v1/models, then taken out with its
// Remove button; a route added on a balancer picked from the list, then
// taken out; no console error on the way. Run by
// test/modules/test_console_manage.py::test_forms_in_browser, which starts
// a gateway with an LLMManageFile and says where things are:
//   LLMGW_URL       the gateway, http://127.0.0.1:PORT
//   LLMGW_ADMIN     the console's path (/llm-admin/)
//   LLMGW_ROUTE     a route of httpd.conf to add a name to
//   LLMGW_BALANCER  a balancer of httpd.conf to add a route on
//   LLMGW_SHOTS     where to write the screenshot (unset: none)
//   CHROMIUM        the browser (default /usr/bin/chromium)
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { URL_, open, post, sharedBrowser } from "./lib.mjs";

const ROUTE = process.env.LLMGW_ROUTE;
const BALANCER = process.env.LLMGW_BALANCER;
const SHOTS = process.env.LLMGW_SHOTS;

const shared = sharedBrowser();

async function models() {
    const r = await fetch(URL_ + "/v1/models");
    assert.equal(r.status, 200);
    return (await r.json()).data.map((m) => m.id);
}

test("a name added and taken out through the routes page", async () => {
    const ctx = await shared.browser.newContext();
    const { page, problems } = await open(ctx, "routes");
    const row = page.locator("tr", { hasText: ROUTE }).first();
    await row.getByLabel("Model name or alias").fill("browser-alias");
    await post(page, `Add a name to ${ROUTE}`, "routes");
    const item = page.locator("li", { hasText: "browser-alias" });
    assert.match(await item.innerText(), /run-time/);
    assert.ok((await models()).includes("browser-alias"));
    assert.equal(await page.getByRole("link",
        { name: "Lines to paste into httpd.conf" }).count(), 1);
    await post(page, `Remove browser-alias from ${ROUTE}`, "routes");
    assert.equal(await item.count(), 0);
    assert.ok(!(await models()).includes("browser-alias"));
    assert.deepEqual(problems, []);
    await ctx.close();
});

test("a route added on a balancer through the routes page", async () => {
    const ctx = await shared.browser.newContext();
    const { page, problems } = await open(ctx, "routes");
    await page.getByLabel("Route (its model name)").fill("browser-route");
    await page.getByLabel("Balancer").selectOption(BALANCER);
    await page.getByLabel("Dialect").selectOption("openai");
    await post(page, "Add route", "routes");
    const row = page.locator("tr", { hasText: "browser-route" }).first();
    assert.match(await row.innerText(), /run-time/);
    assert.match(await row.innerText(), new RegExp(BALANCER));
    assert.ok((await models()).includes("browser-route"));
    if (SHOTS) {
        await page.screenshot({ path: path.join(SHOTS, "console-changes.png"),
                                fullPage: true });
    }
    await post(page, "Remove the route browser-route", "routes");
    assert.equal(await row.count(), 0);
    assert.ok(!(await models()).includes("browser-route"));
    assert.deepEqual(problems, []);
    await ctx.close();
});
