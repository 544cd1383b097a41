//! The web UI in a real browser: `strata all` with pushed samples and a flushed block,
//! then Debian's headless Chromium loads each page, runs its scripts (the page's own
//! fetches against the server) and the test reads the DOM Chromium dumps: the range
//! graph uPlot drew (series count and names, recorded by the page's draw hook), the
//! stores and the blocks the test made, the status sections. Screenshots of every page
//! are kept under `target/ui-browser/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_testkit::http::get_json;
use strata_testkit::procs::{find_program, strata};
use strata_testkit::strata::{series, write_request, StrataProc};

fn chromium() -> PathBuf {
    find_program(
        "chromium",
        "install Debian's `chromium` package (apt-get install chromium)",
    )
}

/// Run headless Chromium on `url` with `what` (`--dump-dom` or `--screenshot=…`),
/// letting the page's scripts and fetches run for up to 15 s of virtual time; bounded
/// by a wall-clock deadline. Returns stdout.
fn run_chromium(url: &str, what: &str, profile: &Path) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=15000",
            "--run-all-compositor-stages-before-draw",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Both pipes are drained as Chromium runs: a full stderr pipe would stall it.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).ok();
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("chromium {what} {url} failed ({s}):\n{err}"),
        None => panic!("chromium {what} {url} did not finish in 90 s:\n{err}"),
    }
}

fn screenshots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-browser");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Dump the DOM of `url` after its scripts ran, and save a screenshot `name.png`.
fn visit(url: &str, name: &str, profile: &Path) -> String {
    let dom = run_chromium(url, "--dump-dom", profile);
    let shot = screenshots_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    run_chromium(url, &format!("--screenshot={}", shot.display()), profile);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    dom
}

/// The value of attribute `attr` on the element with `id` in a dumped DOM.
fn attr_of(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attr}=\"");
    let i = tag.find(&key)? + key.len();
    Some(tag[i..i + tag[i..].find('"')?].to_string())
}

/// Status line and headers of `GET path` (raw HTTP/1.1: the test needs the headers).
fn head(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    text[..text.find("\r\n\r\n").unwrap_or(text.len())].to_ascii_lowercase()
}

/// A Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// JSON messages ended by NUL on fds 3 and 4, here one socket), for what a dumped DOM
/// cannot show: the page's answer to a mouse.
struct Devtools {
    proc: std::process::Child,
    sock: std::os::unix::net::UnixStream,
    buf: Vec<u8>,
    next_id: u64,
    session: Option<String>,
}

impl Devtools {
    fn start(profile: &Path) -> Devtools {
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let theirs_out = theirs.try_clone().unwrap();
        mine.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // The shell moves the socket to fds 3 and 4, then becomes Chromium.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("exec 3<&0 4>&1 </dev/null >/dev/null; exec \"$0\" \"$@\"")
            .arg(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
            .stderr(Stdio::null());
        // (not ChildGuard: it would put /dev/null on stdin, where the socket goes)
        let proc = cmd.spawn().expect("start chromium");
        Devtools {
            proc,
            sock: mine,
            buf: Vec::new(),
            next_id: 0,
            session: None,
        }
    }

    /// Send `method` (to the attached page, once there is one) and wait for its answer.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = serde_json::json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.sock.write_all(&bytes).unwrap();
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == 0) {
                let frame: Vec<u8> = self.buf.drain(..=end).collect();
                let v: serde_json::Value = serde_json::from_slice(&frame[..end]).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.sock.read(&mut chunk).expect("devtools answer");
            assert!(n > 0, "chromium closed the devtools pipe");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn open(&mut self, url: &str) {
        let t = self.call("Target.createTarget", serde_json::json!({"url": url}));
        let a = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": t["targetId"], "flatten": true}),
        );
        self.session = Some(a["sessionId"].as_str().unwrap().to_string());
    }

    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    /// Evaluate `js` until it is true (bounded).
    fn wait_for(&mut self, js: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(js) != serde_json::json!(true) {
            assert!(Instant::now() < deadline, "page never satisfied {js}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Devtools {
    fn drop(&mut self) {
        self.proc.kill().ok();
        self.proc.wait().ok();
    }
}

#[test]
fn ui_pages_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let profile = tmp.path().join("chromium-profile");
    // A rule group, so the status page has rules and a firing alert to list.
    let rules = tmp.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: ui-group\n    interval: 1s\n    rules:\n      - alert: UiAlwaysFiring\n        expr: vector(1)\n",
    )
    .unwrap();
    let s = StrataProc::start_all(&data, &[&format!("--rule-file={}", rules.display())]);

    // Two series over the last 20 minutes, one sample every 15 s.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let samples = |scale: f64| -> Vec<(i64, f64)> {
        (0..80)
            .map(|i| (now - 20 * 60_000 + i * 15_000, scale * i as f64))
            .collect()
    };
    let req = write_request(vec![
        series(
            &[
                ("__name__", "ui_requests"),
                ("job", "ui"),
                ("instance", "a"),
            ],
            &samples(1.0),
        ),
        series(
            &[
                ("__name__", "ui_requests"),
                ("job", "ui"),
                ("instance", "b"),
            ],
            &samples(2.0),
        ),
    ]);
    let (code, body) = s.push(None, &req);
    assert!(code == 200 || code == 204, "push: {code} {body}");
    let (code, body) = s.flush();
    assert_eq!(code, 200, "{body}");
    // The blocks, read from the bucket directory itself.
    let mut ulids = Vec::new();
    for tenant in std::fs::read_dir(data.join("bucket")).unwrap() {
        let tenant = tenant.unwrap().path();
        if !tenant.is_dir() {
            continue;
        }
        for b in std::fs::read_dir(&tenant).unwrap() {
            let b = b.unwrap().path();
            if b.join("meta.json").exists() {
                ulids.push(b.file_name().unwrap().to_string_lossy().to_string());
            }
        }
    }
    assert!(!ulids.is_empty(), "flush shipped no block");
    // A series that stays in the head, for the TSDB status page.
    let (code, body) = s.push(
        None,
        &write_request(vec![series(&[("__name__", "ui_in_head")], &[(now, 1.0)])]),
    );
    assert!(code == 200 || code == 204, "push: {code} {body}");

    // The JSON the pages read.
    let blocks = get_json(&format!("{}/api/v1/blocks", s.url()));
    assert_eq!(blocks["status"], "success");
    let listed: Vec<&str> = blocks["data"]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ulid"].as_str().unwrap())
        .collect();
    for u in &ulids {
        assert!(listed.contains(&u.as_str()), "{u} not in {blocks}");
    }
    assert!(blocks["data"]["refreshedAt"].is_string());
    let stores = get_json(&format!("{}/api/v1/stores", s.url()));
    let grpc = format!("127.0.0.1:{}", s.grpc_port);
    let receive = &stores["data"]["receive"];
    assert_eq!(receive[0]["name"], grpc.as_str(), "{stores}");
    assert!(receive[0]["lastError"].is_null(), "{stores}");
    assert!(
        receive[0]["maxTime"].as_i64().unwrap() >= now - 60_000,
        "{stores}"
    );
    assert_eq!(stores["data"]["bucket"][0]["name"], "bucket", "{stores}");

    // Assets: the right types; the index is revalidated, assets cached for good.
    let index = head(s.http_port, "/");
    assert!(index.contains("content-type: text/html"), "{index}");
    assert!(index.contains("cache-control: no-cache"), "{index}");
    let js = head(s.http_port, "/ui/app.js");
    assert!(
        js.contains("200 ok") && js.contains("content-type: text/javascript"),
        "{js}"
    );
    assert!(js.contains("immutable"), "{js}");

    // Query page: a range query drawn by uPlot, state taken from the URL.
    let dom = visit(
        &format!(
            "{}/#/query?expr=ui_requests&tab=graph&range=1h&step=30s",
            s.url()
        ),
        "query-graph",
        &profile,
    );
    assert!(!dom.contains("class=\"error\""), "query page error:\n{dom}");
    let drawn = attr_of(&dom, "graph", "data-drawn-series")
        .unwrap_or_else(|| panic!("no graph in the page:\n{dom}"));
    assert_eq!(drawn, "2", "series drawn");
    let points: usize = attr_of(&dom, "graph", "data-points")
        .unwrap()
        .parse()
        .unwrap();
    assert!(points >= 40, "points on the x axis: {points}");
    for name in [
        r#"<li>ui_requests{instance="a", job="ui"}</li>"#,
        r#"<li>ui_requests{instance="b", job="ui"}</li>"#,
    ] {
        let escaped = name.replace('"', "&quot;");
        assert!(
            dom.contains(name) || dom.contains(&escaped),
            "{name} not drawn:\n{dom}"
        );
    }
    assert!(dom.contains("class=\"u-legend"), "uPlot's legend");
    assert!(dom.contains("id=\"stats\""), "the query's cost");
    assert!(
        dom.contains("totalQueryableSamples"),
        "stats=all in the page"
    );

    // Hovering the graph shows each series' value at that time in the legend.
    let mut dt = Devtools::start(&tmp.path().join("chromium-devtools"));
    dt.open(&format!(
        "{}/#/query?expr=ui_requests&tab=graph&range=1h&step=30s",
        s.url()
    ));
    dt.wait_for("document.getElementById('graph')?.dataset.drawnSeries === '2'");
    let before = dt.eval(
        "[...document.querySelectorAll('.u-legend .u-series .u-value')].map(e => e.textContent)",
    );
    let rect = dt.eval(
        "(() => { const r = document.querySelector('.u-over').getBoundingClientRect(); \
         return [r.left + r.width * 0.9, r.top + r.height / 2]; })()",
    );
    dt.call(
        "Input.dispatchMouseEvent",
        serde_json::json!({"type": "mouseMoved", "x": rect[0], "y": rect[1]}),
    );
    dt.wait_for(
        "[...document.querySelectorAll('.u-legend .u-series .u-value')].slice(1)\
         .every(e => /^[0-9.]+$/.test(e.textContent))",
    );
    let after = dt.eval(
        "[...document.querySelectorAll('.u-legend .u-series .u-value')].map(e => e.textContent)",
    );
    assert_ne!(before, after, "the legend did not follow the mouse");
    // The query went into the history the input offers.
    let history = dt.eval("localStorage.getItem('strata.queryHistory')");
    assert_eq!(history, serde_json::json!("[\"ui_requests\"]"));
    let vals: Vec<f64> = after.as_array().unwrap()[1..]
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    // instance b counts twice as fast as a
    assert_eq!(vals.len(), 2, "{after}");
    assert!(
        vals[0] > 0.0 && (vals[1] - 2.0 * vals[0]).abs() < 1e-9,
        "{after}"
    );
    drop(dt);

    // Instant table, stacked graph.
    let dom = visit(
        &format!("{}/#/query?expr=sum(ui_requests)&tab=table", s.url()),
        "query-table",
        &profile,
    );
    assert!(dom.contains("id=\"table\""), "{dom}");
    assert!(dom.contains("1 result(s)"), "{dom}");
    let dom = visit(
        &format!(
            "{}/#/query?expr=ui_requests&tab=graph&range=30m&stacked=1",
            s.url()
        ),
        "query-stacked",
        &profile,
    );
    assert_eq!(
        attr_of(&dom, "graph", "data-drawn-series").as_deref(),
        Some("2")
    );

    // Another tenant's series, read with the tenant named in the link.
    let (code, body) = s.push(
        Some("team-ui"),
        &write_request(vec![series(
            &[("__name__", "ui_tenant_only"), ("team", "ui")],
            &samples(1.0),
        )]),
    );
    assert!(code == 200 || code == 204, "push: {code} {body}");
    let dom = visit(
        &format!(
            "{}/#/query?expr=ui_tenant_only&tab=graph&range=1h&tenant=team-ui",
            s.url()
        ),
        "query-tenant",
        // its own profile: the page keeps the tenant in localStorage
        &tmp.path().join("chromium-profile-tenant"),
    );
    assert_eq!(
        attr_of(&dom, "graph", "data-drawn-series").as_deref(),
        Some("1")
    );

    // Stores page: the ingester's endpoint, healthy, and the bucket.
    let dom = visit(&format!("{}/#/stores", s.url()), "stores", &profile);
    assert!(dom.contains(&grpc), "{grpc} not on the stores page:\n{dom}");
    assert!(dom.contains(">UP<"), "{dom}");
    assert!(!dom.contains(">DOWN<"), "{dom}");
    assert!(
        dom.contains("receive (1)") && dom.contains("bucket (1)"),
        "{dom}"
    );

    // A querier reading the ingester and an endpoint nobody listens on: the stores
    // page tells the healthy one from the dead one, with its error.
    let dead = format!("127.0.0.1:{}", strata_testkit::procs::free_port());
    let q = StrataProc::start_http_only(
        &tmp.path().join("querier"),
        &[
            "querier",
            &format!("--endpoint={grpc}"),
            &format!("--endpoint={dead}"),
        ],
    );
    let stores = get_json(&format!("{}/api/v1/stores", q.url()));
    assert_eq!(
        stores["data"]["receive"][0]["name"],
        grpc.as_str(),
        "{stores}"
    );
    let down = &stores["data"]["unknown"][0];
    assert_eq!(down["name"], dead.as_str(), "{stores}");
    assert!(down["lastError"].is_string(), "{stores}");
    let dom = visit(&format!("{}/stores", q.url()), "stores-querier", &profile);
    assert!(dom.contains(&grpc) && dom.contains(&dead), "{dom}");
    assert!(dom.contains(">UP<") && dom.contains(">DOWN<"), "{dom}");
    // It reads no bucket: no blocks to list.
    let (code, body) = strata_testkit::http::get(&format!("{}/api/v1/blocks", q.url())).unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#""errorType":"not_found""#), "{body}");
    // A query over it answers with partial data and a warning naming the dead endpoint.
    let dom = visit(
        &format!("{}/#/query?expr=ui_requests&tab=table", q.url()),
        "query-warning",
        &profile,
    );
    assert!(dom.contains("2 result(s)"), "{dom}");
    let warning = &dom[dom
        .find("class=\"warn warning\"")
        .expect("no warning shown")..];
    assert!(
        warning[..warning.find("</div>").unwrap()].contains(&dead),
        "{warning}"
    );
    drop(q);

    // A no-compact mark, put by the CLI, shows on the blocks page.
    let marked = &ulids[0];
    strata_testkit::procs::run_ok(strata().args([
        "tools",
        "bucket",
        "mark",
        &format!(
            "--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {}\n",
            data.join("bucket").display()
        ),
        &format!("--id={marked}"),
        "--marker=no-compact-mark.json",
        "--details=ui test",
    ]));

    // Blocks page: each block the flush shipped, on the timeline and in the table.
    let dom = visit(&format!("{}/#/blocks", s.url()), "blocks", &profile);
    for u in &ulids {
        assert!(
            dom.contains(&format!("data-ulid=\"{u}\"")),
            "{u} not on the timeline:\n{dom}"
        );
        assert!(dom.contains(&format!(">{u}</a>")), "{u} not in the table");
    }
    let at = dom.find(&format!("data-ulid=\"{marked}\"")).unwrap();
    let tag = &dom[dom[..at].rfind('<').unwrap()..at];
    assert!(
        tag.contains("class=\"blk nocompact\"") && dom.contains(">no-compact</td>"),
        "{marked}'s no-compact mark not shown: {tag}"
    );

    // The alert fires on the ruler's first evaluation (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&format!("{}/api/v1/alerts", s.url()))["data"]["alerts"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(Instant::now() < deadline, "UiAlwaysFiring never fired");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Status page: build info, flags, TSDB status, ring (none), rules and alerts.
    let dom = visit(&format!("{}/#/status", s.url()), "status", &profile);
    for id in [
        "buildinfo",
        "runtimeinfo",
        "ring",
        "tsdb",
        "rules",
        "alerts",
        "flags",
    ] {
        let at = dom
            .find(&format!("<section id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no {id} section:\n{dom}"));
        assert!(
            !dom[at..].starts_with(&format!("<section id=\"{id}\"><div class=\"error\"")),
            "{id} failed:\n{dom}"
        );
    }
    assert!(dom.contains("3.5.0"), "build info");
    assert!(
        dom.contains("ui-group") && dom.contains("UiAlwaysFiring"),
        "rules"
    );
    let alerts = &dom[dom.find("<section id=\"alerts\">").unwrap()..];
    assert!(
        alerts.contains("UiAlwaysFiring") && alerts.contains("firing"),
        "alerts"
    );
    assert!(
        dom.contains("ui_in_head"),
        "TSDB status lists the head's metric"
    );
}
