//! The browser client, end to end: the real `chat-server` with its web door,
//! headless Chromium through `chromedriver`, and plain TCP users beside the
//! browsers, as `nc` would be.
//!
//! Without `chromedriver` and Chromium each test says `SKIPPED <test>` and
//! passes, except in CI, where it fails (`.ci/run` installs both). The
//! tests run one at a time: each starts browsers, and two cores do not run
//! a dozen Chromiums at once in good time.
//!
//! `screenshots` writes the page at desktop and phone width, light and
//! dark, to `target/screenshots/`.

#[path = "browser/driver.rs"]
mod driver;

use chat_tests::Client;
use driver::{screenshot_dir, Driver, Page, WebServer};
use tokio::sync::{Mutex, MutexGuard};

/// One browser test at a time.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static BROWSERS: Mutex<()> = Mutex::const_new(());
    BROWSERS.lock().await
}

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

async fn desktop(driver: &Driver, server: &WebServer) -> Page {
    driver.page(&server.url(), DESKTOP.0, DESKTOP.1).await
}

/// A TCP user logged in as `name`, with the lobby's `NAMES` read.
async fn tcp_user(server: &WebServer, name: &str) -> Client {
    server.tcp().user(name).await
}

/// Reads frames until `count` of them start with `prefix`; returns those.
async fn collect(client: &mut Client, prefix: &str, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let line = client.recv().await;
        if let Some(rest) = line.strip_prefix(prefix) {
            got.push(rest.to_owned());
        }
    }
    got
}

/// Two browsers and a TCP user talk in the lobby and in a room, and all
/// three see the same messages in the same order; names wear chat-client's
/// colors.
#[tokio::test]
async fn browsers_and_a_tcp_user_chat_in_one_order() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let mut carol = tcp_user(&server, "carol").await;
    let alice = desktop(&driver, &server).await;
    alice.login("alice", "").await;
    let bob = desktop(&driver, &server).await;
    bob.login("bob", "").await;
    alice.wait_for_line("bob joined").await;
    carol.recv_until("JOIN bob").await;

    // The lobby: everyone speaks at once.
    alice.type_line("hello from alice").await;
    bob.type_line("hello from bob").await;
    carol.send("MSG hello from carol").await;
    alice.type_line("alice again").await;
    let order: Vec<String> = collect(&mut carol, "MSG ", 4)
        .await
        .iter()
        .map(|m| m.replacen(' ', ": ", 1))
        .collect();
    for page in [&alice, &bob] {
        page.wait_for_line("alice again").await;
        page.wait_for_line("hello from carol").await;
        page.wait_for_line("hello from bob").await;
        assert_eq!(page.messages().await, order);
    }
    // Own messages are set apart; everyone's name has chat-client's color.
    let own = alice
        .js(
            "return [...document.querySelectorAll('#log-holder .msg.own .name')].map(n => n.textContent);",
            vec![],
        )
        .await;
    assert_eq!(own, serde_json::json!(["alice", "alice"]));
    let colors = alice
        .js(
            "const c = {}; for (const n of document.querySelectorAll('#log-holder .msg .name')) \
             c[n.textContent] = n.className; return c;",
            vec![],
        )
        .await;
    assert_eq!(
        colors,
        serde_json::json!({"alice": "name c205", "bob": "name c39", "carol": "name c36"}),
        "the palette indices chat-client gives these names"
    );

    // A room: joined from the page's field and with /join, and over TCP.
    alice.fill("join-room", "#ops").await;
    alice
        .js(
            "document.querySelector('#join-form button').click();",
            vec![],
        )
        .await;
    alice.wait_for_line("you joined #ops").await;
    bob.type_line("/join #ops").await;
    bob.wait_for_line("you joined #ops").await;
    carol.send("JOIN #ops").await;
    carol.recv_until("NAMES #ops alice bob carol").await;
    for page in [&alice, &bob] {
        page.wait_for(
            "three members",
            "document.getElementById('members-title').textContent === 'Members (3)'",
        )
        .await;
    }
    bob.type_line("in the room").await;
    carol.send("SAY #ops carol too").await;
    alice.type_line("and alice").await;
    let order: Vec<String> = collect(&mut carol, "SAY #ops ", 3)
        .await
        .iter()
        .map(|m| m.replacen(' ', ": ", 1))
        .collect();
    for page in [&alice, &bob] {
        for text in ["in the room", "carol too", "and alice"] {
            page.wait_for_line(text).await;
        }
        assert_eq!(page.messages().await, order);
    }
    // The lobby kept its own messages meanwhile.
    alice.open("Lobby").await;
    assert_eq!(alice.messages().await.len(), 4);

    // A direct message, from TCP: a conversation of its own, unread until
    // opened.
    carol.send("TELL alice just for you").await;
    alice
        .wait_for(
            "an unread direct message",
            "[...document.querySelectorAll('button.conv')].some(b => \
             b.textContent.includes('carol') && b.querySelector('.badge'))",
        )
        .await;
    alice.open("carol").await;
    alice.wait_for_line("just for you").await;
    alice.type_line("thanks carol").await;
    carol.recv_until("TELL alice carol thanks carol").await;

    alice.close().await;
    bob.close().await;
}

/// A registered name logs in from the page only with its password; the
/// page says what was wrong beside the fields.
#[tokio::test]
async fn a_registered_name_logs_in_with_its_password() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let mut owner = tcp_user(&server, "reggie").await;
    owner.send("REGISTER correct-horse-9").await;
    owner.expect("REGISTERED reggie").await;
    owner.send("LEAVE").await;
    owner.expect("BYE").await;
    let mut dora = tcp_user(&server, "dora").await;

    let page = desktop(&driver, &server).await;
    page.try_login("dora", "").await;
    let error = page.login_error().await;
    assert!(error.contains("taken"), "{error}");
    page.try_login("reggie", "").await;
    let error = page.login_error().await;
    assert!(
        error.contains("registered name: enter its password"),
        "{error}"
    );
    page.try_login("reggie", "wrong-password").await;
    let error = page.login_error().await;
    assert!(error.contains("Wrong password"), "{error}");
    page.login("reggie", "correct-horse-9").await;
    dora.recv_until("JOIN reggie").await;
    page.type_line("it is me").await;
    dora.recv_until("MSG reggie it is me").await;
    page.close().await;
}

/// A room's recent history shows when the page joins it, oldest first, set
/// apart from what comes live.
#[tokio::test]
async fn a_rooms_history_appears_when_it_opens() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let mut carol = tcp_user(&server, "carol").await;
    carol.send("JOIN #books").await;
    carol.send("SAY #books first").await;
    carol.send("SAY #books second").await;
    carol.send("SAY #books third").await;
    carol.barrier().await;

    let page = desktop(&driver, &server).await;
    page.login("alice", "").await;
    page.type_line("/join #books").await;
    page.wait_for_line("third").await;
    assert_eq!(
        page.history().await,
        ["carol: first", "carol: second", "carol: third"]
    );
    carol.send("SAY #books fourth, live").await;
    page.wait_for_line("fourth, live").await;
    assert_eq!(page.messages().await, ["carol: fourth, live"]);
    page.close().await;
}

/// Markup in a message is text: no element is made from it, no script runs.
#[tokio::test]
async fn markup_in_messages_stays_text() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let mut mallory = tcp_user(&server, "mallory").await;
    let page = desktop(&driver, &server).await;
    page.login("alice", "").await;
    mallory.recv_until("JOIN alice").await;

    let attacks = [
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "<b>bold</b> &amp; <a href=\"javascript:alert(1)\">link</a>",
    ];
    for attack in attacks {
        mallory.send(&format!("MSG {attack}")).await;
    }
    mallory.send("JOIN #x").await;
    mallory.send("TOPIC #x <img src=x onerror=alert(2)>").await;
    page.type_line("<script>alert(3)</script>").await;
    page.wait_for_line("<script>alert(3)</script>").await;
    for attack in attacks {
        page.wait_for_line(attack).await;
    }
    let made = page
        .js(
            "return document.querySelectorAll('#log-holder img, #log-holder script, \
             #log-holder b, #log-holder a, #conv-topic img').length;",
            vec![],
        )
        .await;
    assert_eq!(
        made,
        serde_json::json!(0),
        "an element was made from a message"
    );
    page.type_line("/join #x").await;
    page.wait_for_line("topic: <img src=x onerror=alert(2)>")
        .await;
    assert_eq!(
        page.text_of("#conv-topic .text").await,
        "<img src=x onerror=alert(2)>"
    );
    assert!(!page.alert_open().await, "a script from a message ran");
    page.close().await;
}

/// The server stops and comes back: the page says it lost the connection,
/// logs in again by itself, rejoins its room, and chats on.
#[tokio::test]
async fn the_page_reconnects_after_a_server_restart() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let mut server = WebServer::start(&[]);
    let page = desktop(&driver, &server).await;
    page.login("alice", "").await;
    page.type_line("/join #ops").await;
    page.wait_for_line("you joined #ops").await;

    server.stop();
    page.wait_for(
        "the page to say it is reconnecting",
        "document.getElementById('status').textContent.includes('Reconnecting')",
    )
    .await;
    page.wait_for_line("connection lost").await;
    server.restart();
    page.wait_for(
        "the page to say it is back",
        "document.getElementById('status').textContent === 'Reconnected.'",
    )
    .await;
    page.wait_for_line("you are back in #ops").await;

    let mut carol = tcp_user(&server, "carol").await;
    carol.send("JOIN #ops").await;
    carol.recv_until("NAMES #ops alice carol").await;
    carol.send("SAY #ops welcome back").await;
    page.wait_for_line("welcome back").await;
    page.type_line("glad to be back").await;
    carol.recv_until("SAY #ops alice glad to be back").await;
    page.close().await;
}

/// Every ERROR is shown, in plain words with its code.
#[tokio::test]
async fn an_error_is_shown() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let page = desktop(&driver, &server).await;
    page.login("alice", "").await;
    page.type_line("/msg ghost are you there?").await;
    page.wait_for(
        "the error",
        "[...document.querySelectorAll('#log-holder .line.error')].some(l => \
         l.textContent.includes('no-such-user') && l.textContent.includes('Nobody is logged in'))",
    )
    .await;
    page.type_line("/join #ops").await;
    page.wait_for_line("you joined #ops").await;
    page.type_line("/join bad!room").await;
    page.wait_for(
        "the usage error",
        "[...document.querySelectorAll('#log-holder .line.error')].some(l => \
         l.textContent.includes('is not a room'))",
    )
    .await;
    page.close().await;
}

/// Keyboard first: Up recalls the previous line, Tab completes a name
/// (as `name: ` at the start of a message, as chat-client does).
#[tokio::test]
async fn up_recalls_and_tab_completes() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let _bart = tcp_user(&server, "bartholomew").await;
    let page = desktop(&driver, &server).await;
    page.login("alice", "").await;
    page.type_line("first line").await;
    page.wait_for_line("first line").await;
    let value = "document.getElementById('input').value";
    page.press("\u{e013}").await;
    page.wait_for("Up to recall", &format!("{value} === 'first line'"))
        .await;
    page.fill("input", "bart").await;
    page.press("\u{e004}").await;
    page.wait_for("Tab to complete", &format!("{value} === 'bartholomew: '"))
        .await;
    page.close().await;
}

/// At a phone's width the page fits: no horizontal scroll, even with a long
/// word in a message.
#[tokio::test]
async fn the_page_fits_a_phone() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let page = driver.page(&server.url(), PHONE.0, PHONE.1).await;
    let fits = "document.documentElement.scrollWidth <= 390";
    assert_eq!(
        page.js(&format!("return {fits};"), vec![]).await,
        serde_json::json!(true),
        "the login form is wider than the phone"
    );
    page.login("alice", "").await;
    page.type_line("/join #a-room-with-a-rather-long-name")
        .await;
    page.wait_for_line("you joined").await;
    page.type_line(&"x".repeat(300)).await;
    page.wait_for_line("xxxxxxxxxx").await;
    let width = page
        .js("return document.documentElement.scrollWidth;", vec![])
        .await;
    assert!(
        width.as_u64().is_some_and(|w| w <= 390),
        "scrollWidth {width}"
    );
    page.close().await;
}

/// The page at desktop and phone width, light and dark, for people to look
/// at: `target/screenshots/{desktop,phone}-{light,dark}.png`.
#[tokio::test]
async fn screenshots() {
    let _turn = one_at_a_time().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let server = WebServer::start(&[]);
    let mut carol = tcp_user(&server, "carol").await;
    let mut dave = tcp_user(&server, "dave").await;
    carol.send("MSG morning all").await;
    dave.send("MSG morning carol").await;
    carol.send("JOIN #rust").await;
    carol
        .send("TOPIC #rust async book club, chapter 3 this week")
        .await;
    carol
        .send("SAY #rust has anyone got to the part on pinning?")
        .await;
    dave.send("JOIN #rust").await;
    dave.send("SAY #rust yes: Pin<&mut Self> finally made sense")
        .await;
    dave.barrier().await;
    carol.barrier().await;

    let page = desktop(&driver, &server).await;
    page.login("alice", "").await;
    page.type_line("/join #rust").await;
    page.wait_for_line("finally made sense").await;
    page.type_line("not yet, I am on chapter 2").await;
    page.wait_for_line("chapter 2").await;
    carol.send("SAY #rust no rush, we meet on Friday").await;
    dave.send("TELL alice are you coming on Friday?").await;
    carol.send("JOIN #design").await;
    page.wait_for_line("we meet on Friday").await;
    page.wait_for(
        "the unread direct message",
        "document.querySelector('button.conv .badge')",
    )
    .await;

    let dir = screenshot_dir();
    for (size, (width, height)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        page.viewport(width, height).await;
        for (scheme, dark) in [("light", false), ("dark", true)] {
            page.scheme(dark).await;
            let path = dir.join(format!("{size}-{scheme}.png"));
            page.screenshot(&path).await;
            let png = std::fs::read(&path).expect("read the screenshot");
            assert!(png.starts_with(b"\x89PNG"), "{} is no PNG", path.display());
        }
    }
    page.close().await;
}
