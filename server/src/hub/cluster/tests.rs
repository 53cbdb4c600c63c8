//! The hub in cluster mode, without Redis: each test holds the far ends
//! of a [`Bus`] and plays the driver (it takes each script call, checks
//! which script it runs with which keys and arguments, and answers it as
//! Redis would) and, where a reply is placed among the stream's frames,
//! the node.

use chat_protocol::{room_key, ErrorCode};
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::calls::Call;
use super::driver::Command;
use super::node::{RoomEntering, SyncRequest, Waiter};
use super::scripts::{self, Scripts, STREAM_MAXLEN};
use super::{Bus, Reply};
use crate::hub::{lock, Done, Hub, Limits, Outcome, Outgoing, Receipt, Update, User, Welcome};

const BACKLOG: usize = 64;

const LIMITS: Limits = Limits {
    max_rooms: 10,
    max_rooms_per_user: 5,
    max_rooms_per_ip: 200,
    limits_on_loopback: false,
    history: 100,
    history_memory: 64 << 20,
};

/// What the driver and the node would receive from this node's sessions.
struct Ends {
    commands: mpsc::Receiver<Command>,
    syncs: mpsc::Receiver<SyncRequest>,
    joins: mpsc::Receiver<RoomEntering>,
}

/// A hub in cluster mode whose bus ends here.
fn cluster_hub(limits: Limits) -> (Hub, Ends) {
    let (commands, commands_rx) = mpsc::channel(8);
    let (syncs, syncs_rx) = mpsc::channel(8);
    let (joins, joins_rx) = mpsc::channel(8);
    let bus = Bus {
        commands,
        syncs,
        joins,
    };
    let (hub, _requests) = Hub::channels(BACKLOG, limits, Some(bus));
    let ends = Ends {
        commands: commands_rx,
        syncs: syncs_rx,
        joins: joins_rx,
    };
    (hub, ends)
}

/// A user as the node hands it over after a granted login.
fn user(hub: &Hub, name: &str) -> User {
    let welcome = Welcome {
        name: name.into(),
        evicted: None,
    };
    let peer = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    User::new(welcome, hub.inbox(), peer, false)
}

/// Puts `user` in `room` here, as the node does when its `JOIN` comes back.
fn enter_room(hub: &Hub, user: &mut User, room: &str) {
    let shared = hub.rooms().admit(room, &user.key(), user.member.clone());
    user.apply(Update::Joined(room_key(room), shared));
}

/// Everything `user`'s inbox holds, taken out.
fn text(user: &User) -> String {
    let mut out = Outgoing::default();
    user.inbox().take(&mut out, usize::MAX);
    String::from_utf8(out.bytes.to_vec()).expect("frames are UTF-8")
}

type Answer = oneshot::Sender<Result<Reply, ErrorCode>>;

impl Ends {
    /// The next script call the driver would carry, and where to answer it.
    async fn call(&mut self) -> (Call, Answer) {
        match self.commands.recv().await {
            Some(Command::Call { call, reply }) => (call, reply),
            Some(_) => panic!("expected a script call, got another command"),
            None => panic!("the bus was dropped"),
        }
    }

    /// Whether nothing was sent to the driver.
    fn no_call(&mut self) -> bool {
        matches!(
            self.commands.try_recv(),
            Err(mpsc::error::TryRecvError::Empty)
        )
    }

    /// Plays the node once the stream has reached the entry a reply was
    /// read at: puts the reply in the asker's inbox. Returns that entry.
    async fn place(&mut self) -> Receipt {
        match self.syncs.recv().await {
            Some((at, Waiter::Place(inbox, reply, placed))) => {
                inbox.push_reply(reply);
                let _ = placed.send(());
                at
            }
            Some(_) => panic!("expected a reply to place, got a wait"),
            None => panic!("the bus was dropped"),
        }
    }
}

/// Which script a call runs.
fn script(call: &Call) -> &'static str {
    let scripts = Scripts::new();
    let hash = (call.script)(&scripts).get_hash();
    let named = [
        ("say", &scripts.say),
        ("join", &scripts.join),
        ("part", &scripts.part),
        ("tell", &scripts.tell),
        ("topic", &scripts.topic),
        ("who", &scripts.who),
        ("rooms", &scripts.rooms),
        ("history", &scripts.history),
    ];
    named
        .iter()
        .find(|(_, script)| script.get_hash() == hash)
        .map_or("another", |(name, _)| name)
}

/// An appending script's answer: the stream entry `0-<seq>`.
fn entry(seq: u64) -> Reply {
    Reply(Value::BulkString(format!("0-{seq}").into_bytes()))
}

/// A reading script's answer: the stream's last entry, then what it read.
fn read(last: u64, values: &[&str]) -> Reply {
    let mut all = vec![Value::BulkString(format!("0-{last}").into_bytes())];
    all.extend(
        values
            .iter()
            .map(|v| Value::BulkString(v.as_bytes().to_vec())),
    );
    Reply(Value::Array(all))
}

/// Lets a publish go on as the session does while it reads more frames.
fn in_flight(outcome: Outcome) -> JoinHandle<Done> {
    match outcome {
        Outcome::InFlight(pending) => tokio::spawn(pending),
        _ => panic!("expected a publish in flight"),
    }
}

/// Lets a request the session waits for go on.
fn waiting(outcome: Outcome) -> JoinHandle<Done> {
    match outcome {
        Outcome::Wait(pending) => tokio::spawn(pending),
        _ => panic!("expected a request to wait for"),
    }
}

/// What a request came back with.
async fn updated(request: JoinHandle<Done>) -> Result<Update, ErrorCode> {
    match request.await.expect("the request ran") {
        Done::Updated(updated) => updated.map_err(|refusal| refusal.code),
        _ => panic!("expected an update"),
    }
}

fn refused(outcome: Outcome) -> Option<ErrorCode> {
    match outcome {
        Outcome::Refused(refusal) => Some(refusal.code),
        _ => None,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// Publishing

#[tokio::test]
async fn msg_is_the_say_script_on_the_lobby_history_and_returns_its_receipt() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = in_flight(hub.publish(&mut alice, None, "hi  there ".to_owned()));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "say");
    assert_eq!(
        call.keys,
        [scripts::EPOCH, scripts::STREAM, scripts::LOBBY_HISTORY]
    );
    assert_eq!(call.args[0], "MSG alice hi  there ");
    assert!(
        call.args[1].ends_with(" alice hi  there "),
        "{}",
        call.args[1]
    );
    assert_eq!(
        call.args[2..],
        strings(&[&STREAM_MAXLEN.to_string(), "100", "", "67108864"]),
        "maxlen, --history, no room, --history-memory"
    );
    answer.send(Ok(entry(42))).expect("waiting");
    assert!(matches!(
        updated(request).await,
        Ok(Update::Published(Receipt(42)))
    ));
}

#[tokio::test]
async fn say_is_the_say_script_on_the_rooms_history() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    enter_room(&hub, &mut alice, "#Rust");
    let request = in_flight(hub.publish(&mut alice, Some("#rust"), "hi".to_owned()));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "say");
    let history = scripts::room_history_key("#rust");
    assert_eq!(call.keys, [scripts::EPOCH, scripts::STREAM, &history]);
    assert_eq!(call.args[0], "SAY #Rust alice hi");
    assert_eq!(call.args[4], "#rust", "the room's key");
    answer.send(Ok(entry(43))).expect("waiting");
    assert!(matches!(
        updated(request).await,
        Ok(Update::Published(Receipt(43)))
    ));
}

#[tokio::test]
async fn say_in_a_room_the_user_is_not_in_is_refused_before_any_call() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let outcome = hub.publish(&mut alice, Some("#rust"), "hi".to_owned());
    assert_eq!(refused(outcome), Some(ErrorCode::NotInRoom));
    assert!(ends.no_call());
}

#[tokio::test]
async fn a_ping_after_a_publish_is_answered_once_the_publish_came_back() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    alice.apply(Update::Published(Receipt(42)));
    let request = waiting(hub.sync(&mut alice, Some("t".to_owned())));
    let Some((at, Waiter::Wake(delivered))) = ends.syncs.recv().await else {
        panic!("expected a wait for the publish");
    };
    assert_eq!(at, Receipt(42));
    assert_eq!(text(&alice), "", "no PONG before the publish is back");
    delivered.send(()).expect("waiting");
    assert!(matches!(updated(request).await, Ok(Update::Synced)));
    assert_eq!(text(&alice), "PONG t\n");
}

#[tokio::test]
async fn a_ping_with_nothing_published_is_answered_at_once() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    assert!(matches!(hub.sync(&mut alice, None), Outcome::Done));
    assert_eq!(text(&alice), "PONG\n");
    assert!(ends.syncs.try_recv().is_err());
}

// TELL, PART, TOPIC

#[tokio::test]
async fn tell_to_nobody_is_no_such_user() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = in_flight(hub.tell(&mut alice, "Nobody", "hello?".to_owned()));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "tell");
    assert_eq!(call.keys, [scripts::EPOCH, scripts::USERS, scripts::STREAM]);
    assert_eq!(
        call.args,
        strings(&["alice", "nobody", "hello?", &STREAM_MAXLEN.to_string()])
    );
    answer.send(Ok(Reply(Value::Int(0)))).expect("waiting");
    assert!(matches!(updated(request).await, Err(ErrorCode::NoSuchUser)));
}

#[tokio::test]
async fn part_is_the_part_script_and_leaves_the_room_once_answered() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    enter_room(&hub, &mut alice, "#Rust");
    let request = waiting(hub.part(&mut alice, "#rust", Some("later".to_owned())));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "part");
    assert_eq!(call.keys, [scripts::EPOCH, scripts::ROOMS, scripts::STREAM]);
    assert_eq!(
        call.args,
        strings(&[
            "#rust",
            "alice",
            "LEAVE #Rust alice later",
            &STREAM_MAXLEN.to_string()
        ])
    );
    answer.send(Ok(entry(9))).expect("waiting");
    let update = updated(request).await.expect("parted");
    assert!(matches!(&update, Update::Parted(key, Receipt(9)) if key == "#rust"));
    alice.apply(update);
    let outcome = hub.publish(&mut alice, Some("#rust"), "still here?".to_owned());
    assert_eq!(refused(outcome), Some(ErrorCode::NotInRoom));
    assert!(ends.no_call());
}

#[tokio::test]
async fn a_topic_set_is_the_topic_script_in_flight() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    enter_room(&hub, &mut alice, "#Rust");
    let outcome = hub.topic(&mut alice, "#rust", Some("async book club".to_owned()));
    let request = in_flight(outcome);
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "topic");
    assert_eq!(call.keys, [scripts::EPOCH, scripts::ROOMS, scripts::STREAM]);
    assert_eq!(
        call.args,
        strings(&[
            "#rust",
            "alice async book club",
            "TOPIC #Rust alice async book club",
            &STREAM_MAXLEN.to_string()
        ])
    );
    answer.send(Ok(entry(5))).expect("waiting");
    assert!(matches!(
        updated(request).await,
        Ok(Update::Published(Receipt(5)))
    ));
}

// JOIN

#[tokio::test]
async fn join_is_asked_of_the_node_and_joins_once_answered() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = waiting(hub.join(&mut alice, "#Rust".to_owned()));
    let entering = ends.joins.recv().await.expect("a join for the node");
    assert_eq!(entering.room, "#Rust");
    assert_eq!(&*entering.member.name, "alice");
    let shared = hub.rooms().admit("#Rust", "alice", entering.member.clone());
    let _ = entering.reply.send(Ok(shared));
    let update = updated(request).await.expect("joined");
    assert!(matches!(&update, Update::Joined(key, _) if key == "#rust"));
    alice.apply(update);
    assert_eq!(
        refused(hub.join(&mut alice, "#RUST".to_owned())),
        Some(ErrorCode::AlreadyInRoom)
    );
    assert!(ends.joins.try_recv().is_err(), "refused before the bus");
}

#[tokio::test]
async fn a_join_beyond_the_rooms_per_user_is_refused_before_the_bus() {
    let (hub, mut ends) = cluster_hub(Limits {
        max_rooms_per_user: 1,
        ..LIMITS
    });
    let mut alice = user(&hub, "alice");
    enter_room(&hub, &mut alice, "#a");
    assert_eq!(
        refused(hub.join(&mut alice, "#b".to_owned())),
        Some(ErrorCode::TooManyRooms)
    );
    assert!(ends.joins.try_recv().is_err());
}

// Read from Redis, placed among the stream's frames

#[tokio::test]
async fn who_of_a_room_is_read_from_redis_and_placed_after_the_entry_it_saw() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = waiting(hub.who(&mut alice, Some("#rust")));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "who");
    assert_eq!(call.keys, [scripts::EPOCH, scripts::ROOMS]);
    assert_eq!(call.args, ["#rust"]);
    let members = read(7, &["#Rust", "bob", "Bob", "alice", "alice"]);
    answer.send(Ok(members)).expect("waiting");
    assert_eq!(ends.place().await, Receipt(7));
    assert!(matches!(updated(request).await, Ok(Update::Nothing)));
    assert_eq!(text(&alice), "NAMES #Rust alice Bob\n");
}

#[tokio::test]
async fn who_of_a_room_that_does_not_exist_is_an_empty_names_as_asked() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = waiting(hub.who(&mut alice, Some("#Nowhere")));
    let (call, answer) = ends.call().await;
    assert_eq!(call.args, ["#nowhere"]);
    answer.send(Ok(read(7, &[""]))).expect("waiting");
    ends.place().await;
    assert!(updated(request).await.is_ok());
    assert_eq!(text(&alice), "NAMES #Nowhere\n");
}

#[tokio::test]
async fn rooms_are_read_from_redis_sorted_like_names() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = waiting(hub.list_rooms(&mut alice));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "rooms");
    assert_eq!(call.keys, [scripts::EPOCH, scripts::ROOMS]);
    assert!(call.args.is_empty());
    let rooms = read(3, &["b", "#B", "2", "a", "#a", "1"]);
    answer.send(Ok(rooms)).expect("waiting");
    assert_eq!(ends.place().await, Receipt(3));
    assert!(updated(request).await.is_ok());
    assert_eq!(text(&alice), "ROOMS #a 1 #B 2\n");
}

#[tokio::test]
async fn history_of_the_lobby_is_read_from_its_list() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = waiting(hub.history(&mut alice, None, 2));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "history");
    assert_eq!(call.keys, [scripts::EPOCH, scripts::LOBBY_HISTORY]);
    assert_eq!(call.args, ["2"]);
    let said = read(
        4,
        &[
            "2026-11-29T12:00:00.123Z bob anyone here?",
            "2026-11-29T12:00:03.456Z alice hi  both",
        ],
    );
    answer.send(Ok(said)).expect("waiting");
    assert_eq!(ends.place().await, Receipt(4));
    assert!(updated(request).await.is_ok());
    assert_eq!(
        text(&alice),
        "HISTORY 2\nHIST 2026-11-29T12:00:00.123Z bob anyone here?\n\
         HIST 2026-11-29T12:00:03.456Z alice hi  both\n"
    );
}

#[tokio::test]
async fn history_of_a_room_is_read_from_its_list_up_to_what_is_kept() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    enter_room(&hub, &mut alice, "#Rust");
    let request = waiting(hub.history(&mut alice, Some("#rust"), 1000));
    let (call, answer) = ends.call().await;
    assert_eq!(script(&call), "history");
    let history = scripts::room_history_key("#rust");
    assert_eq!(call.keys, [scripts::EPOCH, &history]);
    assert_eq!(call.args, ["100"]);
    let said = read(6, &["2026-11-29T12:00:00.123Z bob hi"]);
    answer.send(Ok(said)).expect("waiting");
    ends.place().await;
    assert!(updated(request).await.is_ok());
    assert_eq!(
        text(&alice),
        "HISTORY #Rust 1\nHIST #Rust 2026-11-29T12:00:00.123Z bob hi\n"
    );
}

#[tokio::test]
async fn history_of_a_room_the_user_is_not_in_is_refused_before_any_call() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let outcome = hub.history(&mut alice, Some("#rust"), 50);
    assert_eq!(refused(outcome), Some(ErrorCode::NotInRoom));
    assert!(ends.no_call());
}

#[tokio::test]
async fn a_server_that_keeps_no_history_answers_without_a_call() {
    let (hub, mut ends) = cluster_hub(Limits {
        history: 0,
        ..LIMITS
    });
    let mut alice = user(&hub, "alice");
    assert!(matches!(hub.history(&mut alice, None, 50), Outcome::Done));
    assert_eq!(text(&alice), "HISTORY 0\n");
    assert!(ends.no_call());
}

/// History lives in Redis, bounded there: a node's lobby keeps none of
/// its own, whatever it is given.
#[tokio::test]
async fn a_node_keeps_no_history_of_its_own() {
    let (hub, _ends) = cluster_hub(LIMITS);
    let mut lobby = lock(hub.lobby());
    lobby.record(&"alice".into(), "hi");
    assert_eq!(lobby.history_bytes(), 0);
    assert_eq!(hub.rooms().memory().used(), 0);
}

// The bus refusing

#[tokio::test]
async fn a_call_the_driver_refuses_is_unavailable() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = in_flight(hub.publish(&mut alice, None, "hi".to_owned()));
    let (_, answer) = ends.call().await;
    answer.send(Err(ErrorCode::Unavailable)).expect("waiting");
    assert!(matches!(
        updated(request).await,
        Err(ErrorCode::Unavailable)
    ));
}

#[tokio::test]
async fn a_call_the_driver_drops_unanswered_is_unavailable() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = waiting(hub.list_rooms(&mut alice));
    drop(ends.call().await);
    assert!(matches!(
        updated(request).await,
        Err(ErrorCode::Unavailable)
    ));
    assert_eq!(text(&alice), "", "nothing placed");
}

#[tokio::test]
async fn a_read_the_driver_refuses_places_nothing() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = waiting(hub.who(&mut alice, Some("#rust")));
    let (_, answer) = ends.call().await;
    answer.send(Err(ErrorCode::Unavailable)).expect("waiting");
    assert!(matches!(
        updated(request).await,
        Err(ErrorCode::Unavailable)
    ));
    assert!(ends.syncs.try_recv().is_err(), "nothing to place");
    assert_eq!(text(&alice), "");
}

#[tokio::test]
async fn a_garbled_answer_is_unavailable() {
    let (hub, mut ends) = cluster_hub(LIMITS);
    let mut alice = user(&hub, "alice");
    let request = in_flight(hub.publish(&mut alice, None, "hi".to_owned()));
    let (_, answer) = ends.call().await;
    answer.send(Ok(Reply(Value::Nil))).expect("waiting");
    assert!(matches!(
        updated(request).await,
        Err(ErrorCode::Unavailable)
    ));
}
