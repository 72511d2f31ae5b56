//! Room names: the one rule for what a client may call a room.

/// Longest room name, in bytes.
pub const ROOM_NAME_BYTES_MAX: usize = 64;

/// 1 to 64 bytes of `a-z0-9_.-`: no case folding or Unicode look-alikes to confuse two rooms.
pub fn valid_room_name(name: &str) -> bool {
    (1..=ROOM_NAME_BYTES_MAX).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_room_name("lobby"));
        assert!(valid_room_name("a.b-c_9"));
        assert!(valid_room_name(&"x".repeat(64)));
        assert!(!valid_room_name(&"x".repeat(65)));
        assert!(!valid_room_name(""));
        assert!(!valid_room_name("Lobby"));
        assert!(!valid_room_name("two words"));
        assert!(!valid_room_name("café"));
        assert!(!valid_room_name("a/b"));
    }
}
