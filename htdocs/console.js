// console.js: keeps an llm-admin page fresh from status.json. The page is
// complete without it: this only replaces the text of the elements that
// name a value of the model (data-k, formatted as data-f says, as the
// server does) and redraws the charts. Text goes in as text, never markup.
"use strict";
(function () {
    var url = document.body.getAttribute("data-status");
    if (!url || !window.fetch) {
        return;
    }
    var DASH = "\u2013";

    function at(o, path) {
        var parts = path.split(".");
        for (var i = 0; i < parts.length && o !== undefined && o !== null; i++) {
            o = o[parts[i]];
        }
        return o;
    }

    function grouped(n) {
        var s = String(Math.trunc(n)), out = "";
        var neg = s[0] === "-";
        if (neg) {
            s = s.slice(1);
        }
        for (var i = 0; i < s.length; i++) {
            if (i && (s.length - i) % 3 === 0) {
                out += ",";
            }
            out += s[i];
        }
        return (neg ? "-" : "") + out;
    }

    // The server's llmgw_render_value, in the same words.
    function show(v, f) {
        if (v === undefined || v === null) {
            return DASH;
        }
        if (typeof v === "boolean") {
            return v ? "yes" : "no";
        }
        if (typeof v === "string") {
            return v === "" ? DASH : v;
        }
        if (typeof v !== "number") {
            return DASH;
        }
        if (f === "time") {
            return new Date(v * 1000).toISOString().slice(0, 19)
                .replace("T", " ") + " UTC";
        }
        if (f === "ms") {
            return (v * 1000).toFixed(1) + " ms";
        }
        if (f === "pct") {
            return (v * 100).toFixed(1) + " %";
        }
        if (f === "rate") {
            return v.toFixed(2);
        }
        if (f === "n" && Number.isInteger(v)) {
            return grouped(v);
        }
        return String(v);
    }

    function points(series, w, h) {
        var max = 1, pts = [];
        series.forEach(function (v) { max = Math.max(max, v); });
        series.forEach(function (v, i) {
            var x = series.length > 1 ? i * w / (series.length - 1) : 0;
            pts.push(x.toFixed(1) + "," + (h - v * (h - 2) / max - 1).toFixed(1));
        });
        return pts.join(" ");
    }

    function apply(st) {
        document.querySelectorAll("[data-k]").forEach(function (el) {
            var text = show(at(st, el.getAttribute("data-k")),
                            el.getAttribute("data-f") || "");
            if (el.textContent !== text) {
                el.textContent = text;
            }
        });
        document.querySelectorAll("polyline[data-chart]").forEach(function (pl) {
            var series = at(st, "chart." + pl.getAttribute("data-chart"));
            var box = pl.ownerSVGElement.viewBox.baseVal;
            if (Array.isArray(series)) {
                pl.setAttribute("points", points(series, box.width, box.height));
            }
        });
    }

    function refresh() {
        fetch(url, { credentials: "same-origin", cache: "no-store" })
            .then(function (r) { return r.ok ? r.json() : null; })
            .then(function (st) { if (st) { apply(st); } })
            .catch(function () { /* the next refresh tries again */ });
    }

    refresh();
    setInterval(refresh, 5000);
}());
