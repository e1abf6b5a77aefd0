//! Text helpers shared across the crate.

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary (what
/// `str::floor_char_boundary` gives, stable only since Rust 1.91, above this crate's MSRV).
pub(crate) fn prefix_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_never_splits_a_character() {
        assert_eq!(prefix_at_char("清城区", 4), "清");
        assert_eq!(prefix_at_char("清城区", 6), "清城");
        assert_eq!(prefix_at_char("abc", 10), "abc");
        assert_eq!(prefix_at_char("", 3), "");
    }
}
