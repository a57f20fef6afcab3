// A balancer member added and taken out through the Backends page's forms
// in a real browser (Debian's chromium, driven by playwright-core): the
// new member's row shows marked as added at run time and status.json lists
// it; its Remove strikes it through as removed at run time; no console
// error on the way. Run by
// test/modules/test_console_manage.py::test_member_forms_in_browser, which
// starts a gateway with a balancer that has growth slots:
//   LLMGW_URL       the gateway, http://127.0.0.1:PORT
//   LLMGW_ADMIN     the console's path (/llm-admin/)
//   LLMGW_BALANCER  the balancer to add a member to
//   LLMGW_NEW       the new member's URL (a mock of its own)
//   LLMGW_SHOTS     where to write the screenshot (unset: none)
//   CHROMIUM        the browser (default /usr/bin/chromium)
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { ADMIN, URL_, open, post, sharedBrowser } from "./lib.mjs";

const BALANCER = process.env.LLMGW_BALANCER;
const NEW = process.env.LLMGW_NEW;
const SHOTS = process.env.LLMGW_SHOTS;

const shared = sharedBrowser();

// The member NEW of BALANCER as status.json has it (undefined: none).
async function member() {
    const r = await fetch(URL_ + ADMIN + "status.json");
    assert.equal(r.status, 200);
    const b = (await r.json()).balancers.find((x) => x.name === BALANCER);
    return b.members.find((m) => m.name === NEW);
}

test("a member added and taken out through the backends page", async () => {
    const ctx = await shared.browser.newContext();
    const { page, problems } = await open(ctx, "backends");
    const section = () => page.locator("section", {
        has: page.getByRole("heading", { name: BALANCER, exact: true }),
    });
    assert.equal(await member(), undefined);
    await section().getByLabel("Member URL").fill(NEW);
    await section().getByLabel("Probe").selectOption("openai");
    await post(page, `Add a member to ${BALANCER}`, "backends");
    const row = () => section().locator("tr", { hasText: NEW });
    assert.match(await row().innerText(), /run-time/);
    assert.ok(await member(), "status.json lacks the new member");
    if (SHOTS) {
        await page.screenshot({ path: path.join(SHOTS, "console-members.png"),
                                fullPage: true });
    }
    await post(page, `Remove ${NEW}`, "backends");
    assert.match(await row().innerText(), /removed at run time/);
    assert.equal(await row().locator("del").count(), 1);
    assert.deepEqual(problems, []);
    await ctx.close();
});
