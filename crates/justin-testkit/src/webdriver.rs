//! A small client of the W3C WebDriver protocol, for tests that load the service's pages in a
//! real browser: headless Chromium driven by Debian's `chromedriver` (package
//! `chromium-driver`), JSON over HTTP on a loopback port. It covers what a test of server-rendered
//! pages needs: open a page, find elements by CSS selector, read their text and attributes,
//! take a screenshot. No JavaScript of the page is relied on.
//!
//! [`Browser::start`] starts its own `chromedriver` on a free port with a fresh profile
//! directory, and the process is killed when the [`Browser`] is dropped, passing or not.
//! [`missing`] says what is not installed, so a suite can skip (or, under `CI=true`, fail) with
//! the install command.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{ScratchDir, WAIT};

/// Debian's Chromium (package `chromium`); `JUSTIN_TEST_CHROMIUM` overrides.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver (package `chromium-driver`); `JUSTIN_TEST_CHROMEDRIVER` overrides.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How to install both on Debian.
pub const INSTALL: &str = "apt-get install chromium chromium-driver";

/// The key under which WebDriver names an element in its answers (W3C WebDriver, "Elements").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The browser window's size, so that screenshots of the same page have the same width.
const WINDOW: (u64, u64) = (1280, 900);
/// The tallest a full-page screenshot gets, in CSS pixels.
const MAX_PAGE_HEIGHT: u64 = 6000;

fn chromium() -> PathBuf {
    std::env::var_os("JUSTIN_TEST_CHROMIUM").map_or_else(|| CHROMIUM.into(), PathBuf::from)
}

fn chromedriver() -> PathBuf {
    std::env::var_os("JUSTIN_TEST_CHROMEDRIVER").map_or_else(|| CHROMEDRIVER.into(), PathBuf::from)
}

/// What a browser test needs and is not installed, with the command that installs it; `None`
/// when both Chromium and ChromeDriver are there.
pub fn missing() -> Option<String> {
    let absent: Vec<String> = [chromium(), chromedriver()]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not found: install with `{INSTALL}`",
            absent.join(" and ")
        )
    })
}

/// A headless Chromium session, driven through a `chromedriver` process of its own.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    agent: ureq::Agent,
    /// Chromium's profile for this session; removed after the driver is gone.
    profile: ScratchDir,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and opens a headless Chromium session
    /// with a fresh profile.
    ///
    /// # Panics
    /// When either program is missing (see [`missing`]) or the session cannot be created.
    pub fn start() -> Self {
        if let Some(what) = missing() {
            panic!("the browser test cannot run: {what}");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port can be found")
            .port();
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver().display()));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .build()
            .into();
        let mut browser = Self {
            driver,
            session: String::new(),
            base: format!("http://127.0.0.1:{port}"),
            agent,
            profile: ScratchDir::new(),
        };
        browser.wait_until_ready();
        let profile = browser.profile.display().to_string();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium().display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    format!("--user-data-dir={profile}"),
                ],
            },
        }}});
        let value = browser.call("POST", "/session", Some(&capabilities));
        browser.session = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver gave no session id: {value}"))
            .to_owned();
        browser
    }

    /// Polls the driver's status until it is ready to create sessions.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited at start-up: {status}");
            }
            let ready = self
                .agent
                .get(format!("{}/status", self.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver was not ready within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command; its `value`, or a panic with WebDriver's error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|(status, error)| panic!("WebDriver {method} {path}: {status} {error}"))
    }

    /// Sends one command; its `value`, or the status and WebDriver's error object.
    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, (u16, Value)> {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let response = match body {
            Some(body) => self.agent.run(
                request
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .expect("a valid request"),
            ),
            None => self.agent.run(request.body(()).expect("a valid request")),
        };
        let mut response =
            response.unwrap_or_else(|e| panic!("WebDriver {method} {path}: no answer: {e}"));
        let status = response.status().as_u16();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: unreadable answer: {e}"));
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON ({e}): {text:?}"));
        if status == 200 {
            Ok(json["value"].clone())
        } else {
            Err((status, json["value"].clone()))
        }
    }

    fn session_path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(&json!({ "url": url })),
        );
    }

    /// The current page's title.
    pub fn title(&self) -> String {
        let value = self.call("GET", &self.session_path("/title"), None);
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The current page's HTML as the browser holds it.
    pub fn source(&self) -> String {
        let value = self.call("GET", &self.session_path("/source"), None);
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The first element `css` selects on the page, if any.
    pub fn find(&self, css: &str) -> Option<Element<'_>> {
        self.find_under("", css)
    }

    /// The element `css` selects; a panic naming the selector and the page when there is none.
    pub fn expect(&self, css: &str) -> Element<'_> {
        self.find(css).unwrap_or_else(|| {
            panic!(
                "no element matches {css:?} on {}:\n{}",
                self.title(),
                self.source()
            )
        })
    }

    /// Every element `css` selects on the page, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        self.find_all_under("", css)
    }

    fn find_under(&self, scope: &str, css: &str) -> Option<Element<'_>> {
        let query = json!({"using": "css selector", "value": css});
        match self.try_call(
            "POST",
            &self.session_path(&format!("{scope}/element")),
            Some(&query),
        ) {
            Ok(value) => Some(self.element(&value)),
            Err((_, error)) if error["error"] == "no such element" => None,
            Err((status, error)) => panic!("WebDriver find {css:?}: {status} {error}"),
        }
    }

    fn find_all_under(&self, scope: &str, css: &str) -> Vec<Element<'_>> {
        let query = json!({"using": "css selector", "value": css});
        let value = self.call(
            "POST",
            &self.session_path(&format!("{scope}/elements")),
            Some(&query),
        );
        value
            .as_array()
            .map(|found| found.iter().map(|v| self.element(v)).collect())
            .unwrap_or_default()
    }

    fn element(&self, value: &Value) -> Element<'_> {
        let id = value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver answered no element reference: {value}"));
        Element {
            browser: self,
            id: id.to_owned(),
        }
    }

    /// Saves a PNG of the whole page (up to a height limit) to `path`, creating its directory.
    pub fn screenshot(&self, path: &Path) {
        // The window grows to the page's height (plus the window's own frame, which the
        // viewport does not have) for the picture, then returns to its size.
        let script = "return document.documentElement.scrollHeight \
                      + window.outerHeight - window.innerHeight";
        let height = self
            .call(
                "POST",
                &self.session_path("/execute/sync"),
                Some(&json!({"script": script, "args": []})),
            )
            .as_u64()
            .unwrap_or(WINDOW.1)
            .clamp(WINDOW.1, MAX_PAGE_HEIGHT);
        self.set_window(WINDOW.0, height);
        let value = self.call("GET", &self.session_path("/screenshot"), None);
        self.set_window(WINDOW.0, WINDOW.1);
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("WebDriver's screenshot is not base64: {e}"));
        assert!(
            png.starts_with(b"\x89PNG"),
            "WebDriver's screenshot is not a PNG"
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    fn set_window(&self, width: u64, height: u64) {
        let rect = json!({"width": width, "height": height});
        self.call("POST", &self.session_path("/window/rect"), Some(&rect));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: the session's browser goes with the driver anyway.
        if !self.session.is_empty() {
            let path = self.session_path("");
            let url = format!("{}{path}", self.base);
            self.agent.delete(url).call().ok();
        }
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}

impl<'a> Element<'a> {
    fn path(&self, tail: &str) -> String {
        self.browser
            .session_path(&format!("/element/{}{tail}", self.id))
    }

    /// The element's rendered text, as a user sees it.
    pub fn text(&self) -> String {
        let value = self.browser.call("GET", &self.path("/text"), None);
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The value of the element's attribute `name`, if it has one.
    pub fn attribute(&self, name: &str) -> Option<String> {
        let value = self
            .browser
            .call("GET", &self.path(&format!("/attribute/{name}")), None);
        value.as_str().map(str::to_owned)
    }

    /// The first element under this one that `css` selects, if any.
    pub fn find(&self, css: &str) -> Option<Element<'a>> {
        self.browser
            .find_under(&format!("/element/{}", self.id), css)
    }

    /// Every element under this one that `css` selects.
    pub fn find_all(&self, css: &str) -> Vec<Element<'a>> {
        self.browser
            .find_all_under(&format!("/element/{}", self.id), css)
    }
}
