//! Headless Chromium for the browser tests: `chromedriver` on a free port,
//! a fresh browser (and profile) for each page, and what the tests ask of
//! the page: log in, type a line, wait for what shows, take a screenshot.
//!
//! Waits poll the page for a condition, bounded by [`TIMEOUT`]: the page
//! has no `PING` to sync on, but what it shows is the thing under test.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_tests::{binary, Server, TIMEOUT};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// What Chromium needs here: no sandbox (root in a container), and nothing
/// that reaches for the network on its own, which stalls it on a machine
/// without one.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// The browsers' names on Debian and elsewhere.
const CHROMIUM_NAMES: &[&str] = &["chromium", "chromium-browser", "google-chrome"];

/// How to get what the browser tests need.
const INSTALL: &str = "apt-get install chromium chromium-driver";

/// Where `name` is on the PATH, if it is.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether the browser tests can run here: `chromedriver` and Chromium
/// installed. Without them a test says `SKIPPED <test>` on the terminal
/// (where `cargo test` does not hide it) and passes, except in CI (`CI` set
/// to anything but `false` or `0`), where it fails: `.ci/run` installs
/// both, and a green run must have run every test.
fn browser_available() -> bool {
    if which("chromedriver").is_some() && CHROMIUM_NAMES.iter().any(|n| which(n).is_some()) {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "false" | "0"));
    assert!(
        !ci,
        "chromedriver or chromium is not installed, and CI must run the browser tests \
         (.ci/run installs them: {INSTALL})"
    );
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a browser test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: chromedriver or chromium is not installed ({INSTALL})"
    );
    false
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Waits until something accepts connections at `addr`.
fn wait_listening(addr: SocketAddr, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < TIMEOUT, "{what} never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directory where the screenshots go: `<target>/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    // <target>/<profile>/deps/<test executable>
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test executable lives in <target>/<profile>/deps");
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// A `chat-server` with its web door on a port of the test's choosing, so
/// that a restarted server is found again at the same address.
pub struct WebServer {
    server: Server,
    web: SocketAddr,
    args: Vec<String>,
}

impl WebServer {
    pub fn start(extra: &[&str]) -> WebServer {
        let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args: Vec<String> = ["--web-addr".to_owned(), web.to_string()]
            .into_iter()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect();
        let server = Self::spawn(&args, web);
        WebServer { server, web, args }
    }

    fn spawn(args: &[String], web: SocketAddr) -> Server {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::single(&args);
        wait_listening(web, "the web door");
        server
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.web)
    }

    /// The line protocol's address, for plain TCP users.
    pub fn tcp(&self) -> &Server {
        &self.server
    }

    /// Stops the server as an operator would (SIGTERM: `ERROR
    /// shutting-down` to everyone) and waits for it to exit.
    pub fn stop(&mut self) {
        self.server.signal(libc::SIGTERM);
        assert!(
            self.server.wait_exit(TIMEOUT).is_some(),
            "the server did not stop"
        );
    }

    /// Starts the server again, at the same web address.
    pub fn restart(&mut self) {
        self.server = Self::spawn(&self.args, self.web);
    }
}

/// `chromedriver` on a free port, and the Chromium it starts; all killed
/// when dropped.
pub struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    profiles: PathBuf,
    next: std::sync::atomic::AtomicU32,
}

impl Driver {
    /// Starts `chromedriver`, or `None` when the test is to be skipped.
    pub fn start() -> Option<Driver> {
        if !browser_available() {
            return None;
        }
        // The harness builds the server before the first page needs it.
        binary("chat-server");
        let chromium = CHROMIUM_NAMES
            .iter()
            .find_map(|n| which(n))
            .expect("chromium");
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that dropping it ends the browsers too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("spawn chromedriver");
        wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "chromedriver");
        let profiles =
            std::env::temp_dir().join(format!("chat-browser-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profiles).expect("browser profile directory");
        Some(Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            profiles,
            next: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A new browser, of its own profile, showing `url` in a viewport of
    /// `width` x `height`, light.
    pub async fn page(&self, url: &str, width: u32, height: u32) -> Page {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = self.profiles.join(format!("profile-{n}"));
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let capabilities = json!({
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("start a Chromium session");
        let page = Page { client };
        page.viewport(width, height).await;
        page.scheme(false).await;
        page.client.goto(url).await.expect("open the page");
        page.wait_for("the login form", "!!document.getElementById('login-name')")
            .await;
        page
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we made for our own child.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// A Chrome DevTools command, through chromedriver: what WebDriver itself
/// cannot do (the viewport's exact size, the preferred color scheme).
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.0, "params": self.1 });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// One browser showing the chat page.
pub struct Page {
    client: Client,
}

impl Page {
    /// Sets the viewport to exactly `width` x `height` CSS pixels.
    pub async fn viewport(&self, width: u32, height: u32) {
        let params = json!({ "width": width, "height": height, "deviceScaleFactor": 1,
                             "mobile": width < 600 });
        self.cdp("Emulation.setDeviceMetricsOverride", params).await;
    }

    /// Emulates `prefers-color-scheme: dark` (or light).
    pub async fn scheme(&self, dark: bool) {
        let value = if dark { "dark" } else { "light" };
        let params = json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] });
        self.cdp("Emulation.setEmulatedMedia", params).await;
    }

    async fn cdp(&self, command: &'static str, params: Value) {
        self.client
            .issue_cmd(Cdp(command, params))
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until the expression `condition` is true in the page.
    pub async fn wait_for(&self, what: &str, condition: &str) {
        let script = format!("return !!({condition});");
        let start = Instant::now();
        loop {
            if self.client.execute(&script, vec![]).await.ok() == Some(Value::Bool(true)) {
                return;
            }
            if start.elapsed() > TIMEOUT {
                let shown = self.shown().await;
                panic!("timed out waiting for {what}; the page shows:\n{shown}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the page shows, as text, for failure messages.
    pub async fn shown(&self) -> String {
        self.js("return document.body.innerText;", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Types into the field `id` (replacing what it held).
    pub async fn fill(&self, id: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"));
        field.clear().await.expect("clear the field");
        if !text.is_empty() {
            field.send_keys(text).await.expect("type");
        }
    }

    /// Fills in the login form and submits it; returns at once.
    pub async fn try_login(&self, name: &str, password: &str) {
        self.js(
            "document.getElementById('login-error').textContent = '';",
            vec![],
        )
        .await;
        self.fill("login-name", name).await;
        self.fill("login-password", password).await;
        self.client
            .find(Locator::Id("login-button"))
            .await
            .expect("the login button")
            .click()
            .await
            .expect("click Log in");
    }

    /// Logs in and waits for the chat to show.
    pub async fn login(&self, name: &str, password: &str) {
        self.try_login(name, password).await;
        self.wait_for(
            &format!("{name} to be logged in"),
            "!document.getElementById('chat-view').hidden",
        )
        .await;
    }

    /// The refusal shown beside the login fields, once there is one.
    pub async fn login_error(&self) -> String {
        self.wait_for(
            "a login error",
            "document.getElementById('login-error').textContent !== ''",
        )
        .await;
        self.text_of("#login-error").await
    }

    /// Types `line` in the message field and presses Enter.
    pub async fn type_line(&self, line: &str) {
        let input = self
            .client
            .find(Locator::Id("input"))
            .await
            .expect("the message field");
        input
            .send_keys(&format!("{line}\u{e007}"))
            .await
            .expect("type a line");
    }

    /// Presses `keys` (WebDriver key codes too) in the message field.
    pub async fn press(&self, keys: &str) {
        let input = self
            .client
            .find(Locator::Id("input"))
            .await
            .expect("the message field");
        input.send_keys(keys).await.expect("press keys");
    }

    /// The text of the first element `selector` matches, or "".
    pub async fn text_of(&self, selector: &str) -> String {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';";
        self.js(script, vec![json!(selector)])
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the conversation in view shows a line containing `text`.
    pub async fn wait_for_line(&self, text: &str) {
        let condition = format!(
            "[...document.querySelectorAll('#log-holder .line')].some(l => l.textContent.includes({}))",
            json!(text)
        );
        self.wait_for(&format!("a line with {text:?}"), &condition)
            .await;
    }

    /// The live messages of the conversation in view, as `from: text`.
    pub async fn messages(&self) -> Vec<String> {
        self.lines("#log-holder .msg:not(.hist)").await
    }

    /// The messages from history of the conversation in view.
    pub async fn history(&self) -> Vec<String> {
        self.lines("#log-holder .msg.hist").await
    }

    async fn lines(&self, selector: &str) -> Vec<String> {
        let script = "return [...document.querySelectorAll(arguments[0])].map(l => \
             l.querySelector('.name').textContent + ': ' + l.lastElementChild.textContent);";
        let value = self.js(script, vec![json!(selector)]).await;
        serde_json::from_value(value).expect("a list of lines")
    }

    /// Shows the conversation whose sidebar entry reads `title`.
    pub async fn open(&self, title: &str) {
        let script = "const b = [...document.querySelectorAll('button.conv')]\
             .find(b => b.querySelector('.title, .name').textContent === arguments[0]);\
             if (!b) return false; b.click(); return true;";
        let found = self.js(script, vec![json!(title)]).await;
        assert_eq!(found, Value::Bool(true), "no conversation {title:?}");
        self.wait_for(
            &format!("{title} in view"),
            &format!(
                "document.getElementById('conv-title').textContent === {}",
                json!(title)
            ),
        )
        .await;
    }

    /// Whether an alert (or another prompt) is open.
    pub async fn alert_open(&self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }

    /// Writes a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("take a screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Ends the browser.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
