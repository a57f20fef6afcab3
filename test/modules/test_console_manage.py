# The console's forms for run-time changes, posted as a browser posts them:
# each form read from the page (its hidden fields, its nonce, its labelled
# inputs), filled in and submitted; a name added and taken out, a route added
# and taken out, /v1/models showing each at once; without the nonce nothing
# changes; a refusal answers 409 with a page that says why. The same in
# headless Chromium: names and routes (test/browser/console_manage.test.mjs),
# a member (console_members.test.mjs).
from html.parser import HTMLParser
from urllib.parse import urlencode

import llmgw_env as env
from test_console import ADMIN, playwright, run_browser  # noqa: F401
# gwm: a gateway with the console and an empty LLMManageFile.
from test_manage import HEADER, gwm, ids, mgr  # noqa: F401
# gm: a gateway whose balancer GROW has growth slots, pool its mocks.
from test_members import GROW, gm, members, pool, url  # noqa: F401


class Forms(HTMLParser):
    """A page's forms: each one's action, hidden fields, labelled inputs
    and selects (with their attributes and options) and its button."""

    def __init__(self):
        super().__init__()
        self.forms, self.text = [], []
        self._form = self._label = self._select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        f = self._form
        if tag == "form":
            self._form = {"action": a.get("action"), "method": a.get("method"),
                          "hidden": {}, "inputs": {}, "labels": {},
                          "button": None}
            self.forms.append(self._form)
        elif f is None:
            return
        elif tag == "label":
            self._label = []
        elif tag == "input" and a.get("type") == "hidden":
            assert a["name"] not in f["hidden"], a
            f["hidden"][a["name"]] = a.get("value", "")
        elif tag in ("input", "select"):
            f["inputs"][a["name"]] = dict(a, options=[])
            if self._label is not None:
                f["labels"][a["name"]] = "".join(self._label).strip()
            self._select = a["name"] if tag == "select" else None
        elif tag == "option":
            f["inputs"][self._select]["options"].append(a["value"])
        elif tag == "button":
            f["button"] = a.get("aria-label") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "label":
            self._label = None

    def handle_data(self, data):
        self.text.append(data)
        if self._label is not None:
            self._label.append(data)


class Browser:
    """What a browser does with the console: keeps its session cookie,
    reads a page's forms and submits one, from the page's own origin."""

    def __init__(self, g):
        self.g, self.cookie = g, None

    def page(self, name):
        r = self.g.get(f"{ADMIN}/{name}",
                       headers={"Cookie": self.cookie} if self.cookie else {})
        assert r.status == 200, r.body
        if not self.cookie:
            self.cookie = r.header("Set-Cookie").split(";", 1)[0]
        p = Forms()
        p.feed(r.body.decode())
        return p

    def form(self, page, do, **hidden):
        """The one form of PAGE that posts DO with those hidden fields."""
        found = [f for f in self.page(page).forms
                 if f["hidden"].get("do") == do
                 and all(f["hidden"].get(k) == v for k, v in hidden.items())]
        assert len(found) == 1, (do, hidden, found)
        return found[0]

    def submit(self, form, drop=(), **values):
        """Posts FORM as a browser would: its hidden fields (but DROP) and
        a value for each of its inputs (VALUES must name only those)."""
        assert form["method"] == "post" and form["action"] == f"{ADMIN}/action"
        assert set(values) <= set(form["inputs"]), (values, form["inputs"])
        fields = {k: v for k, v in form["hidden"].items() if k not in drop}
        for name, inp in form["inputs"].items():
            fields[name] = values.get(name, inp.get("value", ""))
        return self.g.request(
            "POST", f"{ADMIN}/action", urlencode(fields).encode(),
            {"Content-Type": "application/x-www-form-urlencoded",
             "Cookie": self.cookie,
             "Origin": f"http://{env.HOST}:{self.g.port}"})


def state_lines(g):
    try:
        with open(g.state) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return None


def test_name_added_and_taken_out_through_the_forms(gwm):
    b = Browser(gwm)
    add = b.form("routes", "name_add", route="mock-small")
    assert add["labels"] == {"name": "Model name or alias"}
    assert add["inputs"]["name"]["type"] == "text"
    assert add["inputs"]["name"]["maxlength"] == "128"
    assert "required" in add["inputs"]["name"]
    r = b.submit(add, name="form-alias")
    assert r.status == 303, r.body
    assert r.header("Location").endswith(f"{ADMIN}/routes")
    assert "form-alias" in ids(gwm)
    # Marked as a run-time name, with the lines to paste; its Remove posts
    # the name out again.
    page = b.page("routes")
    text = "|".join(t.strip() for t in page.text if t.strip())
    assert "|form-alias|run-time|" in text, text
    assert "Lines to paste into httpd.conf" in text
    rm = b.form("routes", "name_remove", route="mock-small", name="form-alias")
    assert rm["button"] == "Remove form-alias from mock-small"
    assert rm["inputs"] == {}
    r = b.submit(rm)
    assert r.status == 303, r.body
    assert "form-alias" not in ids(gwm)
    assert state_lines(gwm) == [HEADER]
    assert "Lines to paste into httpd.conf" not in "".join(b.page("routes").text)


def test_configured_name_taken_out_and_put_back(gwm):
    b = Browser(gwm)
    r = b.submit(b.form("routes", "name_remove", route="mock-small", name="small"))
    assert r.status == 303, r.body
    assert "small" not in ids(gwm)
    text = "|".join(t.strip() for t in b.page("routes").text if t.strip())
    assert "|small|removed at run time|Put back|" in text, text
    r = b.submit(b.form("routes", "name_add", route="mock-small", name="small"))
    assert r.status == 303, r.body
    assert "small" in ids(gwm)
    assert state_lines(gwm) == [HEADER]


def test_route_added_and_taken_out_through_the_forms(gwm):
    b = Browser(gwm)
    add = b.form("routes", "route_add")
    assert add["labels"] == {"route": "Route (its model name)", "b": "Balancer",
                             "dialect": "Dialect"}
    assert "balancer://mgr" in add["inputs"]["b"]["options"]
    assert add["inputs"]["dialect"]["options"] == ["openai", "ollama"]
    r = b.submit(add, route="form-route", b="balancer://mgr", dialect="ollama")
    assert r.status == 303, r.body
    assert "form-route" in ids(gwm)
    rm = b.form("routes", "route_remove", route="form-route")
    assert rm["button"] == "Remove the route form-route"
    r = b.submit(rm)
    assert r.status == 303, r.body
    assert "form-route" not in ids(gwm)


def test_forms_without_the_nonce_change_nothing(gwm):
    b = Browser(gwm)
    before = ids(gwm)
    add = b.form("routes", "name_add", route="mock-small")
    assert b.submit(add, drop=("nonce",), name="no-nonce").status == 403
    assert b.submit(dict(add, hidden={**add["hidden"], "nonce": "0" * 64}),
                    name="no-nonce").status == 403
    route = b.form("routes", "route_add")
    assert b.submit(route, drop=("nonce",), route="no-nonce-route",
                    b="balancer://mgr").status == 403
    assert ids(gwm) == before
    assert state_lines(gwm) is None


def test_a_refusal_is_a_page_that_says_why(gwm, mgr):  # noqa: F811
    b = Browser(gwm)
    r = b.submit(b.form("routes", "name_add", route="mock-small"),
                 name="gpt-4x")
    assert r.status == 409
    assert r.content_type == "text/html"
    p = Forms()
    p.feed(r.body.decode())
    text = "".join(p.text)
    assert "Not done: the model name 'gpt-4x' is served now by the glob " \
           "route 'gpt-*'" in text, text
    # The page the form was on, its forms still this session's.
    assert any(f["hidden"].get("do") == "name_add" for f in p.forms)
    assert 'data-page="routes"' in r.body.decode()
    assert "gpt-4x" not in ids(gwm)
    # A member's refusal: the backends page, where its form was.
    w = b.form("backends", "member_weight", b="balancer://mgr",
               w=f"http://{env.HOST}:{mgr.port}")
    r = b.submit(w, lbfactor="0")
    assert r.status == 409 and r.content_type == "text/html"
    assert 'data-page="backends"' in r.body.decode()
    assert "Not done: " in r.body.decode()


def test_member_forms_post_the_members_fields(gwm, mgr):  # noqa: F811
    b = Browser(gwm)
    add = b.form("backends", "member_add", b="balancer://mgr")
    assert add["labels"] == {"w": "Member URL", "timeout": "Timeout (s)",
                             "lbfactor": "lbfactor", "probe": "Probe"}
    assert add["inputs"]["w"]["type"] == "url"
    lb = add["inputs"]["lbfactor"]
    assert (lb["type"], lb["min"], lb["max"]) == ("number", "1", "100")
    t = add["inputs"]["timeout"]
    assert (t["type"], t["min"], t["max"]) == ("number", "1", "86400")
    assert add["inputs"]["probe"]["options"] == ["none", "ollama", "llamacpp",
                                                 "vllm", "openai"]
    member = f"http://{env.HOST}:{mgr.port}"
    w = b.form("backends", "member_weight", b="balancer://mgr", w=member)
    st = gwm.get(f"{ADMIN}/status.json").json()
    now = [m["lbfactor"] for bal in st["balancers"] if bal["name"] == "balancer://mgr"
           for m in bal["members"] if m["name"] == member]
    # The loadfactor as httpd.conf says it (1 by default), the units
    # member_weight takes; mod_proxy keeps it, and status.json says it, times
    # 100.
    assert now == [100]
    assert (w["inputs"]["lbfactor"]["min"], w["inputs"]["lbfactor"]["max"],
            w["inputs"]["lbfactor"]["value"]) == ("1", "100", "1")
    rm = b.form("backends", "member_remove", b="balancer://mgr", w=member)
    assert rm["button"] == f"Remove {member}"


def test_forms_in_browser(gwm, playwright):  # noqa: F811
    """A name added and taken out, a route added and taken out, through the
    routes page's forms in headless Chromium (console_manage.test.mjs)."""
    run_browser(playwright, "console_manage.test.mjs", gwm,
                LLMGW_ROUTE="mock-small", LLMGW_BALANCER="balancer://mgr")
    assert state_lines(gwm) == [HEADER]


def test_member_forms_in_browser(gm, pool, playwright):  # noqa: F811
    """A member added and taken out through the backends page's forms in
    headless Chromium (console_members.test.mjs)."""
    new = url(pool["m1"])
    assert new not in members(gm)
    run_browser(playwright, "console_members.test.mjs", gm,
                LLMGW_BALANCER=GROW, LLMGW_NEW=new)
    # Added and taken out: nothing left to keep, the slot held (Free).
    m = members(gm)[new]
    assert m["drained"] and m["removed"], m
    assert gm.get(f"{ADMIN}/status.json").json()["manage"]["changes"] == []
