//! Property tests: formatting and parsing agree for every valid frame, and no
//! input, however split, makes the decoder panic or change its answer.

use bytes::BytesMut;
use chat_protocol::{ClientFrame, ErrorCode, LineCodec, ServerCodec, ServerFrame};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
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
    fn parsing_any_text_never_panics(line in "\\PC*|[\\x00-\\x7f]*") {
        let _ = ClientFrame::parse(&line);
        let _ = ServerFrame::parse(&line);
    }

    #[test]
    fn decoding_is_the_same_however_the_bytes_are_split(
        input in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'M'), Just(b' '), any::<u8>()],
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
