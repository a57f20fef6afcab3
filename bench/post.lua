-- bench/post.lua: the wrk script of build/bench. POSTs a chat completion
-- and prints one machine-readable line at the end.
--
-- Environment:
--   BENCH_MODEL    the model asked for (default mock-small)
--   BENCH_FIXED    "1": every request is the same bytes (cache hits);
--                  else each request is unique (BENCH_NONCE, the thread
--                  and a counter in the prompt), so a response cache can
--                  only miss. Both paths go through
--                  request(), so wrk does the same work either way.
--   BENCH_NONCE    a string unique to this run of wrk
--   BENCH_HEADERS  extra request headers, "Name: value" lines
--
-- done() prints: BENCHJSON {"requests":..,"p99_us":..,...}

local model = os.getenv("BENCH_MODEL") or "mock-small"
local fixed = os.getenv("BENCH_FIXED") == "1"
local extra = os.getenv("BENCH_HEADERS") or ""
local nonce = os.getenv("BENCH_NONCE") or "0"
local counter = 0
local cached = nil
local nthreads = 0

function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads)
end

local function body(n)
    return string.format('{"model":"%s","temperature":0,"max_tokens":16,'
        .. '"messages":[{"role":"user","content":'
        .. '"Say hello in five words. (%s)"}]}', model, n)
end

function init(args)
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    for line in extra:gmatch("[^\n]+") do
        local k, v = line:match("^%s*([^:]+):%s*(.-)%s*$")
        if k then
            wrk.headers[k] = v
        end
    end
    if fixed then
        cached = wrk.format(nil, nil, nil, body("fixed"))
    end
end

function request()
    if cached then
        return cached
    end
    counter = counter + 1
    return wrk.format(nil, nil, nil,
                      body(string.format("%s-t%d-%d", nonce, tid or 0,
                                         counter)))
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
        .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
        .. '"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,'
        .. '"p99_us":%d,"p999_us":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.mean, latency.max, latency:percentile(50),
        latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9)))
end
