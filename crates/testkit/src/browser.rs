//! A headless Chromium driven over the DevTools protocol, for tests of the
//! web console in a real browser: navigate, run script, wait for the page
//! to reach a state, take screenshots, and collect every console error
//! and uncaught exception the page produced.
//!
//! One WebSocket to the browser, one page attached with a flat session;
//! events are kept as they arrive between calls.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// A Chromium process and one page in it.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next: u64,
    session: String,
    /// Console errors and exceptions seen so far, as text.
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

/// The Chromium binary: `$CHROMIUM`, else Debian's `chromium`.
fn chromium_bin() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

impl Browser {
    /// Starts headless Chromium with a `width` x `height` window and opens
    /// a blank page. Fails (never skips) when Chromium is missing.
    pub fn launch(width: u32, height: u32) -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(chromium_bin())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start `{}` (install Debian's chromium, or set CHROMIUM)",
                    chromium_bin()
                )
            })?;
        // Chromium says where its DevTools endpoint listens on stderr.
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .context("chromium exited before it listened")??;
            if let Some(u) = line.split("DevTools listening on ").nth(1) {
                break u.trim().to_owned();
            }
        };
        // Keep draining stderr so Chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let hostport = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .context("odd DevTools URL")?
            .to_owned();
        let stream = TcpStream::connect(&hostport)?;
        let (ws, _) = tungstenite::client::client(url.as_str(), stream)
            .map_err(|e| anyhow!("DevTools handshake: {e}"))?;
        // Reads wake up now and then so a call's deadline is kept.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut b = Browser {
            child,
            ws,
            next: 0,
            session: String::new(),
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}))?;
        let id = target["targetId"]
            .as_str()
            .context("no targetId")?
            .to_owned();
        let att = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        )?;
        b.session = att["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, json!({}))?;
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(b)
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> anyhow::Result<Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if session {
            msg["sessionId"] = self.session.clone().into();
        }
        self.ws.send(Message::text(msg.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                bail!("{method}: no answer in 60 s");
            }
            let m = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => bail!("{method}: DevTools connection: {e}"),
            };
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
            self.event(&v);
        }
    }

    /// Keeps what an event says about errors on the page.
    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                self.errors.push(format!(
                    "exception: {} {}",
                    d["text"].as_str().unwrap_or_default(),
                    d["exception"]["description"].as_str().unwrap_or_default()
                ));
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x["value"].to_string()).collect())
                    .unwrap_or_default();
                self.errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                self.errors.push(format!(
                    "log: {} {}",
                    e["text"].as_str().unwrap_or_default(),
                    e["url"].as_str().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, false)
    }

    /// A DevTools command on the page.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, true)
    }

    /// Opens `url` and waits until its document has loaded.
    pub fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({"url": url}))?;
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )?;
        Ok(())
    }

    /// Runs `js` (an expression; a promise is awaited) and returns its value.
    pub fn eval(&mut self, js: &str) -> anyhow::Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("script failed: {js}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `js` until it is truthy and returns that value; the
    /// page's own timers make the progress, this only looks. Past `limit`
    /// the test fails ([`crate::until`]) with what the script last gave.
    pub fn wait_for(&mut self, js: &str, limit: Duration) -> anyhow::Result<Value> {
        Ok(crate::until(js, limit, || {
            let v = self.eval(js).map_err(|e| e.to_string())?;
            let falsy =
                matches!(&v, Value::Null | Value::Bool(false)) || v == json!(0) || v == json!("");
            if falsy {
                Err(format!("it gave {v}"))
            } else {
                Ok(v)
            }
        }))
    }

    /// Resizes the page as a device of `width` x `height` CSS pixels.
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) -> anyhow::Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )?;
        Ok(())
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = r["data"].as_str().context("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Console errors and uncaught exceptions since the last call (events
    /// that arrived since the last command are read first).
    pub fn take_errors(&mut self) -> anyhow::Result<Vec<String>> {
        // A round trip makes sure events sent before now have been read.
        self.eval("1")?;
        Ok(std::mem::take(&mut self.errors))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
