//! The single-process hub driven as a session drives it, without sockets:
//! users log in with an inbox each, requests go through the [`Hub`]'s
//! methods, and each test reads what every inbox got, as the text a client
//! would have read.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chat_protocol::ErrorCode;
use tokio_util::sync::CancellationToken;

use super::accounts::{Accounts, Backend};
use super::{Done, Hub, Limits, Outcome, Outgoing, User};
use crate::passwords::Hasher;
use crate::store::Store;

/// Frames an inbox holds: enough that no test ever makes a publisher wait.
const BACKLOG: usize = 64;

const LIMITS: Limits = Limits {
    max_rooms: 10,
    max_rooms_per_user: 5,
    max_rooms_per_ip: 200,
    limits_on_loopback: false,
    history: 100,
    history_memory: 64 << 20,
};

fn hub() -> Hub {
    hub_with(LIMITS)
}

fn hub_with(limits: Limits) -> Hub {
    start(BACKLOG, limits, CancellationToken::new())
}

/// A local hub with accounts kept in memory.
fn start(backlog: usize, limits: Limits, shutdown: CancellationToken) -> Hub {
    let accounts = Accounts::new(
        Backend::Disk(Store::ephemeral(limits.history)),
        Hasher::for_tests(),
        &[],
        false,
    );
    Hub::start_local(backlog, limits, Arc::new(accounts), shutdown).0
}

/// `NAME name`, as its answer comes back: the user, or the refusal.
async fn enter(hub: &Hub, name: &str) -> Result<User, ErrorCode> {
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Outcome::Wait(login) = hub.enter(name.to_owned(), None, hub.inbox(), peer) else {
        panic!("a login waits for the hub");
    };
    match login.await {
        Done::Entered(entered) => entered.map_err(|refusal| refusal.code),
        _ => panic!("a login is answered with Entered"),
    }
}

/// Logs `name` in and empties its inbox of the login's own frames.
async fn login(hub: &Hub, name: &str) -> User {
    let user = enter(hub, name).await.expect("the name is free");
    settle([&user]);
    user
}

/// Everything `user`'s inbox holds, taken out, as the client would read it.
fn text(user: &User) -> String {
    let mut out = Outgoing::default();
    user.inbox().take(&mut out, usize::MAX);
    String::from_utf8(out.bytes.to_vec()).expect("frames are UTF-8")
}

/// Empties the inboxes of `users`: what a test checks starts after this.
fn settle<'a>(users: impl IntoIterator<Item = &'a User>) {
    for user in users {
        text(user);
    }
}

/// Carries out a request as the session does: waits for it if it must,
/// and applies what it changed for the user.
async fn run(user: &mut User, outcome: Outcome) -> Result<(), ErrorCode> {
    let done = match outcome {
        Outcome::Done => return Ok(()),
        Outcome::Refused(refusal) => return Err(refusal.code),
        Outcome::Wait(pending) | Outcome::InFlight(pending) => pending.await,
    };
    match done {
        Done::Updated(Ok(update)) => {
            user.apply(update);
            Ok(())
        }
        Done::Updated(Err(refusal)) => Err(refusal.code),
        Done::Left => Ok(()),
        Done::Entered(_) => panic!("a logged-in user's request answered as a login"),
    }
}

async fn say(hub: &Hub, user: &mut User, room: Option<&str>, said: &str) {
    let outcome = hub.publish(user, room, said.to_owned());
    run(user, outcome).await.expect("published");
}

async fn join(hub: &Hub, user: &mut User, room: &str) -> Result<(), ErrorCode> {
    let outcome = hub.join(user, room.to_owned());
    run(user, outcome).await
}

/// Logs users in and puts them all in `room`, with their inboxes emptied.
async fn members(hub: &Hub, room: &str, names: &[&str]) -> Vec<User> {
    let mut users = Vec::new();
    for name in names {
        users.push(login(hub, name).await);
    }
    for user in &mut users {
        join(hub, user, room).await.expect("joined");
    }
    settle(&users);
    users
}

// Logging in

#[tokio::test]
async fn a_login_is_welcomed_with_the_names_and_announced_to_the_others() {
    let hub = hub();
    let bob = login(&hub, "bob").await;
    let alice = enter(&hub, "alice").await.expect("free");
    assert_eq!(text(&alice), "WELCOME alice\nNAMES alice bob\n");
    assert_eq!(text(&bob), "JOIN alice\n");
}

#[tokio::test]
async fn a_name_in_use_is_taken_whatever_its_case_and_nobody_hears_of_it() {
    let hub = hub();
    let alice = login(&hub, "Alice").await;
    assert_eq!(enter(&hub, "alice").await.err(), Some(ErrorCode::NameTaken));
    assert_eq!(enter(&hub, "ALICE").await.err(), Some(ErrorCode::NameTaken));
    assert_eq!(text(&alice), "");
}

#[tokio::test]
async fn names_are_sorted_by_lower_cased_name_and_spelled_as_logged_in() {
    let hub = hub();
    login(&hub, "carol").await;
    login(&hub, "Bob").await;
    let mut alice = login(&hub, "alice").await;
    let outcome = hub.who(&mut alice, None);
    run(&mut alice, outcome).await.expect("answered");
    assert_eq!(text(&alice), "NAMES alice Bob carol\n");
}

// MSG and SAY

#[tokio::test]
async fn msg_reaches_everyone_the_sender_too_in_one_order() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let mut bob = login(&hub, "bob").await;
    settle([&alice]);
    say(&hub, &mut alice, None, "hi  bob ").await;
    say(&hub, &mut bob, None, "hi alice").await;
    say(&hub, &mut alice, None, "bye").await;
    let expected = "MSG alice hi  bob \nMSG bob hi alice\nMSG alice bye\n";
    assert_eq!(text(&alice), expected);
    assert_eq!(text(&bob), expected);
}

#[tokio::test]
async fn say_reaches_only_the_rooms_members() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice", "bob"]).await;
    let carol = login(&hub, "carol").await;
    settle(&users);
    say(&hub, &mut users[0], Some("#RUST"), "hi both").await;
    for member in &users {
        assert_eq!(text(member), "SAY #rust alice hi both\n");
    }
    assert_eq!(text(&carol), "");
}

#[tokio::test]
async fn say_in_a_room_the_user_is_not_in_is_refused_and_reaches_nobody() {
    let hub = hub();
    let users = members(&hub, "#rust", &["alice"]).await;
    let mut bob = login(&hub, "bob").await;
    let outcome = hub.publish(&mut bob, Some("#rust"), "hi".to_owned());
    assert_eq!(run(&mut bob, outcome).await, Err(ErrorCode::NotInRoom));
    assert_eq!(text(&users[0]), "JOIN bob\n");
    assert_eq!(text(&bob), "");
}

// JOIN and PART

#[tokio::test]
async fn a_joiner_gets_the_names_and_the_others_its_join() {
    let hub = hub();
    let users = members(&hub, "#Rust", &["bob"]).await;
    let mut alice = login(&hub, "alice").await;
    settle([&users[0]]);
    join(&hub, &mut alice, "#rust").await.expect("joined");
    assert_eq!(text(&alice), "NAMES #Rust alice bob\n");
    assert_eq!(text(&users[0]), "JOIN #Rust alice\n");
}

#[tokio::test]
async fn a_joiner_gets_the_topic_after_the_names_when_one_is_set() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["bob"]).await;
    let outcome = hub.topic(&mut users[0], "#rust", Some("async book club".to_owned()));
    run(&mut users[0], outcome).await.expect("set");
    let mut alice = login(&hub, "alice").await;
    join(&hub, &mut alice, "#rust").await.expect("joined");
    assert_eq!(
        text(&alice),
        "NAMES #rust alice bob\nTOPIC #rust bob async book club\n"
    );
}

#[tokio::test]
async fn part_reaches_every_member_the_leaver_too() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice", "bob"]).await;
    let carol = login(&hub, "carol").await;
    settle(&users);
    let outcome = hub.part(&mut users[0], "#rust", Some("later".to_owned()));
    run(&mut users[0], outcome).await.expect("parted");
    for member in &users {
        assert_eq!(text(member), "LEAVE #rust alice later\n");
    }
    assert_eq!(text(&carol), "");
    let outcome = hub.publish(&mut users[0], Some("#rust"), "still here?".to_owned());
    assert_eq!(run(&mut users[0], outcome).await, Err(ErrorCode::NotInRoom));
}

#[tokio::test]
async fn the_last_part_forgets_the_room_its_topic_and_history() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice"]).await;
    let alice = &mut users[0];
    let outcome = hub.topic(alice, "#rust", Some("old".to_owned()));
    run(alice, outcome).await.expect("set");
    say(&hub, alice, Some("#rust"), "old news").await;
    let outcome = hub.part(alice, "#rust", None);
    run(alice, outcome).await.expect("parted");
    join(&hub, alice, "#Rust").await.expect("joined");
    settle([&*alice]);
    let outcome = hub.topic(alice, "#rust", None);
    run(alice, outcome).await.expect("asked");
    let outcome = hub.history(alice, Some("#rust"), 50);
    run(alice, outcome).await.expect("asked");
    assert_eq!(text(alice), "TOPIC #Rust\nHISTORY #Rust 0\n");
}

// Refusals change nothing

#[tokio::test]
async fn part_of_a_room_the_user_is_not_in_is_refused() {
    let hub = hub();
    let users = members(&hub, "#rust", &["alice"]).await;
    let mut bob = login(&hub, "bob").await;
    settle([&users[0]]);
    let outcome = hub.part(&mut bob, "#rust", None);
    assert_eq!(run(&mut bob, outcome).await, Err(ErrorCode::NotInRoom));
    assert_eq!(text(&users[0]), "");
    assert_eq!(text(&bob), "");
}

#[tokio::test]
async fn a_second_join_is_refused_and_nobody_hears_of_it() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice", "bob"]).await;
    assert_eq!(
        join(&hub, &mut users[0], "#RUST").await,
        Err(ErrorCode::AlreadyInRoom)
    );
    for member in &users {
        assert_eq!(text(member), "");
    }
}

#[tokio::test]
async fn a_join_beyond_the_rooms_per_user_is_refused() {
    let hub = hub_with(Limits {
        max_rooms_per_user: 2,
        ..LIMITS
    });
    let mut alice = login(&hub, "alice").await;
    join(&hub, &mut alice, "#a").await.expect("joined");
    join(&hub, &mut alice, "#b").await.expect("joined");
    settle([&alice]);
    assert_eq!(
        join(&hub, &mut alice, "#c").await,
        Err(ErrorCode::TooManyRooms)
    );
    let outcome = hub.list_rooms(&mut alice);
    run(&mut alice, outcome).await.expect("listed");
    assert_eq!(text(&alice), "ROOMS #a 1 #b 1\n");
}

#[tokio::test]
async fn a_new_room_beyond_the_servers_rooms_is_refused_but_an_existing_one_is_not() {
    let hub = hub_with(Limits {
        max_rooms: 1,
        ..LIMITS
    });
    let users = members(&hub, "#a", &["alice"]).await;
    let mut bob = login(&hub, "bob").await;
    settle([&users[0]]);
    assert_eq!(
        join(&hub, &mut bob, "#b").await,
        Err(ErrorCode::TooManyRooms)
    );
    assert_eq!(text(&users[0]), "");
    assert_eq!(text(&bob), "");
    join(&hub, &mut bob, "#a").await.expect("the room exists");
    let outcome = hub.list_rooms(&mut bob);
    run(&mut bob, outcome).await.expect("listed");
    assert_eq!(text(&bob), "NAMES #a alice bob\nROOMS #a 2\n");
}

#[tokio::test]
async fn the_users_of_one_address_share_max_rooms_per_ip_until_they_part_or_go() {
    let hub = hub_with(Limits {
        max_rooms_per_ip: 3,
        limits_on_loopback: true,
        ..LIMITS
    });
    let mut alice = login(&hub, "alice").await;
    let mut bob = login(&hub, "bob").await;
    join(&hub, &mut alice, "#a").await.expect("joined");
    join(&hub, &mut alice, "#b").await.expect("joined");
    join(&hub, &mut bob, "#a")
        .await
        .expect("one room more: three");
    assert_eq!(
        join(&hub, &mut bob, "#c").await,
        Err(ErrorCode::TooManyRooms),
        "a fourth membership of the address"
    );
    assert_eq!(
        join(&hub, &mut alice, "#d").await,
        Err(ErrorCode::TooManyRooms)
    );
    let outcome = hub.part(&mut alice, "#b", None);
    run(&mut alice, outcome).await.expect("parted");
    join(&hub, &mut bob, "#c").await.expect("a PART frees one");
    hub.quit(alice, "closed").await;
    join(&hub, &mut bob, "#d")
        .await
        .expect("a user gone frees its rooms");
    assert_eq!(
        join(&hub, &mut bob, "#e").await,
        Err(ErrorCode::TooManyRooms)
    );
}

#[tokio::test]
async fn loopback_is_spared_max_rooms_per_ip_by_default() {
    let hub = hub_with(Limits {
        max_rooms_per_ip: 1,
        ..LIMITS
    });
    let mut alice = login(&hub, "alice").await;
    join(&hub, &mut alice, "#a").await.expect("joined");
    join(&hub, &mut alice, "#b").await.expect("not counted");
}

// TELL

#[tokio::test]
async fn tell_reaches_the_receiver_and_the_sender_spelled_as_logged_in() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let bob = login(&hub, "Bob").await;
    let carol = login(&hub, "carol").await;
    settle([&alice, &bob]);
    let outcome = hub.tell(&mut alice, "BOB", "see you at 5?".to_owned());
    run(&mut alice, outcome).await.expect("told");
    assert_eq!(text(&alice), "TELL alice Bob see you at 5?\n");
    assert_eq!(text(&bob), "TELL alice Bob see you at 5?\n");
    assert_eq!(text(&carol), "");
}

#[tokio::test]
async fn tell_to_yourself_reaches_you_once() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let outcome = hub.tell(&mut alice, "Alice", "note".to_owned());
    run(&mut alice, outcome).await.expect("told");
    assert_eq!(text(&alice), "TELL alice alice note\n");
}

#[tokio::test]
async fn tell_to_nobody_is_no_such_user() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let outcome = hub.tell(&mut alice, "nobody", "hello?".to_owned());
    assert_eq!(run(&mut alice, outcome).await, Err(ErrorCode::NoSuchUser));
    assert_eq!(text(&alice), "");
}

// TOPIC

#[tokio::test]
async fn a_topic_set_reaches_every_member_and_is_answered_when_asked() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice", "bob"]).await;
    let outcome = hub.topic(&mut users[1], "#rust", None);
    run(&mut users[1], outcome).await.expect("asked");
    assert_eq!(text(&users[1]), "TOPIC #rust\n");
    let outcome = hub.topic(&mut users[0], "#rust", Some("async book club".to_owned()));
    run(&mut users[0], outcome).await.expect("set");
    for member in &users {
        assert_eq!(text(member), "TOPIC #rust alice async book club\n");
    }
    let outcome = hub.topic(&mut users[1], "#RUST", None);
    run(&mut users[1], outcome).await.expect("asked");
    assert_eq!(text(&users[1]), "TOPIC #rust alice async book club\n");
    assert_eq!(text(&users[0]), "");
}

#[tokio::test]
async fn a_topic_of_a_room_the_user_is_not_in_is_refused() {
    let hub = hub();
    let users = members(&hub, "#rust", &["alice"]).await;
    let mut bob = login(&hub, "bob").await;
    settle([&users[0]]);
    for asked in [None, Some("mine now".to_owned())] {
        let outcome = hub.topic(&mut bob, "#rust", asked);
        assert_eq!(run(&mut bob, outcome).await, Err(ErrorCode::NotInRoom));
    }
    assert_eq!(text(&users[0]), "");
    assert_eq!(text(&bob), "");
}

// WHO and ROOMS

#[tokio::test]
async fn who_of_a_room_answers_members_and_non_members_alike() {
    let hub = hub();
    let mut users = members(&hub, "#Rust", &["bob", "alice"]).await;
    let mut carol = login(&hub, "carol").await;
    settle(&users);
    for user in [&mut users[0], &mut carol] {
        let outcome = hub.who(user, Some("#rust"));
        run(user, outcome).await.expect("answered");
        assert_eq!(text(user), "NAMES #Rust alice bob\n");
    }
}

#[tokio::test]
async fn who_of_a_room_that_does_not_exist_is_an_empty_names() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let outcome = hub.who(&mut alice, Some("#Nowhere"));
    run(&mut alice, outcome).await.expect("answered");
    assert_eq!(text(&alice), "NAMES #Nowhere\n");
}

#[tokio::test]
async fn rooms_are_listed_sorted_like_names_with_their_counts() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let outcome = hub.list_rooms(&mut alice);
    run(&mut alice, outcome).await.expect("listed");
    assert_eq!(text(&alice), "ROOMS\n");
    let mut users = members(&hub, "#b", &["bob", "carol"]).await;
    for room in ["#C", "#a"] {
        join(&hub, &mut alice, room).await.expect("joined");
    }
    settle([&alice]);
    let outcome = hub.list_rooms(&mut alice);
    run(&mut alice, outcome).await.expect("listed");
    assert_eq!(text(&alice), "ROOMS #a 1 #b 2 #C 1\n");
    // The listing is kept, but never outlives a change.
    let outcome = hub.part(&mut alice, "#c", None);
    run(&mut alice, outcome).await.expect("parted");
    hub.quit(users.pop().expect("carol"), "closed").await;
    settle([&alice]);
    let outcome = hub.list_rooms(&mut alice);
    run(&mut alice, outcome).await.expect("listed");
    assert_eq!(text(&alice), "ROOMS #a 1 #b 1\n");
}

// HISTORY

/// The `HIST` lines of a reply without their times, for comparing.
fn untimed(reply: &str) -> Vec<String> {
    reply
        .lines()
        .map(|line| match line.strip_prefix("HIST ") {
            Some(hist) => {
                let mut words: Vec<&str> = hist.split(' ').collect();
                let time = if words[0].starts_with('#') { 1 } else { 0 };
                words.remove(time);
                format!("HIST {}", words.join(" "))
            }
            None => line.to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn history_of_the_lobby_holds_its_last_messages_oldest_first() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let mut users = members(&hub, "#rust", &["bob"]).await;
    for said in ["one", "two", "three"] {
        say(&hub, &mut alice, None, said).await;
    }
    say(&hub, &mut users[0], Some("#rust"), "not the lobby's").await;
    settle([&alice]);
    let outcome = hub.history(&mut alice, None, 2);
    run(&mut alice, outcome).await.expect("answered");
    let reply = text(&alice);
    assert_eq!(
        untimed(&reply),
        ["HISTORY 2", "HIST alice two", "HIST alice three"]
    );
    let time = reply.lines().nth(1).and_then(|l| l.split(' ').nth(1));
    assert!(time.is_some_and(|t| t.ends_with('Z')), "{reply}");
}

#[tokio::test]
async fn history_of_a_room_holds_its_says_only() {
    let hub = hub();
    let mut users = members(&hub, "#Rust", &["alice", "bob"]).await;
    say(&hub, &mut users[1], Some("#rust"), "anyone here?").await;
    say(&hub, &mut users[0], None, "lobby").await;
    say(&hub, &mut users[0], Some("#rust"), "hi  both").await;
    settle([&users[0]]);
    let outcome = hub.history(&mut users[0], Some("#rust"), 50);
    run(&mut users[0], outcome).await.expect("answered");
    assert_eq!(
        untimed(&text(&users[0])),
        [
            "HISTORY #Rust 2",
            "HIST #Rust bob anyone here?",
            "HIST #Rust alice hi  both"
        ]
    );
}

#[tokio::test]
async fn history_is_served_up_to_what_is_kept() {
    let hub = hub_with(Limits {
        history: 2,
        ..LIMITS
    });
    let mut alice = login(&hub, "alice").await;
    for said in ["one", "two", "three"] {
        say(&hub, &mut alice, None, said).await;
    }
    settle([&alice]);
    let outcome = hub.history(&mut alice, None, 1000);
    run(&mut alice, outcome).await.expect("answered");
    assert_eq!(
        untimed(&text(&alice)),
        ["HISTORY 2", "HIST alice two", "HIST alice three"]
    );
}

#[tokio::test]
async fn history_memory_forgets_the_oldest_of_the_room_that_holds_the_most() {
    let hub = hub_with(Limits {
        history_memory: 1600,
        ..LIMITS
    });
    let mut ann = login(&hub, "ann").await;
    join(&hub, &mut ann, "#big").await.expect("joined");
    join(&hub, &mut ann, "#small").await.expect("joined");
    let text100 = |n: usize| format!("{n:03}{}", "x".repeat(97));
    say(&hub, &mut ann, None, &text100(0)).await;
    for n in 0..3 {
        say(&hub, &mut ann, Some("#small"), &text100(n)).await;
    }
    for n in 0..40 {
        say(&hub, &mut ann, Some("#big"), &text100(n)).await;
    }
    let memory = hub.rooms().memory();
    assert!(memory.used() <= 1600, "{} bytes kept", memory.used());
    settle([&ann]);
    fn kept(hub: &Hub, user: &mut User, room: Option<&str>) -> Vec<String> {
        let outcome = hub.history(user, room, 100);
        assert!(matches!(outcome, Outcome::Done));
        let reply = untimed(&text(user));
        reply
            .into_iter()
            .filter(|l| l.starts_with("HIST "))
            .collect()
    }
    assert_eq!(
        kept(&hub, &mut ann, Some("#small")).len(),
        3,
        "the smaller rooms keep theirs"
    );
    assert_eq!(kept(&hub, &mut ann, None).len(), 1, "the lobby too");
    let big = kept(&hub, &mut ann, Some("#big"));
    assert!(big.len() >= 5 && big.len() < 40, "{} kept", big.len());
    assert!(
        big.last().is_some_and(|l| l.contains("039")),
        "the newest: {big:?}"
    );
    let outcome = hub.part(&mut ann, "#big", None);
    run(&mut ann, outcome).await.expect("parted");
    assert_eq!(
        memory.used(),
        4 * 103,
        "a forgotten room gives its bytes back"
    );
}

#[tokio::test]
async fn history_of_a_room_the_user_is_not_in_is_refused() {
    let hub = hub();
    members(&hub, "#rust", &["alice"]).await;
    let mut bob = login(&hub, "bob").await;
    let outcome = hub.history(&mut bob, Some("#rust"), 50);
    assert_eq!(run(&mut bob, outcome).await, Err(ErrorCode::NotInRoom));
    assert_eq!(text(&bob), "");
}

// PING

#[tokio::test]
async fn pong_comes_after_every_earlier_frame() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let mut bob = login(&hub, "bob").await;
    settle([&alice]);
    say(&hub, &mut bob, None, "first").await;
    say(&hub, &mut alice, None, "second").await;
    let outcome = hub.sync(&mut alice, Some("t1".to_owned()));
    run(&mut alice, outcome).await.expect("synced");
    assert_eq!(text(&alice), "MSG bob first\nMSG alice second\nPONG t1\n");
    let outcome = hub.sync(&mut alice, None);
    run(&mut alice, outcome).await.expect("synced");
    assert_eq!(text(&alice), "PONG\n");
}

// LEAVE and going away

#[tokio::test]
async fn a_leaver_gets_everything_before_its_leave_and_the_others_its_text() {
    let hub = hub();
    let mut alice = login(&hub, "alice").await;
    let mut bob = login(&hub, "bob").await;
    settle([&alice]);
    say(&hub, &mut bob, None, "wait").await;
    let outcome = hub.leave(&mut alice, Some("see you".to_owned()));
    assert!(matches!(outcome, Outcome::Wait(_)));
    run(&mut alice, outcome).await.expect("left");
    assert_eq!(text(&alice), "MSG bob wait\n");
    assert_eq!(text(&bob), "MSG bob wait\nLEAVE alice see you\n");
    hub.quit(alice, "closed").await;
    let mut carol = login(&hub, "carol").await;
    let outcome = hub.who(&mut carol, None);
    run(&mut carol, outcome).await.expect("answered");
    assert_eq!(text(&carol), "NAMES bob carol\n", "one LEAVE, not two");
    assert_eq!(text(&bob), "JOIN carol\n");
}

#[tokio::test]
async fn a_leaver_leaves_its_rooms_silently() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice", "bob"]).await;
    let mut alice = users.remove(0);
    let outcome = hub.leave(&mut alice, None);
    run(&mut alice, outcome).await.expect("left");
    assert_eq!(text(&users[0]), "LEAVE alice\n");
    let outcome = hub.who(&mut users[0], Some("#rust"));
    run(&mut users[0], outcome).await.expect("answered");
    assert_eq!(text(&users[0]), "NAMES #rust bob\n");
}

#[tokio::test]
async fn a_room_left_empty_by_a_leaver_is_forgotten() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice"]).await;
    let mut bob = login(&hub, "bob").await;
    let outcome = hub.leave(&mut users[0], None);
    run(&mut users[0], outcome).await.expect("left");
    let outcome = hub.list_rooms(&mut bob);
    run(&mut bob, outcome).await.expect("listed");
    assert_eq!(text(&bob), "LEAVE alice\nROOMS\n");
}

#[tokio::test]
async fn quit_frees_the_name_and_the_others_hear_a_plain_leave() {
    let hub = hub();
    let mut users = members(&hub, "#rust", &["alice", "bob"]).await;
    let alice = users.remove(0);
    hub.quit(alice, "closed").await;
    let again = enter(&hub, "ALICE").await.expect("the name is free again");
    assert_eq!(text(&again), "WELCOME ALICE\nNAMES ALICE bob\n");
    assert_eq!(text(&users[0]), "LEAVE alice\nJOIN ALICE\n");
    let outcome = hub.who(&mut users[0], Some("#rust"));
    run(&mut users[0], outcome).await.expect("answered");
    assert_eq!(text(&users[0]), "NAMES #rust bob\n");
}

#[tokio::test]
async fn a_user_who_goes_during_shutdown_is_not_announced() {
    let shutdown = CancellationToken::new();
    let hub = start(BACKLOG, LIMITS, shutdown.clone());
    let alice = login(&hub, "alice").await;
    let bob = login(&hub, "bob").await;
    settle([&alice]);
    shutdown.cancel();
    hub.quit(alice, "shutting down").await;
    // The hub serves leaves before logins: by carol's, alice is gone.
    let carol = enter(&hub, "carol").await.expect("free");
    assert_eq!(text(&carol), "WELCOME carol\nNAMES bob carol\n");
    assert_eq!(text(&bob), "JOIN carol\n");
}

// Flow control

#[tokio::test]
async fn a_publish_waits_for_every_receiver_a_backlog_behind() {
    let hub = start(2, LIMITS, CancellationToken::new());
    let mut alice = login(&hub, "alice").await;
    let bob = login(&hub, "bob").await;
    settle([&alice]);
    say(&hub, &mut alice, None, "one").await;
    say(&hub, &mut alice, None, "two").await;
    let Outcome::Wait(pending) = hub.publish(&mut alice, None, "three".to_owned()) else {
        panic!("a publish over a full inbox waits");
    };
    let publisher = tokio::spawn(pending);
    let expected = "MSG alice one\nMSG alice two\nMSG alice three\n";
    assert_eq!(text(&alice), expected);
    tokio::task::yield_now().await;
    assert!(!publisher.is_finished(), "bob is still a backlog behind");
    assert_eq!(text(&bob), expected);
    assert!(matches!(
        publisher.await.expect("ran"),
        Done::Updated(Ok(_))
    ));
}
