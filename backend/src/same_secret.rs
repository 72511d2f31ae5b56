//! The one comparison of a secret a client presents (a CSRF token, a peer secret) with the one
//! the server holds: no early exit on the first differing byte, so the time an answer takes
//! does not tell an attacker how much of a guess was right.

/// Whether `presented` equals `held`. Only the length may be learned from the timing.
pub(crate) fn same_secret(presented: &[u8], held: &[u8]) -> bool {
    presented.len() == held.len()
        && std::hint::black_box(
            presented
                .iter()
                .zip(held)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y)),
        ) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_are_the_same_secret() {
        assert!(same_secret(b"abc123", b"abc123"));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"abc124", b"abc123"));
        assert!(!same_secret(b"Abc123", b"abc123"));
        assert!(!same_secret(b"abc12", b"abc123"));
        assert!(!same_secret(b"abc1234", b"abc123"));
    }
}
