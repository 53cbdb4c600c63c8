//! Property tests: formatting and parsing agree for every valid frame, and no
//! input, however split, makes the decoder panic or change its answer.

use std::num::NonZeroU64;

use bytes::BytesMut;
use chat_protocol::{
    ClientCodec, ClientFrame, ErrorCode, LineCodec, ServerCodec, ServerFrame, ServerFrameRef,
    Timestamp, MAX_LINE,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
}

fn room() -> impl Strategy<Value = String> {
    "#[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
}

fn time() -> impl Strategy<Value = Timestamp> {
    (0..=Timestamp::MAX.unix_millis()).prop_map(|ms| Timestamp::from_unix_millis(ms).unwrap())
}

/// A code the crate does not know, in the form codes have.
fn unknown_code() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}".prop_filter("a known code", |c| c.parse::<ErrorCode>().is_err())
}

/// Printable text with tabs and non-ASCII, not blank.
fn text() -> impl Strategy<Value = String> {
    "[ \ta-zA-Z0-9é✓漢😀.,!?]{0,40}[a-z✓]".prop_map(|s| s)
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        name().prop_map(ClientFrame::Name),
        text().prop_map(ClientFrame::Msg),
        proptest::option::of(text()).prop_map(ClientFrame::Leave),
        Just(ClientFrame::Who),
        proptest::option::of("[!-~][ -~]{0,20}").prop_map(ClientFrame::Ping),
        room().prop_map(ClientFrame::Join),
        (room(), proptest::option::of(text()))
            .prop_map(|(room, text)| ClientFrame::Part { room, text }),
        (room(), text()).prop_map(|(room, text)| ClientFrame::Say { room, text }),
        (name(), text()).prop_map(|(to, text)| ClientFrame::Tell { to, text }),
        (room(), proptest::option::of(text()))
            .prop_map(|(room, text)| ClientFrame::Topic { room, text }),
        room().prop_map(ClientFrame::RoomWho),
        Just(ClientFrame::Rooms),
        (
            proptest::option::of(room()),
            proptest::option::of(any::<NonZeroU64>())
        )
            .prop_map(|(room, count)| ClientFrame::History { room, count }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        name().prop_map(ServerFrame::Welcome),
        proptest::collection::vec(name(), 0..20).prop_map(ServerFrame::Names),
        name().prop_map(ServerFrame::Join),
        (name(), "[ -~]{0,40}").prop_map(|(from, text)| ServerFrame::Msg { from, text }),
        (name(), proptest::option::of(text()))
            .prop_map(|(name, text)| ServerFrame::Leave { name, text }),
        any::<u64>().prop_map(ServerFrame::Dropped),
        proptest::option::of("[!-~][ -~]{0,20}").prop_map(ServerFrame::Pong),
        Just(ServerFrame::Bye),
        (
            proptest::sample::select(ErrorCode::ALL.to_vec()),
            proptest::option::of("[!-~][ -~]{0,30}")
        )
            .prop_map(|(code, detail)| ServerFrame::Error { code, detail }),
        (unknown_code(), proptest::option::of("[!-~][ -~]{0,30}"))
            .prop_map(|(code, detail)| ServerFrame::UnknownError { code, detail }),
        (room(), proptest::collection::vec(name(), 0..20))
            .prop_map(|(room, names)| ServerFrame::RoomNames { room, names }),
        (room(), name()).prop_map(|(room, name)| ServerFrame::RoomJoin { room, name }),
        (room(), name(), proptest::option::of(text()))
            .prop_map(|(room, name, text)| ServerFrame::RoomLeave { room, name, text }),
        (room(), name(), "[ -~]{0,40}").prop_map(|(room, from, text)| ServerFrame::Say {
            room,
            from,
            text
        }),
        (name(), name(), "[ -~]{0,40}").prop_map(|(from, to, text)| ServerFrame::Tell {
            from,
            to,
            text
        }),
        (room(), name(), text()).prop_map(|(room, setter, text)| ServerFrame::Topic {
            room,
            setter,
            text
        }),
        room().prop_map(ServerFrame::NoTopic),
        proptest::collection::vec((room(), any::<u64>()), 0..10).prop_map(ServerFrame::Rooms),
        (proptest::option::of(room()), any::<u64>())
            .prop_map(|(room, count)| ServerFrame::History { room, count }),
        (proptest::option::of(room()), time(), name(), "[ -~]{0,40}").prop_map(
            |(room, time, from, text)| ServerFrame::Hist {
                room,
                time,
                from,
                text
            }
        ),
    ]
}

fn decode_in_pieces<D: Decoder>(codec: &mut D, input: &[u8], cuts: &[usize]) -> Vec<D::Item>
where
    D::Error: std::fmt::Debug,
{
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        while let Some(item) = codec
            .decode(&mut buf)
            .expect("decoding never fails on bytes")
        {
            out.push(item);
        }
    }
    while let Some(item) = codec
        .decode_eof(&mut buf)
        .expect("decoding never fails on bytes")
    {
        out.push(item);
    }
    out
}

proptest! {
    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        prop_assert_eq!(ClientFrame::parse(&frame.to_string()), Ok(frame));
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        prop_assert_eq!(ServerFrame::parse(&frame.to_string()), Ok(frame));
    }

    #[test]
    fn server_frames_are_seen_alike_borrowed_and_owned(frame in server_frame()) {
        let line = frame.to_string();
        let view = ServerFrameRef::parse(&line);
        prop_assert_eq!(view.map(ServerFrameRef::into_owned), Ok(frame.clone()));
        let bytes = format!("{line}\n");
        let view = ServerFrameRef::from_bytes(bytes.as_bytes());
        prop_assert_eq!(view.map(ServerFrameRef::into_owned), Ok(frame));
    }

    #[test]
    fn timestamps_round_trip(time in time()) {
        let text = time.to_string();
        prop_assert_eq!(text.len(), "2026-11-29T12:00:00.123Z".len());
        prop_assert_eq!(text.parse::<Timestamp>(), Ok(time));
    }

    #[test]
    fn parsing_any_text_never_panics(line in "\\PC*|[\\x00-\\x7f]*") {
        let _ = ClientFrame::parse(&line);
        let _ = ServerFrame::parse(&line);
        let _ = line.parse::<Timestamp>();
    }

    /// Lines made of the protocol's own words, so that parsing reaches every
    /// branch rather than stopping at an unknown verb.
    #[test]
    fn protocol_like_lines_never_panic_and_reparse_to_themselves(
        words in proptest::collection::vec(
            prop_oneof![
                Just("NAMES"), Just("JOIN"), Just("LEAVE"), Just("SAY"), Just("TELL"),
                Just("TOPIC"), Just("ROOMS"), Just("HISTORY"), Just("HIST"), Just("ERROR"),
                Just("WHO"), Just("PART"), Just("MSG"), Just("DROPPED"), Just("#"), Just("#r"),
                Just("bob"), Just("0"), Just("7"), Just("-1"), Just(""), Just(" "),
                Just("2026-11-29T12:00:00.123Z"), Just("bad-room"), Just("\x07"),
            ],
            0..8,
        ),
    ) {
        let line = words.join(" ");
        if let Ok(frame) = ClientFrame::parse(&line) {
            prop_assert_eq!(ClientFrame::parse(&frame.to_string()), Ok(frame));
        }
        if let Ok(frame) = ServerFrame::parse(&line) {
            prop_assert_eq!(ServerFrame::parse(&frame.to_string()), Ok(frame));
        }
    }

    #[test]
    fn frames_decode_the_same_however_the_stream_is_split(
        sent in proptest::collection::vec(client_frame(), 0..12),
        received in proptest::collection::vec(server_frame(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let stream: String = sent.iter().map(|f| format!("{f}\r\n")).collect();
        let decoded = decode_in_pieces(&mut ServerCodec::new(MAX_LINE), stream.as_bytes(), &cuts);
        let expected: Vec<_> = sent.into_iter().map(Ok).collect();
        prop_assert_eq!(decoded, expected);
        let stream: String = received.iter().map(|f| format!("{f}\n")).collect();
        let decoded = decode_in_pieces(&mut ClientCodec::new(), stream.as_bytes(), &cuts);
        let decoded: Vec<_> = decoded.into_iter().map(|f| f.ok()).collect();
        let expected: Vec<_> = received.into_iter().map(Some).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn decoding_is_the_same_however_the_bytes_are_split(
        input in proptest::collection::vec(
            prop_oneof![
                Just(b'\n'), Just(b'\r'), Just(b'M'), Just(b' '), Just(b'#'), any::<u8>()
            ],
            0..600,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = decode_in_pieces(&mut ServerCodec::new(64), &input, &[]);
        let split = decode_in_pieces(&mut ServerCodec::new(64), &input, &cuts);
        prop_assert_eq!(whole, split);
        let whole = decode_in_pieces(&mut LineCodec::new(16), &input, &[]);
        let one_byte_at_a_time: Vec<usize> = (0..input.len()).collect();
        let split = decode_in_pieces(&mut LineCodec::new(16), &input, &one_byte_at_a_time);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn buffered_bytes_stay_within_the_limit(
        input in proptest::collection::vec(any::<u8>(), 0..5000),
    ) {
        let mut codec = LineCodec::new(32);
        let mut buf = BytesMut::new();
        for chunk in input.chunks(7) {
            buf.extend_from_slice(chunk);
            while codec.decode(&mut buf).expect("decoding never fails").is_some() {}
            prop_assert!(buf.len() <= 34, "{} bytes buffered", buf.len());
        }
    }
}
