//! The raw dialect of servers without login (the gopl seed): the server
//! greets with `You are <addr>`, announces `<addr> has arrived` and
//! `<addr> has left`, and broadcasts each line as `<addr>: <line>`.

use crate::dialect::Event;

pub fn parse(line: &[u8]) -> Event<'_> {
    if line.starts_with(b"You are ") {
        return Event::Welcome;
    }
    // An address has colons but never a colon followed by a space.
    if let Some(at) = memchr::memmem::find(line, b": ") {
        return Event::Text(&line[at + 2..]);
    }
    match line.strip_suffix(b" has arrived") {
        Some(who) => Event::Join(who),
        None => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse(b"You are 127.0.0.1:4000"), Event::Welcome);
        assert_eq!(
            parse(b"127.0.0.1:4000 has arrived"),
            Event::Join(b"127.0.0.1:4000")
        );
        assert_eq!(parse(b"127.0.0.1:4000: m 1 2 3"), Event::Text(b"m 1 2 3"));
        assert_eq!(parse(b"127.0.0.1:4000 has left"), Event::Other);
    }
}
